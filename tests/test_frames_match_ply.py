"""The path video shows what the exported Gaussians show: no colour wrap-around where renders exceed 1.0.

A bright photo (saturated clouds and sand) makes the trained Gaussians render a few % above 1.0.
The video frames decoded from video.mp4 must match the exported PLY rendered by the independent
renderer at the same path cameras, over the pixels the Gaussians cover.
"""
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

from backend.model.camera import Camera
from backend.model.camera_paths import preset_path
from backend.render.fill import composite_over_fill
from backend.io.video import to_uint8
from independent_render import read_ply, render

REPO = Path(__file__).resolve().parents[1]
W, H, N_FRAMES, PATH = 64, 48, 4, "zoom-in"
COVERED = 0.99  # independent alpha: above this the video's background fill adds under 1 %


def bright_photo(width: int = W, height: int = H) -> np.ndarray:
    """Float RGB: white cloud patches (half of them at exactly 1.0) on a pale sky, bright sand below."""
    rng = np.random.default_rng(0)
    noise = cv2.resize(rng.random((6, 8)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    yy = np.mgrid[0:height, 0:width][0] / height
    sky = np.stack([0.55 + 0.3 * yy, 0.75 + 0.2 * yy, np.ones_like(yy)], -1)
    cloud = np.repeat(np.clip(0.75 + 0.5 * noise, 0, 1)[..., None], 3, -1)
    rgb = np.where((noise > 0.45)[..., None], cloud, sky)
    sand = int(height * 0.75)
    rgb[sand:] = np.array([0.95, 0.9, 0.6]) * (0.9 + 0.1 * noise[sand:, :, None])
    return np.clip(rgb, 0, 1).astype(np.float32)


def read_mp4(path: Path, width: int, height: int) -> list[np.ndarray]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    return [np.frombuffer(f, np.uint8).reshape(h, w, 3)[:height, :width] / 255.0 for f in reader]


@pytest.fixture(scope="module")
def bright_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bright")
    cv2.imwrite(str(root / "bright.png"), to_uint8(bright_photo())[..., ::-1])
    env = dict(os.environ, PYTHONPATH=str(REPO), LOOPSCAPE_THREADS="1", HF_HUB_OFFLINE="1")
    out = root / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "backend", "run", "--image", str(root / "bright.png"), "--max-side", str(W),
         "--quality", "preview", "--frames", str(N_FRAMES), "--depth", "prior", "--device", "cpu", "--path", PATH,
         "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_video_frames_match_the_exported_ply_where_colours_exceed_one(bright_run):
    result = json.loads((bright_run / "result.json").read_text())
    c = result["camera"]
    cams = preset_path(PATH, Camera(np.array(c["K"]), c["width"], c["height"]), n_frames=N_FRAMES)
    video = read_mp4(bright_run / result["video"], W, H)
    assert len(video) == N_FRAMES
    plys = [read_ply(bright_run / p) for p in result["ply_frames"]]
    overshoot_seen = 0
    for i, cam in enumerate(cams):
        ply = plys[i % len(plys)]
        ref = render(ply, cam.K, cam.w2c, W, H)
        alpha = render(dict(ply, rgb=np.ones_like(ply["rgb"])), cam.K, cam.w2c, W, H)[..., 0]
        covered = alpha > COVERED
        assert covered.sum() >= 100, f"frame {i}: only {covered.sum()} covered pixels"
        overshoot_seen += int((ref[covered] > 1.0 + 0.5 / 255).any(-1).sum())
        mse = float(np.mean((np.clip(ref, 0, 1) - video[i])[covered] ** 2))
        psnr = 10 * np.log10(1.0 / max(mse, 1e-12))
        assert psnr >= 30.0, f"frame {i}: {psnr:.2f} dB"
    # The job must really be bright: on the unfixed code these pixels wrapped to near black.
    assert overshoot_seen >= 50, overshoot_seen


def test_fully_covered_frame_is_clipped():
    colors = np.full((4, 5, 3), 1.06, np.float32)
    colors[0, 0] = [-0.02, 0.5, 1.3]
    rgb, uncovered = composite_over_fill(colors, np.ones((4, 5)), np.ones((4, 5)))
    assert uncovered == 0.0
    assert rgb.max() == 1.0 and rgb.min() == 0.0
    assert to_uint8(rgb)[1, 1].tolist() == [255, 255, 255]
    assert to_uint8(colors)[0, 0].tolist() == [0, 128, 255]
