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
    xyz, col, size, moving = lift_behind_edges(rgb, depth, cam, shift=shift)
    uv, z = cam.project(xyz.astype(np.float64))
    f = float(np.sqrt(cam.K[0, 0] * cam.K[1, 1]))
    width = int(np.ceil(f * shift * (1 / 2.0 - 1 / 4.0)))  # what a camera moved by `shift` uncovers
    assert width >= 2
    np.testing.assert_allclose(z, 4.0, rtol=1e-5)  # at the far wall's depth, behind the near one
    cols = np.unique(np.floor(uv[:, 0]).astype(int))
    assert cols.max() == 31 and len(cols) in (width, width + 1), cols  # the near side's band, by the edge
    assert len(xyz) == len(cols) * 48  # every row
    assert col.min() > 0.55 and col.max() < 0.85  # the far wall's colours (0.6-0.8), none of the near wall's 0.1
    assert len(size) == len(xyz) and np.all(size > 0)
    # No step, no points; and a masked band (the moving layer has its own backdrop) is left out.
    flat = lift_behind_edges(rgb, np.full_like(depth, 3.0), cam, shift=shift)
    assert len(flat[0]) == 0
    masked = np.zeros(depth.shape, bool)
    masked[:24] = True
    assert len(lift_behind_edges(rgb, depth, cam, shift=shift, exclude=masked)[0]) == len(cols) * 24
    assert not moving.any()  # nothing is masked: the far wall is still
    # A masked far wall whose fluid does not reach round the near one (no fluid on the near wall's other
    # side, nor above and below it) has no surface to go on along: it stays still scenery, as before.
    fluid = np.zeros(depth.shape, bool)
    fluid[:20, 32:] = True
    f_xyz, _, _, f_moving = lift_behind_edges(rgb, depth, cam, shift=shift, exclude=fluid)
    np.testing.assert_array_equal(f_xyz, xyz)
    assert not f_moving.any()


def test_water_behind_a_boulder_lies_on_the_water_surface_continued() -> None:
    """A boulder standing in water on a ground plane: the fill behind it takes the far pixels' depth
    (the water above the boulder in the image, farther away), but the water hidden behind it goes
    on along its own plane. Its inverse depth, affine in the image on a plane, is interpolated
    across the boulder from the water on either side."""
    from backend.model.camera import intrinsics_from_fov
    from backend.stages.lift import lift_behind_edges

    w, h = 64, 48
    cam = Camera(intrinsics_from_fov(w, h, 50.0), w, h)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    plane = 1.0 / (0.05 + 0.5 * (ys + 0.5) / h + 0.002 * (xs + 0.5))  # a tilted plane: inverse depth affine
    rock = (ys >= 26) & (ys < 34) & (xs >= 24) & (xs < 40)
    depth = np.where(rock, 0.8 * plane[34, 32], plane).astype(np.float32)  # stands in front of its foot
    rgb = np.full((h, w, 3), 0.4, np.float32)
    water = ~rock
    xyz, _, _, moving = lift_behind_edges(rgb, depth, cam, shift=0.1, exclude=water)
    uv, z = cam.project(xyz.astype(np.float64))
    px = np.floor(uv).astype(int)
    on_rock = rock[px[:, 1], px[:, 0]]
    assert moving.any() and moving[on_rock].all()  # all the water behind the boulder moves
    assert not moving[~on_rock].any()
    truth = plane[px[:, 1], px[:, 0]]
    np.testing.assert_allclose(z[on_rock], truth[on_rock], rtol=1e-3)
    # Without the mask the same points take the fill's depth: the far pixels', off the plane there.
    s_xyz, _, _, still = lift_behind_edges(rgb, depth, cam, shift=0.1)
    assert not still.any()
    # A ridge across the whole frame between two fluids (a sky above it, a lake below) is no island:
    # they are two surfaces, and neither is continued behind it.
    ridge = (ys >= 26) & (ys < 34)
    r_depth = np.where(ridge, 0.8 * plane[34, 32], plane).astype(np.float32)
    r_xyz, _, _, r_moving = lift_behind_edges(rgb, r_depth, cam, shift=0.1, exclude=~ridge)
    assert len(r_xyz) and not r_moving.any()
    s_uv, s_z = cam.project(s_xyz.astype(np.float64))
    s_px = np.floor(s_uv).astype(int)
    s_rock = rock[s_px[:, 1], s_px[:, 0]]
    assert np.median(np.abs(np.log(s_z[s_rock] / plane[s_px[:, 1], s_px[:, 0]][s_rock]))) > 0.02


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
    b_xyz, b_rgb, b_size, _ = lift_behind_edges(rgb, depth, cam)
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


def _ground(w: int = 64, h: int = 48, height: float = 0.35) -> tuple[np.ndarray, np.ndarray, Camera]:
    """A flat ground `height` below the camera (OpenCV y down) under a sky at depth 20."""
    from backend.model.camera import intrinsics_from_fov

    cam = Camera(intrinsics_from_fov(w, h, 50.0), w, h)
    v = np.arange(h) + 0.5 - cam.K[1, 2]
    z = np.minimum(np.where(v > 0, height * cam.K[1, 1] / np.maximum(v, 1e-9), np.inf), 20.0)
    rgb = np.random.default_rng(0).random((h, w, 3), dtype=np.float32)
    return rgb, np.repeat(z[:, None], w, 1).astype(np.float32), cam


def test_surface_axes_lie_on_the_surface_and_stop_at_depth_steps() -> None:
    from backend.stages.lift import SURFACE_STRETCH_MAX, SURFACE_THICKNESS, surface_axes

    # A wall facing the camera: one footprint along the image axes, a thin normal along the view.
    rgb, _, cam = _walls()
    wall = np.full((48, 64), 3.0, np.float32)
    size = lift_to_points(rgb, wall, cam).pixel_size
    flat = size[:, None, None] * np.diag([1.0, 1.0, SURFACE_THICKNESS])
    np.testing.assert_allclose(np.abs(surface_axes(wall, cam)), flat, atol=1e-6)
    # Two walls: the near edge pixel's step along u stays on its own wall (no stretch across the step).
    rgb, depth, cam = _walls()
    pc = lift_to_points(rgb, depth, cam)
    axes = surface_axes(depth, cam).reshape(48, 64, 3, 3)
    size = pc.pixel_size.reshape(48, 64)
    np.testing.assert_allclose(np.linalg.norm(axes[:, 31, :, 0], axis=-1), size[:, 31], rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(axes[:, 32, :, 0], axis=-1), size[:, 32], rtol=1e-5)
    # The ground: the step along v runs along the ground (y constant) and is the central
    # difference of the neighbouring rows' points to first order; it projects to one pixel.
    rgb, depth, cam = _ground()
    pc = lift_to_points(rgb, depth, cam)
    xyz = pc.xyz.reshape(48, 64, 3).astype(np.float64)
    axes = surface_axes(depth, cam).reshape(48, 64, 3, 3).astype(np.float64)
    size = pc.pixel_size.reshape(48, 64)
    step = axes[40, 10, :, 1]
    central = 0.5 * (xyz[41, 10] - xyz[39, 10])
    assert abs(step[1]) < 1e-3 * np.linalg.norm(step)
    np.testing.assert_allclose(step, central, rtol=0.02, atol=1e-4)
    assert np.linalg.norm(step) > 3 * size[40, 10]  # rows far apart in depth: a long Gaussian
    p0 = xyz[40, 10]
    uv, _ = cam.project(np.stack([p0 - 1e-3 * step, p0 + 1e-3 * step]))
    np.testing.assert_allclose((uv[1] - uv[0]) / 2e-3, [0.0, 1.0], atol=1e-3)
    # Near the horizon the rows are farther apart than the cap: the step is shortened along its
    # ray only, so it still projects to one pixel and the Gaussian still covers its pixel.
    central = 0.5 * np.linalg.norm(xyz[2:, 10] - xyz[:-2, 10], axis=-1)
    length = np.linalg.norm(axes[1:-1, 10, :, 1], axis=-1)
    capped = [r + 1 for r in np.flatnonzero(central > 1.1 * SURFACE_STRETCH_MAX * size[1:-1, 10])
              if r + 1 > 25]  # below the sky's step
    assert capped and capped[-1] < 40, capped
    for r in capped:
        assert length[r - 1] <= (SURFACE_STRETCH_MAX + 1.5) * size[r, 10] < central[r - 1]
        step = axes[r, 10, :, 1]
        p0 = xyz[r, 10]
        uv, _ = cam.project(np.stack([p0 - 1e-3 * step, p0 + 1e-3 * step]))
        np.testing.assert_allclose((uv[1] - uv[0]) / 2e-3, [0.0, 1.0], atol=1e-3)
    normal = axes[40, 10, :, 2]
    assert abs(normal[1]) == pytest.approx(SURFACE_THICKNESS * size[40, 10], rel=1e-3)  # vertical


def test_surface_shaped_gaussians_keep_the_ground_covered_from_a_closer_camera() -> None:
    """Rows of the ground lie far apart in depth; a camera moved towards them and up sees isotropic
    splats part into half-covered lines (a renderer compositing over its world shows them dark),
    while splats lying on the surface tile it. From the photo's camera they cover it as well."""
    import torch

    from backend.model.gaussians import from_points
    from backend.stages.lift import surface_axes

    rgb, depth, cam = _ground()
    pc = lift_to_points(rgb, depth, cam)
    shaped = surface_axes(depth, cam) / pc.pixel_size[:, None, None]
    w2c = np.eye(4)
    w2c[1:3, 3] = 0.08, -0.24  # the up-down path's top and the zoom-in path's last camera at once
    moved = Camera(cam.K, cam.width, cam.height, w2c)
    ground = np.s_[30:-2, 2:-2]
    worst, mean, at_photo = [], [], []
    for axes in (None, shaped):
        g = from_points(pc.xyz, pc.rgb, pc.pixel_size * 0.5, opacity=0.99, axes=axes)
        with torch.no_grad():
            gap = 1.0 - g.render(moved).alpha.numpy()[..., 0][ground]
            at_photo.append(g.render(cam))
        worst.append(float(gap.max()))
        mean.append(float(gap.mean()))
    assert worst[0] > 0.05 and worst[1] < 0.5 * worst[0], worst  # 0.069 -> 0.029
    assert mean[1] < 0.4 * mean[0], mean  # 0.031 -> 0.010
    np.testing.assert_allclose(at_photo[1].alpha.numpy(), at_photo[0].alpha.numpy(), atol=0.01)
    # The stretch along the ray projects to nothing; only the normal's extent (the ball's) shows on
    # the slanted ground: on white noise, the worst case for blur, the error grows by 3%.
    err = [float(np.abs(r.rgb.numpy() - rgb).mean()) for r in at_photo]
    assert err[1] <= 1.05 * err[0], err
