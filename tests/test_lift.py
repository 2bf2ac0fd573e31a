"""Lifting pixels to points: reprojection is exact, depth is camera z, poses are honoured."""
from __future__ import annotations

import numpy as np
import pytest

from backend.model.camera import Camera, look_at_w2c
from backend.stages.lift import lift_to_points


def _scene(w: int = 64, h: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = rng.random((h, w, 3), dtype=np.float32)
    depth = (1.0 + 19.0 * rng.random((h, w))).astype(np.float32)
    K = np.array([[70.0, 0.0, 25.3], [0.0, 82.0, 30.1], [0.0, 0.0, 1.0]])  # fx != fy, off-centre
    return rgb, depth, K


def _pixel_centres(w: int, h: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs.reshape(-1) + 0.5, ys.reshape(-1) + 0.5], 1)


def test_reprojection_identity_pose() -> None:
    rgb, depth, K = _scene()
    cam = Camera(K, 64, 48)
    pc = lift_to_points(rgb, depth, cam)
    assert pc.xyz.shape == (64 * 48, 3) and pc.xyz.dtype == np.float32
    uv, z = cam.project(pc.xyz.astype(np.float64))
    assert np.abs(uv - _pixel_centres(64, 48)).max() < 1e-4
    np.testing.assert_allclose(z, depth.reshape(-1), rtol=1e-6)
    # flat index, colour and pixel footprint travel with each point
    i = 17 * 64 + 41
    assert pc.pixel[i] == i and pc.pixel.dtype == np.int64
    np.testing.assert_array_equal(pc.rgb[i], rgb[17, 41])
    assert pc.pixel_size[i] == pytest.approx(depth[17, 41] / np.sqrt(70.0 * 82.0), rel=1e-6)
    assert (pc.width, pc.height) == (64, 48)


def test_reprojection_with_pose() -> None:
    rgb, depth, K = _scene(40, 30, seed=1)
    K[0, 2], K[1, 2] = 12.0, 20.0
    w2c = look_at_w2c(np.array([0.3, -0.2, -1.0]), np.array([0.1, 0.0, 5.0]))
    cam = Camera(K, 40, 30, w2c)
    pc = lift_to_points(rgb, depth, cam)
    uv, z = cam.project(pc.xyz.astype(np.float64))
    assert np.abs(uv - _pixel_centres(40, 30)).max() < 1e-4
    np.testing.assert_allclose(z, depth.reshape(-1), rtol=1e-5)
    # the pose is not identity, so world points differ from camera-frame points
    ident = lift_to_points(rgb, depth, Camera(K, 40, 30))
    assert np.abs(ident.xyz - pc.xyz).max() > 0.1


def test_rejects_bad_input() -> None:
    rgb, depth, K = _scene()
    with pytest.raises(ValueError):
        lift_to_points(rgb, depth[:, :-1], Camera(K, 64, 48))
    with pytest.raises(ValueError):
        lift_to_points(rgb, depth, Camera(K, 48, 64))
    bad = depth.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError):
        lift_to_points(rgb, bad, Camera(K, 64, 48))
