"""End to end through the real CLI: a tiny static job, its outputs, and every kind of bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.tools.demo_scene import make_demo_scene
from independent_render import read_ply, render

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), LOOPSCAPE_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def events_of(proc: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tiny_photo(tmp_path_factory) -> Path:
    scene = make_demo_scene(128, 96, seed=3)
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    cv2.imwrite(str(path), (scene.rgb[..., ::-1] * 255).astype(np.uint8))
    return path


@pytest.fixture(scope="module")
def static_run(tiny_photo, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("out") / "static"
    proc = run_cli("run", "--image", str(tiny_photo), "--max-side", "64", "--quality", "preview", "--frames", "3",
                   "--path", "side", "--depth", "prior", "--device", "cpu", "--out", str(out))
    return out, proc


def test_static_job_outputs(static_run):
    out, proc = static_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    ev = events_of(proc)
    assert ev[-1]["event"] == "done"
    stages = {e["stage"] for e in ev if e["event"] == "progress"}
    assert {"load", "depth", "lift", "multiview", "gaussians3d", "render", "export"} <= stages
    result = json.loads((out / "result.json").read_text())
    assert result["camera"]["width"] == 64 and result["camera"]["height"] == 48
    assert (out / result["input_image"]).is_file() and (out / result["video"]).stat().st_size > 0
    assert len(result["ply_frames"]) == 1
    assert set(result["timings"]) >= {"depth", "gaussians3d", "render"}
    assert len(result["metrics"]["train_psnr_per_view"]) >= 2
    assert np.isfinite(result["metrics"]["train_psnr_synth_mean"])
    assert not list(out.glob(".staging-*"))


def test_ply_renders_like_the_photo_in_an_independent_renderer(static_run):
    out, proc = static_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    ply = read_ply(out / result["ply_frames"][0])
    cam = result["camera"]
    img = render(ply, np.array(cam["K"]), np.eye(4), cam["width"], cam["height"])
    ref = cv2.imread(str(out / "input.png"))[..., ::-1] / 255.0
    psnr = 10 * np.log10(1.0 / np.mean((np.clip(img, 0, 1) - ref) ** 2))
    assert psnr >= 30.0, psnr


def test_rerun_reuses_cached_stages(static_run, tiny_photo):
    out, proc = static_run
    assert proc.returncode == 0
    proc2 = run_cli("run", "--image", str(tiny_photo), "--max-side", "64", "--quality", "preview", "--frames", "3",
                    "--path", "zoom-in", "--depth", "prior", "--device", "cpu", "--out", str(out))
    assert proc2.returncode == 0, proc2.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert {"depth", "multiview", "gaussians3d"} <= set(result["cache_hits"])


def _assert_clean_failure(proc, out: Path, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-1500:])
    ev = events_of(proc)
    assert ev and ev[-1]["event"] == "error"
    msg = f"{ev[-1]['message']} {ev[-1].get('hint', '')}"  # what is wrong, then what to do
    for n in needles:
        assert n.lower() in msg.lower(), msg
    assert "Traceback" not in proc.stderr
    assert not (out / "result.json").exists()
    assert not list(out.glob(".staging-*")) if out.exists() else True


def test_missing_image(tmp_path):
    out = tmp_path / "o"
    _assert_clean_failure(run_cli("run", "--image", str(tmp_path / "nope.png"), "--out", str(out)), out, "not found")


def test_corrupt_image(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    out = tmp_path / "o"
    _assert_clean_failure(run_cli("run", "--image", str(bad), "--out", str(out)), out, "bad.png")


def test_unreadable_depth_file(tiny_photo, tmp_path):
    depth = tmp_path / "depth.npy"
    depth.write_bytes(b"not a numpy file")
    out = tmp_path / "o"
    _assert_clean_failure(run_cli("run", "--image", str(tiny_photo), "--depth", str(depth), "--max-side", "64",
                                  "--out", str(out)), out, "depth")


@pytest.mark.parametrize("job, needle", [
    ({"image": 5}, "image"),
    ({"image": "x.png", "frames": "sixty"}, "frames"),
    ({"image": "x.png", "max_side": 0}, "max_side"),
    ({"image": "x.png", "colour": "blue"}, "unknown job key"),
    ({"image": "x.png", "hints": [{"start": [1, 2]}]}, "hints[0]"),
    ({"image": "x.png", "quality": "ultra"}, "quality"),
    (["not", "an", "object"], "json object"),
])
def test_bad_job_json(tmp_path, job, needle):
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    out = tmp_path / "o"
    _assert_clean_failure(run_cli("run", str(path), "--out", str(out)), out, needle)


def test_max_side_not_positive(tiny_photo, tmp_path):
    out = tmp_path / "o"
    _assert_clean_failure(run_cli("run", "--image", str(tiny_photo), "--max-side", "-3", "--out", str(out)), out,
                          "max_side")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; checked through a file in the way instead")
def test_unwritable_out_permissions(tiny_photo, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    _assert_clean_failure(run_cli("run", "--image", str(tiny_photo), "--out", str(ro / "x")), ro / "x", "output folder")


def test_unwritable_out(tiny_photo, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should go")
    out = blocker / "sub"
    _assert_clean_failure(run_cli("run", "--image", str(tiny_photo), "--max-side", "64", "--out", str(out)), out,
                          "output folder")


def test_cuda_without_cuda(tiny_photo, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "o"
    _assert_clean_failure(run_cli("run", "--image", str(tiny_photo), "--device", "cuda", "--max-side", "64",
                                  "--out", str(out)), out, "cuda")


def test_failed_rerun_keeps_previous_result(static_run, tmp_path):
    out, proc = static_run
    assert proc.returncode == 0
    before = (out / "result.json").read_text()
    bad = run_cli("run", "--image", str(tmp_path / "missing.png"), "--out", str(out))
    assert bad.returncode == 2
    assert (out / "result.json").read_text() == before


def test_help_explains_flags():
    proc = run_cli("run", "--help")
    assert proc.returncode == 0
    for flag in ("--image", "--mask", "--labelme", "--flow", "--depth", "--path", "--frames", "--fps", "--max-side",
                 "--quality", "--device", "--seed", "--demo"):
        assert flag in proc.stdout


def test_info_reports_versions():
    proc = run_cli("info")
    info = json.loads(proc.stdout)
    assert info["torch"] and "gsplat" in info and "cuda" in info


@pytest.fixture(scope="module")
def motion_run(tiny_photo, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("out") / "motion"
    mask = np.zeros((96, 128), np.uint8)
    mask[56:, :] = 255  # the lower part (the lake) moves
    mask_path = out.parent / "mask.png"
    cv2.imwrite(str(mask_path), mask)
    proc = run_cli("run", "--image", str(tiny_photo), "--mask", str(mask_path), "--hint", "10,80,110,80",
                   "--hint", "20,66,120,70", "--max-side", "64", "--quality", "preview", "--frames", "8",
                   "--depth", "prior", "--device", "cpu", "--out", str(out))
    return out, proc


def test_motion_loop_closes_in_an_independent_renderer(motion_run):
    out, proc = motion_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    # The compact layout: frame 0 alone as a full PLY; static once, the moving layers per frame.
    assert result["layout"] == "loop-layers-1" and result["ply_frames"] == ["ply/frame_0000.ply"]
    assert result["usd"] and (out / result["usd"]).is_file()
    for key in ("ply_static", "ply_forward", "ply_backward"):
        assert (out / result[key]).is_file()
    cam = result["camera"]
    K = np.array(cam["K"])

    def view(rel):
        return np.clip(render(read_ply(out / rel), K, np.eye(4), cam["width"], cam["height"]), 0, 1)

    first, end = view(result["ply_frames"][0]), view(result["ply_loop_end"])
    psnr = lambda a, b: 10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-12))
    assert psnr(first, end) >= 40.0
    # The moving layers really move in between, and frame 0's file holds every Gaussian once.
    from contract.splats import read_layer_ply

    _, states = read_layer_ply(out / result["ply_forward"])
    assert states["position"].shape[0] == 8
    assert np.abs(states["position"][4] - states["position"][0]).max() > 1e-3, "the loop really moves in between"
    n_static = len(read_ply(out / result["ply_static"])["xyz"])
    assert len(read_ply(out / result["ply_frames"][0])["xyz"]) == n_static + states["position"].shape[1]


def test_motion_metrics_reported(motion_run):
    out, proc = motion_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((out / "result.json").read_text())["metrics"]
    assert m["consistency_epe_after"] <= m["consistency_epe_before"]
    iv = m["input_view"]
    assert iv["stillness"] < 1 / 255
    assert iv["motion_cos"] > 0.5


def test_cancel_leaves_nothing_that_looks_complete(tiny_photo, tmp_path):
    import signal
    import time

    out = tmp_path / "cancelled"
    env = dict(os.environ, PYTHONPATH=str(REPO), LOOPSCAPE_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "backend", "run", "--image", str(tiny_photo), "--max-side", "64",
                             "--quality", "draft", "--depth", "prior", "--out", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    for line in proc.stdout:  # wait until training is under way, then cancel as Blender does
        if '"stage": "gaussians3d"' in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-1500:]
    last = json.loads(rest.strip().splitlines()[-1])
    assert last["event"] == "error" and last["kind"] == "cancelled"
    assert not (out / "result.json").exists()
    assert not list(out.glob(".staging-*"))
    assert not (out / "ply").exists() and not (out / "video.mp4").exists()


def test_outputs_are_readable_by_others(static_run):
    out, proc = static_run
    assert proc.returncode == 0
    umask = os.umask(0)
    os.umask(umask)
    for rel in ("result.json", "input.png", "video.mp4", "ply/frame_0000.ply"):
        mode = (out / rel).stat().st_mode & 0o777
        assert mode == 0o666 & ~umask, f"{rel} has mode {oct(mode)}, not the umask's {oct(0o666 & ~umask)}"
