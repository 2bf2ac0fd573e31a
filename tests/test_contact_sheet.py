"""preview.png (labelled contact sheet) and preview.webp (looping path video) in every result."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from backend.io.contact_sheet import (ANIM_MAX_BYTES, GAP, LABEL_H, SheetLayout, contact_sheet, encode_anim, mask_overlay,
                                   pick_frames)
from backend.tools.demo_scene import make_demo_scene

REPO = Path(__file__).resolve().parents[1]
FRAMES = 8


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), LOOPSCAPE_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sheet")
    scene = make_demo_scene(128, 96, seed=3)
    cv2.imwrite(str(root / "photo.png"), (scene.rgb[..., ::-1] * 255 + 0.5).astype(np.uint8))
    cv2.imwrite(str(root / "mask.png"), scene.mask.astype(np.uint8) * 255)
    return root / "photo.png", root / "mask.png"


@pytest.fixture(scope="module")
def motion_run(photo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sheet_out") / "motion"
    proc = run_cli("run", "--image", str(photo[0]), "--mask", str(photo[1]), "--hint", "10,70,60,70",
                   "--max-side", "64", "--quality", "preview", "--frames", str(FRAMES), "--depth", "prior",
                   "--device", "cpu", "--png-frames", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def read_rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]


def tile(sheet: np.ndarray, lay: SheetLayout, row: int, col: int) -> np.ndarray:
    x, y = lay.tile_origin(row, col)
    return sheet[y:y + lay.tile_h, x:x + lay.tile_w].astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / max(np.mean((a.astype(np.float64) - b) ** 2), 1e-12)))


def test_motion_result_has_the_contact_sheet_layout(motion_run):
    result = json.loads((motion_run / "result.json").read_text())
    assert result["preview"] == "preview.png" and result["preview_anim"] == "preview.webp"
    sheet = read_rgb(motion_run / result["preview"])
    # 64x48 tiles are upscaled x3 to 192x144; 6 columns, 3 rows (photo/overlay, path video, input view).
    lay = SheetLayout.for_image(64, 48, rows=3)
    assert (lay.tile_w, lay.tile_h) == (192, 144)
    assert sheet.shape == (GAP + 3 * (LABEL_H + 144 + GAP), GAP + 6 * (192 + GAP), 3) == (502, 1180, 3)
    up = lambda a: cv2.resize(a, (lay.tile_w, lay.tile_h), interpolation=cv2.INTER_NEAREST)  # noqa: E731
    photo = read_rgb(motion_run / result["input_image"])
    assert psnr(tile(sheet, lay, 0, 0), up(photo)) > 50  # the input photo, exactly
    overlay = tile(sheet, lay, 0, 1)
    assert psnr(overlay, up(photo)) < 25  # tinted, dimmed, with arrows: not the photo
    orange = (np.abs(overlay - [255, 140, 26]).max(-1) < 40).sum()
    assert orange >= 40, orange  # the hint arrow is drawn
    # Path video row: frames 0, 1, 3, 4, 6, 7 of 8, as written to frames/NNNN.png.
    assert pick_frames(FRAMES) == [0, 1, 3, 4, 6, 7]
    for col, i in enumerate(pick_frames(FRAMES)):
        frame = read_rgb(motion_run / result["png_frames"][i])
        assert psnr(tile(sheet, lay, 1, col), up(frame)) > 50, (col, i)
    # Input-view row: the loop at the input camera (input_view.mp4 is its H.264 copy).
    reader = imageio_ffmpeg.read_frames(str(motion_run / result["input_view_video"]))
    meta = next(reader)
    w, h = meta["size"]
    iv = [np.frombuffer(f, np.uint8).reshape(h, w, 3)[:48, :64] for f in reader]
    assert len(iv) == FRAMES
    for col, i in enumerate(pick_frames(FRAMES)):
        assert psnr(tile(sheet, lay, 2, col), up(iv[i])) > 30, (col, i)  # x264 at 64x48: ~35 dB
    # Label strips carry text (light pixels on the dark background) above every tile.
    for row, col in [(0, 0), (0, 1), (1, 0), (1, 5), (2, 5)]:
        x, y = lay.tile_origin(row, col)
        assert (sheet[y - LABEL_H:y, x:x + lay.tile_w] > 150).any(-1).sum() >= 30, (row, col)


def test_motion_result_has_a_small_looping_animation(motion_run):
    path = motion_run / "preview.webp"
    assert 0 < path.stat().st_size <= ANIM_MAX_BYTES
    with Image.open(path) as im:
        assert im.format == "WEBP" and im.is_animated and im.n_frames == FRAMES
        assert im.size == (64, 48) and im.info.get("loop", 0) == 0


def test_static_result_has_two_rows(photo, tmp_path):
    out = tmp_path / "static"
    proc = run_cli("run", "--image", str(photo[0]), "--max-side", "64", "--quality", "preview", "--frames", "3",
                   "--depth", "prior", "--device", "cpu", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    sheet = read_rgb(out / result["preview"])
    assert sheet.shape == (GAP + 2 * (LABEL_H + 144 + GAP), 1180, 3)
    assert Image.open(out / result["preview_anim"]).n_frames == 3


def test_layout_scales_tiles_into_a_readable_range():
    assert (SheetLayout.for_image(256, 160, 3).tile_w, SheetLayout.for_image(256, 160, 3).tile_h) == (256, 160)
    big = SheetLayout.for_image(1024, 640, 3)
    assert (big.tile_w, big.tile_h) == (256, 160) and big.size == (GAP + 6 * 260, GAP + 3 * (LABEL_H + 160 + GAP))
    assert (SheetLayout.for_image(100, 200, 2).tile_w, SheetLayout.for_image(100, 200, 2).tile_h) == (100, 200)
    assert pick_frames(3) == [0, 1, 2] and pick_frames(48) == [0, 9, 19, 28, 38, 47]


def test_frames_above_one_are_clipped_not_wrapped():
    frames = [np.full((20, 30, 3), 1.05, np.float32) for _ in range(2)]
    sheet = contact_sheet(np.full((20, 30, 3), 0.5, np.float32), frames)
    lay = SheetLayout.for_image(30, 20, 2)
    assert tile(sheet, lay, 1, 0).min() == 255  # white, not the wrapped near-black


def test_overlay_draws_flow_arrows_without_hints():
    mask = np.zeros((40, 60), bool)
    mask[:20] = True
    flow = np.zeros((40, 60, 2), np.float32)
    flow[mask] = (0.5, 0.0)
    out = mask_overlay(np.full((40, 60, 3), 0.5, np.float32), mask, flow=flow, out_size=(180, 120))
    orange = np.abs(out.astype(int) - [255, 140, 26]).max(-1) < 40
    assert out.shape == (120, 180, 3) and orange[:60].sum() >= 100 and orange[70:].sum() == 0


def test_animation_shrinks_to_the_size_cap():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (160, 256, 3), dtype=np.uint8) for _ in range(30)]  # noise: incompressible
    data = encode_anim(frames, 24.0, max_bytes=300_000)
    assert len(data) <= 300_000
    import io

    with Image.open(io.BytesIO(data)) as im:
        assert im.n_frames == 30 and im.size[0] < 256
