"""Frames of a moved camera: pixels no Gaussian covers are filled from the background side."""
import numpy as np
import torch

from backend.model.camera import Camera, intrinsics_from_fov
from backend.model.gaussians import from_points
from backend.stages.lift import lift_to_points
from backend.tools.metrics.image import psnr
from backend.render.fill import composite_over_fill

W, H = 64, 48


def _texture(width: int, height: int, x0: float) -> np.ndarray:
    """Smooth colour field over pixel columns x0 .. x0 + width (so wider images extend it)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs = xs + x0
    return np.stack([0.5 + 0.3 * np.sin(xs / 17.0), 0.4 + 0.3 * ys / height, 0.5 + 0.2 * np.cos((xs + ys) / 23.0)],
                    -1).astype(np.float32)


def _scene(width: int, x0: float, cam: Camera):
    rgb = _texture(width, H, x0)
    depth = np.full((H, width), 4.0, np.float32)  # a wall facing the camera
    pc = lift_to_points(rgb, depth, cam)
    return from_points(pc.xyz, pc.rgb, pc.pixel_size * 1.2, opacity=0.99)


def test_uncovered_border_is_filled_and_covered_pixels_are_kept():
    K = intrinsics_from_fov(W, H, 50.0)
    g = _scene(W, 0.0, Camera(K, W, H))
    # The true wall is 32 px wider on each side: the reference for what the moved camera should see.
    pad = 32
    Kw = K.copy()
    Kw[0, 2] += pad
    wide = _scene(W + 2 * pad, -pad, Camera(Kw, W + 2 * pad, H))
    w2c = np.eye(4)
    w2c[0, 3] = -0.6  # the camera moves 0.6 units right: ~7 px of the left border are uncovered
    cam = Camera(K, W, H, w2c)
    with torch.no_grad():
        r = g.render(cam, background=torch.zeros(3))
        ref = wide.render(cam, background=torch.zeros(3)).rgb.numpy()
    rgb, a, z = r.rgb.numpy(), r.alpha.numpy()[..., 0], r.depth.numpy()[..., 0]
    out, uncovered = composite_over_fill(rgb, a, z)
    holes = a < 0.5
    assert 0.05 < uncovered < 0.3 and abs(uncovered - holes.mean()) < 1e-9
    assert rgb[holes].max() < 0.3  # rendered over black
    raw_db, fill_db = psnr(rgb[holes], ref[holes]), psnr(out[holes], ref[holes])
    print(f"\nuncovered {uncovered:.3f}: raw {raw_db:.1f} dB, filled {fill_db:.1f} dB against the wider wall")
    assert fill_db > raw_db + 10.0, (raw_db, fill_db)
    assert fill_db > 24.0, fill_db
    solid = a > 0.999
    np.testing.assert_allclose(out[solid], rgb[solid], atol=1e-3)
    # Nothing to fill: returned as it is.
    same, none = composite_over_fill(ref, np.ones((H, W)), np.full((H, W), 4.0))
    assert none == 0.0 and np.array_equal(same, ref)


def test_a_crack_at_a_depth_step_shows_the_surfaces_not_black():
    """A moved camera sees between a near and a far wall through a crack narrower than a pixel. No
    pixel is uncovered, so nothing is filled, yet the crack's pixels are only ~3/4 opaque: over black
    they were a dark line down the frame (seen on the real scene 3dmom_scene_0's circle path)."""
    K = intrinsics_from_fov(W, H, 50.0)
    grey = np.full((H, W, 3), 0.6, np.float32)  # both walls the same grey: the crack's truth is that grey
    depth = np.full((H, W), 4.0, np.float32)
    depth[:, : W // 2] = 2.0  # the left half is a nearer wall
    pc = lift_to_points(grey, depth, Camera(K, W, H))
    g = from_points(pc.xyz, pc.rgb, pc.pixel_size * 0.5, opacity=0.99)  # trained splats are about this small
    w2c = np.eye(4)
    w2c[0, 3] = -0.06  # the step opens by ~1 px: the near wall moves 2 px, the far one 1 px
    with torch.no_grad():
        r = g.render(Camera(K, W, H, w2c), background=torch.zeros(3))
    rgb, a = r.rgb.numpy(), r.alpha.numpy()[..., 0]
    out, uncovered = composite_over_fill(rgb, a, r.depth.numpy()[..., 0])
    crack = (a >= 0.5) & (a < 0.9)
    assert uncovered == 0.0 and crack.sum() >= H - 2, (uncovered, crack.sum())
    assert rgb[crack].mean() < 0.55  # the scene does show the crack over black
    assert np.abs(out[crack] - 0.6).max() < 0.01
    solid = a > 0.999
    np.testing.assert_allclose(out[solid], rgb[solid], atol=1e-3)


def test_the_path_report_counts_what_blender_would_see_through():
    """The render stage reports, per path frame, the pixels no Gaussian covers (the backend fills
    them) and the covered ones below alpha 0.9 (the backend un-premultiplies them; Blender, which
    composites over its world, lets a tenth or more of the world through). The crack scene: none
    of either from the photo's camera, the crack's column from the moved one."""
    from types import SimpleNamespace

    from backend.infra.events import NullSink
    from backend.stages import render

    K = intrinsics_from_fov(W, H, 50.0)
    grey = np.full((H, W, 3), 0.6, np.float32)
    depth = np.full((H, W), 4.0, np.float32)
    depth[:, : W // 2] = 2.0
    pc = lift_to_points(grey, depth, Camera(K, W, H))
    g = from_points(pc.xyz, pc.rgb, pc.pixel_size * 0.5, opacity=0.99)
    w2c = np.eye(4)
    w2c[0, 3] = -0.06
    path = [Camera(K, W, H), Camera(K, W, H, w2c)]
    ctx = SimpleNamespace(device=torch.device("cpu"), events=NullSink())
    video = render.run(ctx, path, SimpleNamespace(gaussians=g), None)
    assert len(video.frames) == 2 and video.frames[1].shape == (H, W, 3)
    assert video.see_through[0] == 0.0
    assert (H - 2) / (H * W) <= video.see_through[1] < 3 * H / (H * W), video.see_through  # one column
    rep = render.report(video)
    assert rep["path_see_through_fraction_max"] == round(video.see_through[1], 5)
    assert rep["path_see_through_fraction_mean"] == round(video.see_through[1] / 2, 5)
    assert rep["path_uncovered_fraction_max"] == round(max(video.uncovered), 5)
