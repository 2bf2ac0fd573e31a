"""The ring of Gaussians past the photo's frame is continuous scenery, not a grid of dots."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from backend.model.camera import Camera, intrinsics_from_fov
from backend.stages import gaussians3d
from backend.stages.lift import MARGIN_SHIFT, lift_to_points

W, H = 64, 48


def _margin_coverage() -> np.ndarray:
    """Alpha of the untrained margin Gaussians alone, seen by a camera with twice the photo's field
    of view at four times its resolution (each photo pixel 2 px wide, as a camera that moved in sees
    it), over the band the ring covers (its outer pixel and the seam at the photo's edge left out)."""
    rng = np.random.default_rng(0)
    rgb = rng.uniform(0.2, 0.8, (H, W, 3)).astype(np.float32)
    depth = np.linspace(1.0, 3.0, H, dtype=np.float32)[:, None].repeat(W, 1)  # near at the top: a tilted plane
    cam = Camera(intrinsics_from_fov(W, H, 50.0), W, H)
    lift = lift_to_points(rgb, depth, cam)
    g = gaussians3d.initial_gaussians(SimpleNamespace(rgb=rgb, camera=cam), SimpleNamespace(depth=depth), lift, None)
    ring = g.subset(torch.arange(len(lift), len(g)))
    wide_K = cam.K.copy()
    wide_K[:2, :2] *= 0.5
    wide = Camera(wide_K, W, H).scaled(4 * W, 4 * H)
    with torch.no_grad():
        alpha = ring.render(wide).alpha[..., 0].numpy()
    m = 2 * int(np.ceil(MARGIN_SHIFT * cam.K[0, 0]))  # ring width in wide-view pixels
    inner = np.zeros_like(alpha, bool)
    inner[H - m + 1:3 * H + m - 1, W - m + 1:3 * W + m - 1] = True
    photo = np.zeros_like(alpha, bool)
    photo[H - 2:3 * H + 2, W - 2:3 * W + 2] = True  # the photo (at 2 px per pixel) and a seam
    return alpha[inner & ~photo]


def test_margin_ring_covers_the_view_past_the_photo():
    band = _margin_coverage()
    assert band.size > 500
    assert np.quantile(band, 0.05) > 0.85, np.quantile(band, [0.01, 0.05, 0.5])


def test_narrow_margin_gaussians_leave_gaps(monkeypatch: pytest.MonkeyPatch):
    """The check above sees the old start (0.3 of the spacing) as the grid it was."""
    monkeypatch.setattr(gaussians3d, "MARGIN_INIT_SCALE", 0.3)
    assert np.quantile(_margin_coverage(), 0.05) < 0.6


def test_margin_fluid_flows_on_past_the_photo():
    """The ring continues the photo's water (the lower half, flowing right) and moves with it: a
    camera that sees past the photo's edge sees that water flow and the land above it stay still."""
    from backend.model.motion_field import VelocityField, loop_gaussians

    rng = np.random.default_rng(1)
    rgb = rng.uniform(0.2, 0.8, (H, W, 3)).astype(np.float32)
    depth = np.linspace(3.0, 1.0, H, dtype=np.float32)[:, None].repeat(W, 1)  # a ground plane, near below
    cam = Camera(intrinsics_from_fov(W, H, 50.0), W, H)
    mask = np.zeros((H, W), bool)
    mask[H // 2:] = True
    lift = lift_to_points(rgb, depth, cam)
    g = gaussians3d.initial_gaussians(SimpleNamespace(rgb=rgb, camera=cam), SimpleNamespace(depth=depth), lift, mask)
    ring = torch.arange(len(g)) >= len(lift)  # a smooth plane has no depth edge to fill behind: all ring
    # The ring's fluid is the mask reflected past the edge: the lower rows' ring moves, the upper's does not.
    v = cam.project(g.means[ring].numpy().astype(np.float64))[0][:, 1]
    moving = g.moving[ring].numpy()
    assert moving[v > H // 2 + 1].all() and not moving[v < H // 2 - 1].any()
    vel = np.zeros((H, W, 3), np.float32)
    vel[..., 0] = 1.5 * depth / cam.K[0, 0]  # 1.5 px per frame to the right at every depth
    loop = loop_gaussians(g, VelocityField(vel * mask[..., None], cam, mask), 8)
    wide_K = cam.K.copy()
    wide_K[:2, :2] *= 0.5
    wide = Camera(wide_K, W, H).scaled(2 * W, 2 * H)  # the photo fills the middle half; the ring shows round it
    with torch.no_grad():
        f0, f4 = (loop.frame(t).render(wide).rgb.numpy() for t in (0, 4))
    m = int(np.ceil(MARGIN_SHIFT * cam.K[0, 0]))  # ring width: one wide-view pixel per photo pixel (half the focal, twice the size)
    right = slice(3 * W // 2 + 2, 3 * W // 2 + m - 1)
    water = np.abs(f4 - f0)[H + 4:3 * H // 2 + m - 2, right].mean()
    land = np.abs(f4 - f0)[H // 2 + 2:H - 4, right].mean()
    assert water > 0.05, water
    assert land < 1e-4, land
