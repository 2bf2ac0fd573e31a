"""Run/cancel/crash paths of the Blender runner, job writing and refusals, with fake backends.

The fake "interpreter" is a shell script that runs tests' fake backend; it behaves like
``python -m backend run job.json --out DIR`` in one of several modes (ok, crash, error, hang).
"""
from __future__ import annotations

import json
import os
import stat
import time

import numpy as np
import pytest

from test_blender_support import PY, have_bpy, render_reference, run_scenario, save_png, synthetic_frames, \
    write_fake_result

pytestmark = [pytest.mark.blender, pytest.mark.skipif(not have_bpy(), reason="bpy is not installed in .venv")]
W, H, N = 64, 48, 3

FAKE_BACKEND = r'''
import json, os, shutil, signal, subprocess, sys, time
args = sys.argv[1:]
assert args[:3] == ["-m", "backend", "run"], args
job, out = args[3], args[args.index("--out") + 1]
mode = open(os.environ.get("FAKE_MODE_FILE", os.path.join(os.path.dirname(__file__), "mode"))).read().strip()
here = os.path.dirname(__file__)
shutil.copy(job, os.path.join(here, "job_seen.json"))
print(json.dumps({"event": "progress", "stage": "depth", "fraction": 0.5}), flush=True)
print("plain text from a library", flush=True)
print(json.dumps({"event": "warning", "message": "fake warning"}), flush=True)
if mode == "ok":
    shutil.copytree(os.path.join(here, "result"), out, dirs_exist_ok=True)
    os.utime(os.path.join(out, "result.json"))
    print(json.dumps({"event": "done", "result": os.path.join(out, "result.json")}), flush=True)
elif mode == "crash":
    os.makedirs(os.path.join(out, "ply"), exist_ok=True)
    open(os.path.join(out, "ply", "frame_0000.ply"), "wb").write(b"ply\nformat binary_little_endian 1.0\n")
    raise RuntimeError("fake segfault-like crash")
elif mode == "error":
    print(json.dumps({"event": "error", "message": "The mask is empty.", "hint": "Paint it."}), flush=True)
    sys.exit(2)
elif mode == "hang":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # make cancel escalate to SIGTERM
    child = subprocess.Popen(["sleep", "300"])
    open(os.path.join(here, "pids"), "w").write(f"{os.getpid()} {child.pid}")
    print(json.dumps({"event": "progress", "stage": "gaussians3d", "fraction": 0.2}), flush=True)
    time.sleep(300)
'''

SCENARIO = r"""
import numpy as np
def errors_only(code):
    return code

r = {}
# Refusals, in the order an artist meets them.
r["no_photo"] = call(bpy.ops.loopscape.run)
r["setup"] = call(bpy.ops.loopscape.setup_photo, filepath=ARGS["photo"])
r["no_mask"] = call(bpy.ops.loopscape.run)
r["mask_create"] = call(bpy.ops.loopscape.mask_create)
r["empty_mask"] = call(bpy.ops.loopscape.run)
r["mask_import"] = call(bpy.ops.loopscape.mask_import, filepath=ARGS["labelme"])
props = SCENE.loopscape
r["hints"] = [[list(h.start), list(h.end)] for h in props.hints]
r["anchors"] = [list(a.co) for a in props.anchors]
r["hint_add"] = call(bpy.ops.loopscape.hint_add, start=(10.0, 40.0), end=(20.0, 38.0), speed=0.5)
r["anchor_add"] = call(bpy.ops.loopscape.anchor_add, co=(50.0, 10.0))
props.frames = ARGS["frames"]
props.speed = 1.5
r["preset"] = call(bpy.ops.loopscape.camera_preset, preset="side")
hero = props.hero_camera
hero.location = (1.0, 2.0, 3.0)
hero.rotation_euler = (1.2, 0.1, -0.4)
r["preset2"] = call(bpy.ops.loopscape.camera_preset, preset="side")  # re-keyed relative to the moved hero

# Interpreter problems.
PREFS.backend_python = "/nonexistent/python"
r["missing_py"] = call(bpy.ops.loopscape.run)
r["check_missing"] = call(bpy.ops.loopscape.check_backend)
PREFS.backend_python = ARGS["broken_py"]
r["check_broken"] = call(bpy.ops.loopscape.check_backend)
r["check_broken_report"] = PREFS.check_report
PREFS.backend_python = ARGS["real_py"]
r["check_real"] = call(bpy.ops.loopscape.check_backend)
r["check_real_report"] = PREFS.check_report

# A successful fake run imports; then crash / error / cancel must leave that import untouched.
PREFS.backend_python = ARGS["fake_py"]
def set_mode(m):
    open(ARGS["mode_file"], "w").write(m)
def state():
    objs = sorted(o.name for o in SCENE.objects if o.get("loopscape_result") or o.get("loopscape_result_parent"))
    return {"objects": objs, "pointclouds": len(bpy.data.pointclouds), "meshes": len(bpy.data.meshes)}
set_mode("ok")
r["ok"] = call(bpy.ops.loopscape.run)
r["after_ok"] = state()
r["stage_ok"] = props.stage
r["job"] = json.load(open(ARGS["job_seen"]))
r["scene_cams"] = {"hero": [list(row) for row in hero.matrix_world]}
for mode in ("crash", "error"):
    set_mode(mode)
    r[mode] = call(bpy.ops.loopscape.run)
    r["after_" + mode] = state()
    r["last_error_" + mode] = props.last_error
set_mode("hang")
t = time.time()
r["hang"] = call(bpy.ops.loopscape.run, timeout=2.0)
r["hang_s"] = time.time() - t
r["after_hang"] = state()
r["last_error_hang"] = props.last_error
r["running_after"] = props.running
# Deleted hero camera is refused.
bpy.data.objects.remove(hero, do_unlink=True)
r["no_hero"] = call(bpy.ops.loopscape.run)
OUT.update(r)
"""


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
    (fake_dir / "backend.py").write_text(FAKE_BACKEND)
    fake_py = fake_dir / "python"
    fake_py.write_text(f'#!/bin/sh\nexec "{PY}" "{fake_dir / "backend.py"}" "$@"\n')
    broken_py = tmp / "broken_python"
    broken_py.write_text('#!/bin/sh\necho "ImportError: libtorch_cpu.so: cannot open shared object file" >&2\nexit 1\n')
    for p in (fake_py, broken_py):
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    save_png(tmp / "photo.png", render_reference(syn["frames"][0], syn["K"], np.eye(4), W, H))
    _labelme(tmp / "labelme.json", W, H)
    args = {"photo": str(tmp / "photo.png"), "labelme": str(tmp / "labelme.json"), "frames": N,
            "fake_py": str(fake_py), "broken_py": str(broken_py), "real_py": str(PY),
            "mode_file": str(fake_dir / "mode"), "job_seen": str(fake_dir / "job_seen.json")}
    t = time.time()
    out = run_scenario(SCENARIO, tmp, args)
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
