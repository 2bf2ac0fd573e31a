"""Issue 14: every bad input is caught before any heavy stage, with one line that names the problem
and the fix (exit 2), no traceback, no result.json from the failed run and an earlier result intact.

The CLI runs in this process (see cli_harness) on a 128x96 synthetic photo at --max-side 64.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from cli_harness import TINY, assert_clean_failure, run_inprocess, run_quietly, snapshot, write_photo

W0, H0 = 128, 96  # the photo; the working size is 64x48


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    photo = write_photo(d / "photo.png", W0, H0)
    mask = np.zeros((H0, W0), np.uint8)
    mask[56:] = 255
    cv2.imwrite(str(d / "mask.png"), mask)
    return {"dir": d, "photo": photo, "mask": d / "mask.png"}


@pytest.fixture(scope="module")
def earlier_result(inputs, tmp_path_factory) -> Path:
    """A good static result; tests copy it and check a failing run leaves it byte for byte."""
    out = tmp_path_factory.mktemp("earlier") / "out"
    assert run_quietly("run", "--image", str(inputs["photo"]), *TINY, "--path", "side", "--out", str(out)) == 0
    return out


def copy_of(earlier: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    out = tmp_path / "out"
    shutil.copytree(earlier, out, symlinks=True)
    return out, snapshot(out)


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A valid PNG signature and IHDR for a huge image with a tiny IDAT: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def good_path(n: int, width: int = 64, height: int = 48) -> dict:
    K = [[60.0, 0.0, width / 2], [0.0, 60.0, height / 2], [0.0, 0.0, 1.0]]
    frames = []
    for i in range(n):
        w2c = np.eye(4)
        w2c[0, 3] = 0.01 * i
        frames.append({"K": K, "w2c": w2c.tolist()})
    return {"width": width, "height": height, "frames": frames}


def motion_args(inputs) -> list[str]:
    return ["--image", str(inputs["photo"]), "--mask", str(inputs["mask"]), *TINY]


# ----------------------------------------------------------------------------- wrong results


@pytest.mark.parametrize("peak, shown", [(1e30, "1e+30"), (1e6, "1e+06"), (20.0, "20")])
def test_absurd_flow_is_refused_with_the_rule(inputs, earlier_result, tmp_path, capsys, peak, shown):
    flow = np.zeros((2, H0, W0), np.float32)
    flow[0, 60:, :] = peak
    np.save(tmp_path / "flow.npy", flow)
    out, before = copy_of(earlier_result, tmp_path)
    run = run_inprocess(capsys, "run", "--image", str(inputs["photo"]), "--flow", str(tmp_path / "flow.npy"), *TINY,
                        "--out", str(out))
    msg = assert_clean_failure(run, out, "flow", "px per frame", "10%", earlier=before)
    assert f"up to {shown} px" in msg
    assert "RuntimeWarning" not in run.stderr


def test_camera_k_last_row_must_be_0_0_1(inputs, tmp_path, capsys):
    K = [[100.0, 0, 64], [0, 100.0, 48], [5, 5, 5]]
    job = write_json(tmp_path / "job.json", {"image": str(inputs["photo"]), "mask": str(inputs["mask"]),
                                             "hints": [{"start": [10, 80], "end": [110, 80]}],
                                             "camera": {"K": K, "width": W0, "height": H0}})
    out = tmp_path / "o"
    assert_clean_failure(run_inprocess(capsys, "run", str(job), *TINY, "--out", str(out)), out, "last row", "[0, 0, 1]")


def test_path_frame_count_must_match_frames(inputs, tmp_path, capsys):
    path = write_json(tmp_path / "path.json", good_path(2))
    out = tmp_path / "o"
    msg = assert_clean_failure(run_inprocess(capsys, "run", "--image", str(inputs["photo"]), *TINY, "--path", str(path),
                                             "--out", str(out)), out, "2 frames", "4 frames")
    assert "--frames 2" in msg


def test_empty_out_is_refused_and_nothing_lands_in_cwd(inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = run_inprocess(capsys, "run", "--image", str(inputs["photo"]), *TINY, "--out", "")
    assert_clean_failure(run, tmp_path / "nowhere", "--out is empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- job JSON


@pytest.mark.parametrize("depth", [60, 100_000])
def test_deeply_nested_job(inputs, tmp_path, capsys, depth):
    text = '{"image": "%s", "hints": %s%s}' % (inputs["photo"], "[" * depth, "]" * depth)
    (tmp_path / "job.json").write_text(text)
    out = tmp_path / "o"
    assert_clean_failure(run_inprocess(capsys, "run", str(tmp_path / "job.json"), "--out", str(out)), out, "nested")


@pytest.mark.parametrize("field", ["fps", "speed", "hints"])
def test_400_digit_integers(inputs, tmp_path, capsys, field):
    big = "9" * 400
    value = big if field != "hints" else '[{"start": [%s, 1], "end": [2, 2]}]' % big
    (tmp_path / "job.json").write_text('{"image": "%s", "%s": %s}' % (inputs["photo"], field, value))
    out = tmp_path / "o"
    assert_clean_failure(run_inprocess(capsys, "run", str(tmp_path / "job.json"), "--out", str(out)), out,
                         "400-digit")


@pytest.mark.parametrize("camera, needle", [
    ({"fov_deg": 50, "K": [["y", 0, 0], [0, 1, 0], [0, 0, 1]], "width": W0, "height": H0}, "camera.K"),
    ({"fov_deg": 50, "K": [[1, 0], [0, 1]], "width": W0, "height": H0}, "camera.K"),
    ({"K": [[1e-300, 0, 64], [0, 1e-300, 48], [0, 0, 1]], "width": W0, "height": H0}, "focal length"),
    ({"fov_deg": 50, "K": [[100, 0, 64], [0, 100, 48], [0, 0, 1]], "width": 0, "height": H0}, "camera.width"),
    ({"fov_deg": 50, "K": [[100, 0, 64], [0, 100, 48], [0, 0, 1]], "width": float("nan"), "height": H0},
     "camera.width"),
    ({"fov_deg": 50, "K": [[100, 0, 64], [0, 100, 48], [0, 0, 1]], "width": W0, "height": "x"}, "camera.height"),
])
def test_bad_camera(inputs, tmp_path, capsys, camera, needle):
    job = write_json(tmp_path / "job.json", {"image": str(inputs["photo"]), "camera": camera})
    out = tmp_path / "o"
    assert_clean_failure(run_inprocess(capsys, "run", str(job), *TINY, "--out", str(out)), out, needle)


def test_empty_depth_names_the_field(inputs, tmp_path, capsys):
    job = write_json(tmp_path / "job.json", {"image": str(inputs["photo"]), "depth": ""})
    out = tmp_path / "o"
    msg = assert_clean_failure(run_inprocess(capsys, "run", str(job), "--out", str(out)), out, "'depth'",
                               "auto, model, prior")
    assert "depth file in" not in msg


@pytest.mark.parametrize("hint, needle", [
    ("10,80,1e300,80", "hints[0]"),
    ("1e300,80,10,80", "hints[0]"),
    ("10,80,500000,80", "px per frame"),  # in bounds, but an arrow that long means 1e4 px per frame
    ("10,80,110,80,1e200", "px per frame"),
])
def test_hints_with_absurd_coordinates_or_speed(inputs, tmp_path, capsys, hint, needle):
    out = tmp_path / "o"
    run = run_inprocess(capsys, "run", *motion_args(inputs), "--hint", hint, "--out", str(out))
    assert_clean_failure(run, out, needle)
    assert "RuntimeWarning" not in run.stderr


# ----------------------------------------------------------------------------- images


def test_decompression_bomb(tmp_path, capsys):
    bomb = png_header_only(tmp_path / "bomb.png", 20000, 20000)
    out = tmp_path / "o"
    assert_clean_failure(run_inprocess(capsys, "run", "--image", str(bomb), *TINY, "--out", str(out)), out,
                         "20000x20000", "megapixels")


@pytest.mark.parametrize("size, max_side, motion", [((10000, 16), "512", False), ((W0, H0), "8", True),
                                                   ((W0, H0), "1", True), ((W0, H0), "12", False)])
def test_working_image_too_small(inputs, tmp_path, capsys, size, max_side, motion):
    if size == (W0, H0):
        photo = inputs["photo"]
    else:
        photo = tmp_path / "strip.png"
        cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    out = tmp_path / "o"
    args = [a if a != "64" else max_side for a in TINY]
    extra = ["--mask", str(inputs["mask"]), "--hint", "10,80,110,80"] if motion else []
    run = run_inprocess(capsys, "run", "--image", str(photo), *extra, *args, "--out", str(out))
    msg = assert_clean_failure(run, out, "under 16 px")
    assert "mask is empty" not in msg


# ----------------------------------------------------------------------------- camera path


@pytest.mark.parametrize("mutate, needle", [
    (lambda p: p.update(width=float("inf")), "width"),
    (lambda p: p.update(width=float("nan")), "width"),
    (lambda p: p.update(height=-3), "height"),
    (lambda p: p["frames"][1].update(w2c=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]), "rotation"),
    (lambda p: p["frames"][2].update(K=[[1e-300, 0, 32], [0, 1e-300, 24], [0, 0, 1]]), "K"),
    (lambda p: p["frames"][3]["w2c"][0].__setitem__(3, 1e300), "translation"),
])
def test_bad_path_is_refused_before_training(inputs, earlier_result, tmp_path, capsys, mutate, needle):
    p = good_path(4)
    mutate(p)
    path = tmp_path / "path.json"
    path.write_text(json.dumps(p))  # NaN/Infinity literals, as Python writes them
    out, before = copy_of(earlier_result, tmp_path)
    run = run_inprocess(capsys, "run", "--image", str(inputs["photo"]), *TINY, "--path", str(path), "--out", str(out))
    assert_clean_failure(run, out, needle, earlier=before)


# ----------------------------------------------------------------------------- output folder


def test_demo_into_an_existing_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    run = run_inprocess(capsys, "run", "--demo", *TINY, "--out", str(blocker))
    assert_clean_failure(run, blocker, "existing file")
    assert blocker.read_text() == "not a folder"


def test_demo_below_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    run = run_inprocess(capsys, "run", "--demo", *TINY, "--out", str(blocker / "sub"))
    assert_clean_failure(run, blocker / "sub", "output folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the file cases cover the path")
def test_demo_into_a_read_only_folder(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        run = run_inprocess(capsys, "run", "--demo", *TINY, "--out", str(ro))
        assert_clean_failure(run, ro, "output folder")
    finally:
        ro.chmod(0o700)


def _labelme(**overrides) -> dict:
    doc = {"version": "5.0", "imageWidth": W0, "imageHeight": H0, "imageData": None, "shapes": [
        {"label": "water", "shape_type": "polygon", "points": [[0, 56], [128, 56], [128, 96], [0, 96]]},
        {"label": "hint_0", "shape_type": "line", "points": [[10, 80], [110, 80]]}]}
    doc.update(overrides)
    return doc


@pytest.mark.parametrize("doc, needle", [
    (_labelme(shapes=[1, 2]), "shape 0"),  # shapes of ints
    (_labelme(shapes=["polygon"]), "shape 0"),  # shapes of strings
    (_labelme(shapes=[{"label": "water", "shape_type": "polygon", "points": [[0, 56, 1], [128, 56, 1], [64, 96, 1]]}]),
     "[x, y] pair"),  # points with 3 numbers
    (_labelme(shapes=[{"label": "water", "shape_type": "polygon", "points": [[0, 56], [float("nan"), 56], [64, 96]]}]),
     "finite pixel position"),  # a NaN polygon vertex
    (_labelme(shapes=[{"label": "water", "shape_type": "polygon", "points": [[0, 56], [128, 56], [64, 96]]},
                      {"label": "hint_0", "shape_type": "line", "points": [[10, 80], [10, 80]]}]), "zero length"),
    (_labelme(imageWidth=float("nan")), "imageWidth"),  # blamed on the size, not on a hint
])
def test_bad_labelme_is_refused_before_training(inputs, earlier_result, tmp_path, capsys, doc, needle):
    out, before = copy_of(earlier_result, tmp_path)
    lm = tmp_path / "bad.json"
    lm.write_text(json.dumps(doc))  # NaN is written as the bare token, as a careless tool would
    run = run_inprocess(capsys, "run", "--image", str(inputs["photo"]), "--labelme", str(lm), *TINY, "--out", str(out))
    assert_clean_failure(run, out, needle, earlier=before)
