"""Run/cancel/crash paths of the Blender runner, job writing and refusals, with fake backends.

The fake "interpreter" is a shell script that runs tests/blender/fake_backend.py; it behaves like
``python -m backend run job.json --out DIR`` in one of several modes (ok, crash, error, hang).
"""
from __future__ import annotations

import json
import os
import stat
import time

import numpy as np
import pytest

from test_blender_support import (PY, fake_interpreter, have_bpy, render_reference, run_scenario, save_png,
                                  synthetic_frames, write_fake_result)

pytestmark = [pytest.mark.blender, pytest.mark.skipif(not have_bpy(), reason="bpy is not installed in .venv")]
W, H, N = 64, 48, 3


def _labelme(path, w, h):
    doc = {"imageWidth": w * 2, "imageHeight": h * 2, "shapes": [
        {"label": "motion_0", "shape_type": "polygon", "points": [[0, h], [w, h], [w, 2 * h], [0, 2 * h]]},
        {"label": "hint_0", "shape_type": "line", "points": [[10, 80], [50, 80]]},
        {"label": "anchor_0", "shape_type": "point", "points": [[100, 20]]}]}
    path.write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("blender_runner")
    syn = synthetic_frames(W, H, N)
    fake_dir = tmp / "fake"
    fake_dir.mkdir()
    write_fake_result(fake_dir / "result", syn)
    fake_py = fake_interpreter(fake_dir)
    broken_py = tmp / "broken_python"
    broken_py.write_text('#!/bin/sh\necho "ImportError: libtorch_cpu.so: cannot open shared object file" >&2\nexit 1\n')
    broken_py.chmod(broken_py.stat().st_mode | stat.S_IEXEC)
    save_png(tmp / "photo.png", render_reference(syn["frames"][0], syn["K"], np.eye(4), W, H))
    _labelme(tmp / "labelme.json", W, H)
    args = {"photo": str(tmp / "photo.png"), "labelme": str(tmp / "labelme.json"), "frames": N,
            "fake_py": str(fake_py), "broken_py": str(broken_py), "real_py": str(PY),
            "mode_file": str(fake_dir / "mode"), "job_seen": str(fake_dir / "job_seen.json")}
    t = time.time()
    out = run_scenario("run_backend", tmp, args)
    out["_seconds"] = time.time() - t
    out["_tmp"] = str(tmp)
    out["_fake_dir"] = str(fake_dir)
    return out


def test_run_is_refused_with_instructions(ran):
    assert "No photo" in ran["no_photo"]
    assert ran["setup"] == "FINISHED"
    assert "No motion mask" in ran["no_mask"]
    assert ran["mask_create"] == "FINISHED"
    assert "mask is empty" in ran["empty_mask"]
    assert "hero camera was deleted" in ran["no_hero"]


def test_labelme_import_sets_mask_hints_anchors_in_photo_pixels(ran):
    assert ran["mask_import"] == "FINISHED"
    # The labelme file was made at twice the photo's size: coordinates halve.
    assert ran["hints"] == [[[5.0, 40.0], [25.0, 40.0]]]
    assert ran["anchors"] == [[50.0, 10.0]]


def test_interpreter_problems_are_explained(ran):
    assert "does not exist" in ran["missing_py"] and "Preferences" in ran["missing_py"]
    assert ran["check_missing"].startswith("ERROR") and "does not exist" in ran["check_missing"]
    assert "libtorch_cpu.so" in ran["check_broken_report"]
    assert ran["check_real"] == "FINISHED"
    assert "torch 2." in ran["check_real_report"] and "CUDA" in ran["check_real_report"]


def test_job_file_carries_inputs_and_camera_path_in_backend_world(ran):
    job = ran["job"]
    import cv2

    mask = cv2.imread(job["mask"], cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (H, W)
    assert (mask[H // 2:, :W // 2] == 255).all() and (mask[: H // 2 - 1] == 0).all()
    assert job["hints"][0] == {"start": [5.0, 40.0], "end": [25.0, 40.0], "speed": None}
    assert job["hints"][1]["speed"] == 0.5 and job["anchors"] == [[50.0, 10.0], [50.0, 10.0]]
    assert job["speed"] == 1.5 and job["frames"] == N and job["device"] == "auto"
    assert job["snap_mask"] is True  # the edge snap is on unless the artist turns it off
    K = np.array(job["camera"]["K"])
    assert job["camera"]["width"] == W and job["camera"]["height"] == H
    assert np.allclose(K, synthetic_frames(W, H, 1)["K"], atol=1e-3), "hero K is the photo's field of view"
    frames = job["path"]["frames"]
    assert len(frames) == N and job["path"]["width"] == W
    # The side preset re-keyed after moving the hero must still be the backend's side path: R = I, t_x = .09 -> -.09
    for i, fr in enumerate(frames):
        w2c = np.array(fr["w2c"])
        want = np.eye(4)
        want[0, 3] = 0.09 - 0.18 * i / (N - 1)
        assert np.abs(w2c - want).max() < 1e-4, (i, w2c)
        assert np.allclose(fr["K"], K, atol=1e-3)


def test_successful_run_imports_the_result(ran):
    assert ran["ok"] == "FINISHED" and ran["stage_ok"] == "done"
    assert ran["after_ok"]["objects"] == ["Loopscape Result", "Loopscape Splats"]


@pytest.mark.parametrize("mode", ["crash", "error", "hang"])
def test_failure_leaves_scene_unchanged_and_names_the_log(ran, mode):
    assert ran[mode].startswith("ERROR"), ran[mode]
    assert ran["after_" + mode] == ran["after_ok"], "no half-imported object, nothing removed"
    log = ran["last_error_" + mode].split("Full log: ")[-1].strip()
    assert os.path.basename(log).startswith("backend-") and log.endswith(".log") and os.path.isfile(log)
    text = open(log).read()
    assert "plain text from a library" in text
    if mode == "crash":
        assert "fake segfault-like crash" in text and "exited with code 1" in ran["last_error_crash"]
    if mode == "error":
        assert "The mask is empty. Paint it." in ran["last_error_error"]
    if mode == "hang":
        assert ran["last_error_hang"].startswith("Cancelled")
        assert ran["hang_s"] < 12 and not ran["running_after"]


def test_cancel_terminates_the_whole_process_group(ran):
    pids = [int(p) for p in open(os.path.join(ran["_fake_dir"], "pids")).read().split()]
    deadline = time.time() + 5
    alive = pids
    while alive and time.time() < deadline:
        alive = [p for p in pids if _alive(p)]
        time.sleep(0.1)
    assert not alive, f"processes still running after cancel: {alive}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False
