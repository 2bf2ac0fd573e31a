"""The disocclusion fill benchmark's pieces and its refusal of folders without ground truth."""
import numpy as np

from backend.tools import fill_bench


def test_holes_touching_the_frame_are_edge_holes():
    valid = np.ones((20, 30), bool)
    valid[:, :3] = False  # past the left edge
    valid[8:12, 10:14] = False  # behind something, inside the frame
    edge, inner = fill_bench.split_holes(valid)
    assert edge.sum() == 60 and inner.sum() == 16 and not (edge & inner).any()
    assert ((edge | inner) == ~valid).all()


def test_a_folder_without_ground_truth_is_refused_with_one_line(tmp_path, capsys):
    (tmp_path / "photo_only").mkdir()
    assert fill_bench.main(["--scenes", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no synthetic ground-truth scene" in err[0] and "--synthetic" in err[0]


def test_generating_scenes_refuses_bad_numbers_and_a_missing_blender_with_one_line(tmp_path, capsys, monkeypatch):
    assert fill_bench.main(["--scenes", str(tmp_path), "--generate", "-1"]) == 2
    assert "--generate needs a positive number" in capsys.readouterr().err
    monkeypatch.setenv("LOOPSCAPE_BPY_PYTHON", str(tmp_path / "no-such-python"))
    assert fill_bench.main(["--scenes", str(tmp_path), "--generate", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: could not start Blender's Python") and "LOOPSCAPE_BPY_PYTHON" in err[-1]
    assert not (tmp_path / "rocks_000" / "scene.json").exists()
