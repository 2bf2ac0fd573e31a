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


# ----------------------------------------------------------------------------- behind depth edges

def _walls(w: int = 64, h: int = 48) -> tuple[np.ndarray, np.ndarray, Camera]:
    """A near wall (depth 2, dark) on the left half and a far wall (depth 4, light stripes) on the right."""
    from backend.model.camera import intrinsics_from_fov

    rgb = np.zeros((h, w, 3), np.float32)
    rgb[:, w // 2:] = 0.6 + 0.2 * (np.arange(w - w // 2) % 2)[None, :, None]
    rgb[:, : w // 2] = 0.1
    depth = np.full((h, w), 4.0, np.float32)
    depth[:, : w // 2] = 2.0
    return rgb, depth, Camera(intrinsics_from_fov(w, h, 50.0), w, h)


def test_the_far_wall_goes_on_behind_the_near_one_as_wide_as_the_parallax() -> None:
    from backend.stages.lift import lift_behind_edges

    rgb, depth, cam = _walls()
    shift = 0.1
    xyz, col, size = lift_behind_edges(rgb, depth, cam, shift=shift)
    uv, z = cam.project(xyz.astype(np.float64))
    f = float(np.sqrt(cam.K[0, 0] * cam.K[1, 1]))
    width = int(np.ceil(f * shift * (1 / 2.0 - 1 / 4.0)))  # what a camera moved by `shift` uncovers
    assert width >= 2
    np.testing.assert_allclose(z, 4.0, rtol=1e-5)  # at the far wall's depth, behind the near one
    cols = np.unique(np.floor(uv[:, 0]).astype(int))
    assert cols.max() == 31 and len(cols) in (width, width + 1), cols  # the near side's band, by the edge
    assert len(xyz) == len(cols) * 48  # every row
    assert col.min() > 0.45  # the far wall's colours, not the near wall's 0.1 ...
    assert col.std() > 0.05  # ... with its stripes mirrored on, not one edge colour smeared
    assert len(size) == len(xyz) and np.all(size > 0)
    # No step, no points; and a masked band (the moving layer has its own backdrop) is left out.
    flat = lift_behind_edges(rgb, np.full_like(depth, 3.0), cam, shift=shift)
    assert len(flat[0]) == 0
    masked = np.zeros(depth.shape, bool)
    masked[:24] = True
    assert len(lift_behind_edges(rgb, depth, cam, shift=shift, exclude=masked)[0]) == len(cols) * 24


def test_behind_edge_points_close_the_crack_a_moved_camera_sees() -> None:
    """The scene of the crack in 3dmom_scene_0's renders: one-pixel splats of two walls, the camera
    moved so that the step opens by about a pixel. One layer leaves a column ~3/4 opaque (any
    renderer that composites over a background shows it as a line); with the far wall continued
    behind the near one the column is covered."""
    import torch

    from backend.model.gaussians import from_points
    from backend.stages.lift import lift_behind_edges

    rgb, depth, cam = _walls()
    pc = lift_to_points(rgb, depth, cam)
    b_xyz, b_rgb, b_size = lift_behind_edges(rgb, depth, cam)
    w2c = np.eye(4)
    w2c[0, 3] = -0.06
    moved = Camera(cam.K, cam.width, cam.height, w2c)
    alphas = []
    for xyz, col, size in ((pc.xyz, pc.rgb, pc.pixel_size),
                           (np.concatenate([pc.xyz, b_xyz]), np.concatenate([pc.rgb, b_rgb]),
                            np.concatenate([pc.pixel_size, b_size]))):
        with torch.no_grad():
            alphas.append(from_points(xyz, col, size * 0.5, opacity=0.99).render(moved).alpha.numpy()[..., 0])
    one, two = alphas
    inner = np.s_[2:-2, 2:-2]  # the frame's border sees past both walls either way
    assert one[inner].min() < 0.85
    assert two[inner].min() > 0.97, two[inner].min()
