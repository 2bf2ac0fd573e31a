"""validate: the input-view frames equal full renders when only the changing pixels are redrawn,
and the motion check's flow on a subset of pairs at a capped size reads the same motion."""
from __future__ import annotations

import numpy as np
import torch

from backend.infra.events import NullSink
from backend.model.camera import Camera, intrinsics_from_fov
from backend.model.gaussians import from_points
from backend.model.motion_field import VelocityField, loop_gaussians
from backend.stages import validate
from backend.tools.metrics.motion import dis_flow, dis_flow_capped, pair_subset, video_metrics

W, H = 64, 48


def _small_motion_loop(n_frames: int = 6):
    """A textured wall at depth 2, one Gaussian per pixel; a 12x10 patch drifts right."""
    cam = Camera(intrinsics_from_fov(W, H, 50.0), W, H)
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    K = cam.K
    xyz = np.stack([(xs - K[0, 2]) / K[0, 0] * 2.0, (ys - K[1, 2]) / K[1, 1] * 2.0, np.full_like(xs, 2.0)], -1)
    rng = np.random.default_rng(0)
    rgb = rng.random((H, W, 3)).astype(np.float32)
    moving = np.zeros((H, W), bool)
    moving[20:30, 30:42] = True
    g = from_points(xyz.reshape(-1, 3), rgb.reshape(-1, 3), np.full(H * W, 2.0 / K[0, 0] * 0.6), moving=moving.reshape(-1))
    vel = np.zeros((H, W, 3), np.float32)
    vel[moving, 0] = 0.02
    return loop_gaussians(g, VelocityField(vel, cam, moving), n_frames), cam


def test_changing_region_frames_equal_full_renders():
    loop, cam = _small_motion_loop()
    region, sub = validate._changing_region(loop, cam)
    assert region is not None and 0.03 < region.mean() < 0.4, "the subset render must be in use here"
    assert len(sub.base) < 0.75 * len(loop.base)
    frames = validate.input_view_loop(loop, cam, torch.device("cpu"), NullSink())
    assert frames.shape == (loop.n_frames + 1, H, W, 3)
    with torch.no_grad():
        for t in range(loop.n_frames + 1):
            full = loop.render(t, cam, background=torch.zeros(3), wrap=False).rgb.clamp(0, 1).numpy()
            np.testing.assert_allclose(frames[t], full, atol=1e-6, err_msg=f"frame {t}")
    assert np.abs(frames[3] - frames[0]).max() > 0.05  # the patch did move


def test_flow_at_a_capped_size_reads_the_same_motion():
    rng = np.random.default_rng(1)
    big = cv2_blur(rng.random((360, 640)).astype(np.float32))
    a = np.repeat(big[..., None], 3, -1)
    b = np.roll(a, 3, axis=1)  # 3 px to the right
    full = dis_flow(a, b)[40:-40, 40:-40]
    capped = dis_flow_capped(a, b, max_side=320)[40:-40, 40:-40]
    assert abs(np.median(full[..., 0]) - 3.0) < 0.2
    assert abs(np.median(capped[..., 0]) - 3.0) < 0.3 and abs(np.median(capped[..., 1])) < 0.2


def test_pair_subset_spreads_over_the_loop():
    assert pair_subset(10, None).tolist() == list(range(10))
    s = pair_subset(119, 16)
    assert len(s) == 16 and s[0] == 0 and s[-1] == 118 and np.all(np.diff(s) > 0)


def test_video_metrics_with_a_pair_subset_agree():
    loop, cam = _small_motion_loop(12)
    frames = validate.input_view_loop(loop, cam, torch.device("cpu"), NullSink())[:-1]
    mask = np.zeros((H, W), bool)
    mask[20:30, 30:42] = True
    target = np.zeros((H, W, 2), np.float32)
    target[mask, 0] = float(np.linalg.norm(loop.means[1, 0] - loop.means[0, 0]) * cam.K[0, 0] / 2.0)
    all_pairs = video_metrics(frames, mask, target)
    some = video_metrics(frames, mask, target, max_pairs=4, flow_max_side=32)
    assert abs(all_pairs["motion_cos"] - some["motion_cos"]) < 0.1
    assert all_pairs["stillness"] == some["stillness"] and all_pairs["loop_gap_db"] == some["loop_gap_db"]


def cv2_blur(x: np.ndarray) -> np.ndarray:
    import cv2

    b = cv2.GaussianBlur(x, (0, 0), 3.0)
    return (b - b.min()) / (b.max() - b.min())  # a smooth texture over the full grey range
