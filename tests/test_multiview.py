"""Pseudo multi-view synthesis: pinhole placement, z-buffer, background-side hole filling, the fan."""
import time

import numpy as np
import pytest

from backend.model.camera import Camera, intrinsics_from_fov
from backend.infra.errors import LoopscapeError
from backend.infra.events import NullSink
from backend.stages.lift import lift_to_points
from backend.stages.multiview import (MultiViewSet, fill_holes, render_points_zbuffer, render_view, synthesize_views,
                               training_cameras)

W, H = 64, 48


def shifted(cam: Camera, t) -> Camera:
    """Camera moved to world position ``t`` with the same orientation."""
    w2c = np.eye(4)
    w2c[:3, 3] = -np.asarray(t, float)
    return cam.with_pose(w2c)


@pytest.fixture
def cam():
    return Camera(intrinsics_from_fov(W, H), W, H)


def landscape_depth(w: int, h: int) -> np.ndarray:
    """Ground plane receding to a sky shell at 20, a near tree and rock, a far hill (normalised)."""
    v = np.arange(h)[:, None] + 0.5
    u = np.arange(w)[None, :] + 0.5
    hor = 0.42 * h
    depth = np.minimum(np.where(v > hor, (h - hor) / np.maximum(v - hor, 1e-3), 20.0) * np.ones((1, w)), 20.0)
    tree = (u > 0.15 * w) & (u < 0.27 * w) & (v > 0.12 * h)
    depth = np.where(tree, np.minimum(depth, 1.3), depth)
    rock = ((u - 0.7 * w) / (0.12 * w)) ** 2 + ((v - 0.85 * h) / (0.12 * h)) ** 2 < 1
    depth = np.where(rock, np.minimum(depth, 1.05), depth)
    hill = (v > hor - 0.15 * h * np.exp(-((u - 0.5 * w) / (0.2 * w)) ** 2)) & (v <= hor + 2)
    depth = np.where(hill, np.minimum(depth, 8.0), depth)
    return depth / np.percentile(depth[depth < 20], 10)


def test_view0_reproduces_input_exactly(cam):
    rng = np.random.default_rng(0)
    rgb = rng.random((H, W, 3), dtype=np.float32)
    depth = landscape_depth(W, H) * (1 + 0.05 * rng.random((H, W)))
    pc = lift_to_points(rgb, depth, cam)
    image, dep, valid = render_points_zbuffer(pc.xyz, pc.rgb, cam, pc.pixel_size)
    assert valid.all()
    assert np.array_equal(image, rgb)
    np.testing.assert_allclose(dep, depth, rtol=1e-5)
    views = synthesize_views(pc.xyz, pc.rgb, pc.pixel_size, training_cameras(cam, n_views=3))
    assert np.array_equal(views.images[0], rgb) and views.valid[0].all()


def test_plane_lands_where_pinhole_math_says(cam):
    # a front-parallel plane at z = 2 with a bright 6x6 patch; move the camera right, down and forward
    rgb = np.zeros((H, W, 3), np.float32)
    rgb[20:26, 30:36] = 1.0
    pc = lift_to_points(rgb, np.full((H, W), 2.0), cam)
    patch = pc.rgb[:, 0] > 0.5
    for t in ([0.13, 0.0, 0.0], [0.0, 0.07, 0.0], [0.05, -0.03, 0.5]):
        view = shifted(cam, t)
        # render the world position of the winning point: each pixel must show the point whose
        # projection is nearest its centre, i.e. within half the projected point spacing per axis
        # (inside the projected plane: the margin dilates its outer edge by design)
        corners, _ = view.project(pc.xyz[[0, W - 1, W * (H - 1)]].astype(np.float64))
        inner = np.zeros((H, W), bool)
        cols = (np.arange(W) + 0.5 > corners[0, 0]) & (np.arange(W) + 0.5 < corners[1, 0])
        rows = (np.arange(H) + 0.5 > corners[0, 1]) & (np.arange(H) + 0.5 < corners[2, 1])
        inner[np.ix_(rows, cols)] = True
        xyz_img, _, valid = render_points_zbuffer(pc.xyz, pc.xyz, view, pc.pixel_size)
        uv, z = view.project(xyz_img[inner].astype(np.float64))
        ys, xs = np.nonzero(inner)
        spacing = 2.0 / z.mean()  # projected spacing of neighbouring points (pixels)
        err = np.abs(uv - np.stack([xs + 0.5, ys + 0.5], 1))
        assert err.max() <= 0.5 * spacing + 1e-3, (t, err.max())
        # the patch centroid agrees with the projected patch centroid to sampling accuracy
        image, _, _ = render_points_zbuffer(pc.xyz, pc.rgb, view, pc.pixel_size)
        want = view.project(pc.xyz[patch].astype(np.float64))[0].mean(axis=0)
        py, px = np.nonzero(image[..., 0] > 0.5)
        got = np.array([px.mean() + 0.5, py.mean() + 0.5])
        assert np.abs(got - want).max() <= 0.5 * spacing, (t, got, want)
        # the patch grows with 1/z: 6 * spacing pixels on a side, within a pixel
        assert abs(len(px) - (6 * spacing) ** 2) <= 2 * 6 * spacing + 1
        # no cracks: every pixel whose centre sees the plane is covered
        assert inner.sum() > 0.5 * H * W and valid[inner].all()


def occluder_scene(cam):
    """Red far plane at z = 3, green near square at z = 1 over columns 24..39, rows 16..31."""
    rgb = np.zeros((H, W, 3), np.float32)
    rgb[..., 0] = 1.0
    depth = np.full((H, W), 3.0)
    rgb[16:32, 24:40] = [0.0, 1.0, 0.0]
    depth[16:32, 24:40] = 1.0
    return lift_to_points(rgb, depth, cam)


def test_zbuffer_near_occluder_hides_far_plane(cam):
    pc = occluder_scene(cam)
    view = shifted(cam, [-0.1, 0.0, 0.0])  # camera left: the near square moves right by f*0.1 px
    image, depth, valid = render_points_zbuffer(pc.xyz, pc.rgb, view, pc.pixel_size)
    dx = view.K[0, 0] * 0.1  # near square shift in pixels (the far plane moves dx/3)
    cols = np.arange(W) + 0.5
    near_cols = (cols > 24 + dx + 0.5) & (cols < 40 + dx - 0.5)
    # the square now covers far-plane points (they were lifted everywhere outside it): green must win
    block = image[18:30][:, near_cols]
    assert np.all(block[..., 1] == 1.0) and np.all(block[..., 0] == 0.0)
    np.testing.assert_allclose(depth[18:30][:, near_cols], 1.0, rtol=1e-5)


def test_disocclusion_is_exactly_the_invalid_set_and_filled_with_background(cam):
    pc = occluder_scene(cam)
    view = shifted(cam, [-0.1, 0.0, 0.0])
    image, depth, valid = render_points_zbuffer(pc.xyz, pc.rgb, view, pc.pixel_size)
    f = view.K[0, 0]
    # left of the square a strip opens: far plane edge moved by f*0.1/3, square edge by f*0.1
    gap = f * 0.1 * (1.0 - 1.0 / 3.0)
    # the image's left border shows f*0.1/3 px of unseen far plane too
    border = f * 0.1 / 3.0
    holes = ~valid
    rows = np.arange(18, 30)
    for r in rows:
        n = holes[r].sum()
        assert abs(n - (gap + border)) <= 1.5, (r, n, gap + border)
    # rows away from the square only have the border strip
    assert abs(holes[5].sum() - border) <= 1.0
    assert np.isinf(depth[holes]).all() and np.isfinite(depth[valid]).all()
    assert np.all(image[holes] == 0.0)

    filled, fdep = fill_holes(image, depth, valid)
    # observed pixels untouched, holes take the far plane's red, not the occluder's green
    assert np.array_equal(filled[valid], image[valid])
    assert np.all(filled[holes][:, 0] > 0.95) and np.all(filled[holes][:, 1] < 0.05)
    np.testing.assert_allclose(fdep[holes], 3.0, rtol=1e-4)


def test_fill_prefers_background_across_a_thin_strip_not_a_far_region_along_it():
    # a 4-px vertical hole between ground (z=3, blue) and a tree (z=1, green), sky (z=20, white) above
    img = np.zeros((40, 30, 3), np.float32)
    dep = np.full((40, 30), 3.0, np.float32)
    img[:, :, 2] = 1.0
    img[:8] = 1.0
    dep[:8] = 20.0
    img[8:, 16:] = [0.0, 1.0, 0.0]
    dep[8:, 16:] = 1.0
    valid = np.ones((40, 30), bool)
    valid[8:, 12:16] = False
    filled, fdep = fill_holes(img, dep, valid)
    strip = filled[12:, 12:16]
    assert np.all(strip[..., 2] > 0.9) and np.all(strip[..., 1] < 0.1)
    np.testing.assert_allclose(fdep[12:, 12:16], 3.0, rtol=0.05)


def test_generic_channels_and_no_fill(cam):
    pc = occluder_scene(cam)
    mask = (pc.rgb[:, 1] > 0.5).astype(np.float32)  # a 1-D value per point, like the motion mask
    flow = np.stack([pc.xyz[:, 0], pc.xyz[:, 1]], 1)  # two channels, like a flow field
    view = shifted(cam, [-0.1, 0.0, 0.0])
    m, _, valid = render_view(pc.xyz, mask, view, pc.pixel_size, fill=False)
    # on a plane (equal sizes) one scalar world size renders exactly as the per-point sizes
    plane = lift_to_points(pc.rgb.reshape(H, W, 3), np.full((H, W), 2.0), cam)
    a = render_points_zbuffer(plane.xyz, plane.rgb, view, plane.pixel_size)
    b = render_points_zbuffer(plane.xyz, plane.rgb, view, float(plane.pixel_size[0]))
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and not a[2].all()
    assert m.shape == (H, W) and np.all(m[~valid] == 0)
    fl, _, valid2 = render_view(pc.xyz, flow, view, pc.pixel_size, fill=True)
    assert fl.shape == (H, W, 2) and np.array_equal(valid, valid2)
    # filled mask values come from the far plane (not moving)
    mf, _, _ = render_view(pc.xyz, mask, view, pc.pixel_size, fill=True)
    assert np.all(mf[~valid] == 0.0)
    assert m[24, int(32 + view.K[0, 0] * 0.1)] == 1.0


def test_training_cameras_fan(cam):
    cams = training_cameras(cam)
    assert len(cams) == 25
    assert np.array_equal(cams[0].w2c, np.eye(4)) and np.array_equal(cams[0].K, cam.K)
    centres = np.array([c.center for c in cams])
    assert len(np.unique(np.round(centres, 6), axis=0)) == 25
    # every view orbits the pivot at depth 2: it projects to the principal point
    for c in cams:
        uv, z = c.project(np.array([[0.0, 0.0, 2.0]]))
        np.testing.assert_allclose(uv[0], cam.K[:2, 2], atol=1e-6)
        R = c.w2c[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
    # the fan covers the evaluation paths sideways (0.09) and up-down (0.08) but stays small
    assert np.abs(centres[:, 0]).max() > 0.09 and np.abs(centres[:, 1]).max() > 0.08
    assert np.linalg.norm(centres, axis=1).max() < 0.2
    # translations scale with the scene, angles do not
    big = training_cameras(cam, scene_scale=3.0)
    np.testing.assert_allclose(np.array([c.center for c in big]), 3 * centres, atol=1e-9)
    draft = training_cameras(cam, n_views=9)
    assert [np.array_equal(a.w2c, b.w2c) for a, b in zip(draft, cams)] == [True] * 9
    for bad in (0, 26):
        with pytest.raises(LoopscapeError):
            training_cameras(cam, n_views=bad)
    # a non-identity input camera: the fan is expressed relative to it
    moved = shifted(cam, [1.0, 2.0, 3.0])
    rel = training_cameras(moved)
    np.testing.assert_allclose(np.array([c.center for c in rel]), centres + [1.0, 2.0, 3.0], atol=1e-9)


def test_landscape_holes_speed_and_events():
    w, h = 256, 170
    K = intrinsics_from_fov(w, h)
    cam = Camera(K, w, h)
    depth = landscape_depth(w, h)
    rng = np.random.default_rng(1)
    pc = lift_to_points(rng.random((h, w, 3), dtype=np.float32), depth, cam)
    cams = training_cameras(cam)
    t0 = time.perf_counter()
    render_view(pc.xyz, pc.rgb, cams[7], pc.pixel_size)
    assert time.perf_counter() - t0 < 1.0  # 43k points at 256x170, render + fill
    sink = NullSink()
    seen = []
    sink.listeners.append(seen.append)
    views = synthesize_views(pc.xyz, pc.rgb, pc.pixel_size, cams, events=sink)
    fracs = [e["fraction"] for e in seen if e["event"] == "progress" and e["stage"] == "multiview"]
    assert len(fracs) == 25 and fracs[-1] == 1.0 and fracs == sorted(fracs)
    holes = views.hole_fractions()
    assert holes[0] == 0.0
    # moderate holes with the default fan (measured 9.8% mean, 25.6% worst); the paper's turns leave ~49%
    assert holes.mean() < 0.13 and holes.max() < 0.3
    paper = training_cameras(cam, yaw_deg=20, pitch_deg=22.5, orbit_deg=5, pivot_depth=1e-6)
    ph = synthesize_views(pc.xyz, pc.rgb, pc.pixel_size, paper[:5]).hole_fractions()
    assert ph.mean() > 2 * holes[:5].mean()
    assert views.images.dtype == np.float32 and views.images.min() >= 0 and views.images.max() <= 1
    assert np.isfinite(views.depths).all() and (views.depths > 0).all()


def test_multiview_set_save_load(tmp_path, cam):
    pc = occluder_scene(cam)
    views = synthesize_views(pc.xyz, pc.rgb, pc.pixel_size, training_cameras(cam, n_views=3))
    views.save(tmp_path / "views.npz")
    back = MultiViewSet.load(tmp_path / "views.npz")
    assert len(back) == 3 and np.array_equal(back.images, views.images) and np.array_equal(back.valid, views.valid)
    np.testing.assert_allclose(back.cameras[2].w2c, views.cameras[2].w2c)


def _smooth_texture(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    import cv2

    noise = cv2.GaussianBlur(np.random.default_rng(seed).random((h, w, 3)).astype(np.float32), (0, 0), 2.0)
    return np.clip((noise - noise.mean()) * 4 + 0.5 + np.linspace(0, 0.2, w)[None, :, None], 0, 1).astype(np.float32)


def test_holes_past_the_frame_are_inpainted_and_continue_the_texture_closer_to_the_truth():
    """Past the frame there is nothing to choose between, and the background-side rule's rows of
    edge colour read as streaks across slanted structure (ripples, furrows): inpainting continues
    its isophotes, closer to the truth."""
    from backend.tools.metrics.image import psnr

    valid = np.ones((48, 64), bool)
    valid[:, :6] = False  # a strip past the left edge and one past the bottom, as a turned camera sees
    valid[-5:] = False
    y, x = np.mgrid[:48, :64].astype(np.float32)
    for seed in range(3):
        ripples = 0.5 + 0.3 * np.sin(2 * np.pi * (x + (1 + seed) * y) / 12 + seed)
        truth = np.clip(0.5 * _smooth_texture(seed) + 0.5 * ripples[..., None], 0, 1)
        img = np.where(valid[..., None], truth, 0.0).astype(np.float32)
        dep = np.full((48, 64), 2.0, np.float32)
        new = fill_holes(img, dep, valid, inpaint=True)[0]
        rule = fill_holes(img, dep, valid)[0]
        assert psnr(new, truth, ~valid) > psnr(rule, truth, ~valid) + 0.8  # +1.75 to +1.85 dB
        np.testing.assert_array_equal(new[valid], img[valid])


def test_a_disocclusion_is_inpainted_from_the_surface_behind_not_the_occluder():
    """A strip uncovered beside a near rock has the ground on both sides along its rows only where
    the rock is not: plain inpainting draws the rock's colour into it, the depth-guided fill leaves
    the rock's rim out of its sources and continues the ground's texture."""
    import cv2

    from backend.tools.metrics.image import psnr

    gains, plain_gains = [], []
    for seed in range(3):
        ground = _smooth_texture(seed)
        img = ground.copy()
        dep = np.full((48, 64), 4.0, np.float32)
        img[10:38, 34:50] = [0.9, 0.6, 0.2]  # the rock, orange, z = 1
        dep[10:38, 34:50] = 1.0
        valid = np.ones((48, 64), bool)
        valid[12:36, 29:34] = False  # the strip the moved camera uncovers beside it
        hole = ~valid
        new = fill_holes(np.where(valid[..., None], img, 0.0), dep, valid, inpaint=True)[0]
        rule = fill_holes(np.where(valid[..., None], img, 0.0), dep, valid)[0]
        u8 = np.round(img * 255).astype(np.uint8)
        plain = cv2.inpaint(u8, hole.astype(np.uint8), 3, cv2.INPAINT_NS).astype(np.float32) / 255
        gains.append(psnr(new, ground, hole) - psnr(rule, ground, hole))
        plain_gains.append(psnr(new, ground, hole) - psnr(plain, ground, hole))
        orange = (new[hole, 0] - new[hole, 2] > 0.5).mean()
        assert orange < 0.02, orange  # the rock's colour stays on the rock
    assert min(plain_gains) > 1.0  # +1.9 to +4.5 dB over inpainting from every observed pixel
    assert np.mean(gains) > 0.5  # +0.08, +1.05, +1.12 dB over the rule's edge colours


@pytest.mark.parametrize("rows", [slice(8, None), slice(0, None)], ids=["to the bottom edge", "frame high"])
def test_a_disocclusion_that_reaches_the_frame_keeps_the_background(rows):
    """A strip beside a tree trunk that reaches the frame's edge has the ground on one side and the
    trunk on the other: the ground is the surface behind, and the trunk's colour stays out."""
    img = np.zeros((40, 30, 3), np.float32)
    dep = np.full((40, 30), 3.0, np.float32)
    img[:, :, 2] = 1.0  # ground, blue, z = 3
    img[rows, 16:] = [0.0, 1.0, 0.0]  # the trunk, green, z = 1
    dep[rows, 16:] = 1.0
    valid = np.ones((40, 30), bool)
    valid[rows, 12:16] = False
    strip = fill_holes(img, dep, valid, inpaint=True)[0][12:, 12:16]
    assert np.all(strip[..., 2] > 0.9) and np.all(strip[..., 1] < 0.1)
