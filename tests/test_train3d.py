"""The 3D Gaussian optimisation really optimises: loss falls, PSNR rises, density control works."""
import numpy as np
import pytest
import torch

from backend.model.camera import Camera, intrinsics_from_fov, look_at_w2c
from backend.model.gaussians import Gaussians, from_points
from backend.model.losses import psnr
from backend.stages.gaussians3d import DensityControl, TrainConfig, TrainViews, train_gaussians

W, H = 64, 48


def _scene():
    """Ground truth: a textured plane at depth 2 with a box-like patch in front, as Gaussians."""
    K = intrinsics_from_fov(W, H, 50.0)
    cam0 = Camera(K, W, H)
    ys, xs = np.mgrid[0:H, 0:W]
    z = np.full((H, W), 2.0)
    z[14:30, 20:40] = 1.4
    x = (xs + 0.5 - K[0, 2]) / K[0, 0] * z
    y = (ys + 0.5 - K[1, 2]) / K[1, 1] * z
    xyz = np.stack([x, y, z], -1).reshape(-1, 3)
    rgb = np.stack([0.5 + 0.4 * np.sin(xs / 3.0), 0.5 + 0.4 * np.cos(ys / 4.0), (xs + ys) % 7 / 7.0], -1).reshape(-1, 3)
    size = (z / K[0, 0]).reshape(-1)
    gt = from_points(xyz, rgb, size * 0.6, opacity=0.95)
    cams = [cam0] + [cam0.with_pose(look_at_w2c(np.array([dx, dy, 0.0]), np.array([0, 0, 2.0])))
                     for dx, dy in [(0.15, 0), (-0.15, 0), (0, 0.12)]]
    with torch.no_grad():
        imgs = torch.stack([gt.render(c).rgb.clamp(0, 1) for c in cams])
    return gt, cams, imgs, xyz, rgb, size


def test_loss_falls_and_psnr_rises():
    gt, cams, imgs, xyz, rgb, size = _scene()
    rng = np.random.default_rng(0)
    # Start from a degraded copy: wrong colours, sizes and positions.
    init = from_points(xyz + rng.normal(0, 0.01, xyz.shape), np.clip(rgb * 0.5 + 0.25, 0, 1), size * 1.5, opacity=0.5)
    views = TrainViews(cams, imgs, torch.ones(imgs.shape[:3], dtype=torch.bool))
    before = [psnr(init.render(c).rgb.clamp(0, 1), imgs[i]) for i, c in enumerate(cams)]
    trained, report = train_gaussians(init, views, TrainConfig(iters=120, refine_start=10_000))
    after = report.psnr_per_view
    assert np.mean(report.losses[-10:]) < 0.5 * np.mean(report.losses[:10])
    assert all(a > b + 3.0 for a, b in zip(after, before)), (before, after)
    hist = report.psnr_input_history
    assert hist[-1][1] > hist[0][1] + 3.0
    assert report.psnr_input_view > 25.0


def test_densification_clones_splits_and_prunes():
    gt, cams, imgs, xyz, rgb, size = _scene()
    sub = np.arange(0, len(xyz), 4)  # too few Gaussians: the optimiser must add some
    init = from_points(xyz[sub], rgb[sub], size[sub] * 1.2, opacity=0.6)
    init.logit_opacities[:50] = -8.0  # nearly transparent: must be pruned
    views = TrainViews(cams, imgs, torch.ones(imgs.shape[:3], dtype=torch.bool))
    cfg = TrainConfig(iters=90, refine_start=30, refine_every=30, refine_stop=80, grow_grad2d=1e-5)
    trained, report = train_gaussians(init, views, cfg)
    assert len(trained) > len(init)
    assert report.psnr_input_view > 22.0


def test_opacity_reset_fires():
    gt, cams, imgs, *_ = _scene()
    g = gt.detach()
    for k in g.param_names:
        setattr(g, k, torch.nn.Parameter(getattr(g, k)))
    opt = torch.optim.Adam([{"params": [getattr(g, k)], "name": k} for k in g.param_names])
    DensityControl.reset_opacity(g, opt, 0.01)
    assert torch.sigmoid(g.logit_opacities).max() <= 0.01 + 1e-6


def _views_and_start():
    gt, cams, imgs, xyz, rgb, size = _scene()
    rng = np.random.default_rng(0)
    init = from_points(xyz + rng.normal(0, 0.01, xyz.shape), np.clip(rgb * 0.5 + 0.25, 0, 1), size * 1.5, opacity=0.5)
    return init, TrainViews(cams, imgs, torch.ones(imgs.shape[:3], dtype=torch.bool))


class _Warnings:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def warning(self, message: str, **_fields) -> None:
        self.messages.append(message)

    def __getattr__(self, _name):  # progress, log: not needed here
        return lambda *a, **k: None


@pytest.mark.parametrize("rates, kept", [
    ({"lr_means": 50.0, "lr_scales": 30.0, "lr_opacities": 50.0, "lr_sh0": 50.0}, "snapshot"),  # NaN parameters
    ({"lr_sh0": 20.0}, "initial"),  # finite, but worse than the start
])
def test_exploding_learning_rates_never_end_worse_than_the_start(rates, kept):
    init, views = _views_and_start()
    start = [psnr(init.render(c).rgb.clamp(0, 1), views.images[i]) for i, c in enumerate(views.cameras)]
    events = _Warnings()
    trained, report = train_gaussians(init, views, TrainConfig(iters=40, refine_start=10_000, **rates), events=events)
    assert report.kept == kept
    assert np.mean(report.psnr_per_view) >= np.mean(start) - 1e-6
    assert all(torch.isfinite(getattr(trained, k)).all() for k in trained.param_names)
    assert events.messages and "3D training" in events.messages[-1]


def test_steps_with_a_non_finite_loss_are_skipped(monkeypatch):
    from backend.stages import gaussians3d

    real = gaussians3d.photometric_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] % 5 == 0 else loss

    monkeypatch.setattr(gaussians3d, "photometric_loss", sometimes_nan)
    init, views = _views_and_start()
    events = _Warnings()
    trained, report = train_gaussians(init, views, TrainConfig(iters=60, refine_start=10_000), events=events)
    assert report.skipped_steps == 12 and report.kept == "trained"
    assert len(report.losses) == 48 and np.mean(report.losses[-5:]) < np.mean(report.losses[:5])
    assert any("skipped 12 of 60" in m for m in events.messages)


def test_from_points_shapes_gaussians_by_their_axes():
    """Axes (in footprints) become the covariance A A^T times the footprint squared; the identity
    is the isotropic Gaussian."""
    from backend.render.raster_cpu import quat_to_rotmat

    rng = np.random.default_rng(3)
    n = 500
    xyz, rgb = rng.normal(size=(n, 3)), rng.random((n, 3))
    size = rng.uniform(0.01, 0.1, n)
    axes = rng.normal(size=(n, 3, 3))
    g = from_points(xyz, rgb, size, axes=axes)
    R = quat_to_rotmat(g.quats.double()).numpy()
    s2 = np.exp(2 * g.log_scales.double().numpy())
    cov = R @ (s2[:, :, None] * np.eye(3)) @ np.swapaxes(R, 1, 2)
    want = size[:, None, None] ** 2 * (axes @ np.swapaxes(axes, 1, 2))
    np.testing.assert_allclose(cov, want, rtol=1e-4, atol=1e-6 * want.max())
    iso = from_points(xyz, rgb, size)
    eye = from_points(xyz, rgb, size, axes=np.broadcast_to(np.eye(3), (n, 3, 3)))
    np.testing.assert_allclose(np.exp(eye.log_scales.numpy()), np.exp(iso.log_scales.numpy()), rtol=1e-5)
    R_eye = quat_to_rotmat(eye.quats).numpy()
    np.testing.assert_allclose(R_eye @ np.swapaxes(R_eye, 1, 2), np.broadcast_to(np.eye(3), (n, 3, 3)), atol=1e-5)


def test_coverage_cameras_close_the_gaps_a_closer_camera_sees():
    """A camera moved towards slanted ground magnifies the Gaussians but not the renderer's
    screen-space dilation, so the photo's fit shows gaps there. Training with that camera as a
    coverage camera (alpha only, no image) closes them; the photo keeps its fit."""
    from backend.stages.gaussians3d import _coverage_term, coverage_cameras, coverage_loss
    from backend.stages.lift import lift_to_points, surface_axes
    from test_lift import _ground

    rgb, depth, cam = _ground()
    pc = lift_to_points(rgb, depth, cam)
    init = from_points(pc.xyz, pc.rgb, pc.pixel_size * 0.3, opacity=0.9,
                       axes=surface_axes(depth, cam) / pc.pixel_size[:, None, None])
    w2c = np.eye(4)
    w2c[1:3, 3] = 0.08, -0.24  # the up-down path's top and the zoom-in path's end at once
    moved = Camera(cam.K, cam.width, cam.height, w2c)
    photo = torch.as_tensor(rgb)
    views = TrainViews([cam], photo[None], torch.ones((1, H, W), dtype=torch.bool), coverage_cameras=[moved])
    ground = np.s_[30:-2, 2:-2]
    gap, fit = [], []
    for weight in (0.0, 1.0):
        g, report = train_gaussians(init, views, TrainConfig(iters=60, refine_start=10_000, coverage_weight=weight))
        with torch.no_grad():
            gap.append(1.0 - g.render(moved).alpha.numpy()[..., 0][ground])
        fit.append(report.psnr_input_view)
    assert gap[1].mean() < 0.6 * gap[0].mean(), (gap[0].mean(), gap[1].mean())  # 0.177 -> 0.093
    assert gap[1].max() < 0.6 * gap[0].max(), (gap[0].max(), gap[1].max())  # 0.48 -> 0.23
    assert fit[1] > fit[0] - 1.0, fit  # white noise, the worst case for wider Gaussians: 19.9 -> 19.5 dB
    # The term asks only partly covered pixels for coverage: holes and opaque pixels cost nothing.
    alpha = torch.tensor([[0.0], [0.2], [0.5], [1.0]])
    assert float(coverage_loss(alpha)) == pytest.approx(0.5 / 4)
    # The term trains the static Gaussians only, away from the moving ones' footprint: the moving
    # ones keep their place and shape, and static ones are not grown into the moving region.
    with torch.no_grad():
        bg = torch.zeros(3)
        assert float(_coverage_term(init, moved, bg)) == pytest.approx(float(coverage_loss(init.render(moved).alpha)))
        assert float(coverage_loss(init.render(moved).alpha)) > 0.01
        every = init.subset(torch.arange(len(init)))
        every.moving = torch.ones(len(init), dtype=torch.bool)
        assert float(_coverage_term(every, moved, bg)) == 0.0
    half = init.subset(torch.arange(len(init)))
    half.moving = torch.arange(len(init)) % 2 == 0
    for k in g.param_names:
        setattr(half, k, getattr(half, k).detach().requires_grad_(True))
    g = half.with_moving_detached()
    coverage_loss(g.render(moved).alpha).backward()
    for k in ("means", "log_scales", "logit_opacities"):
        grad = getattr(half, k).grad
        assert float(grad[half.moving].abs().max()) == 0.0 and float(grad[~half.moving].abs().max()) > 0.0
    # The stage's coverage cameras: both ends of up-down and side, zoom-in's end, the circle's nearest.
    moves = np.array([c.w2c[:3, 3] for c in coverage_cameras(cam)])
    assert len(moves) == 6 and moves[:, 2].min() == pytest.approx(-0.24)


def test_wider_moving_starts_follow_a_half_pixel_step_better():
    """The loop carries the moving Gaussians by fractions of a pixel. Fitted to a water-like
    texture from MOVING_INIT_SCALE instead of INIT_SCALE and then moved half a pixel, they match the
    photo resampled half a pixel over more closely, at a small cost in the photo's own fit."""
    import cv2

    from backend.stages import gaussians3d
    from backend.stages.lift import lift_to_points, surface_axes

    rng = np.random.default_rng(0)
    K = intrinsics_from_fov(W, H, 50.0)
    cam = Camera(K, W, H)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    rgb = np.full((H, W, 3), 0.5, np.float32)
    for c in range(3):  # ripples of 5-30 px wavelength in random directions
        for _ in range(6):
            fx, fy = rng.uniform(0.2, 1.2, 2)
            rgb[..., c] += np.sin(fx * xs + fy * ys + rng.uniform(0, 2 * np.pi)).astype(np.float32) / 12
    depth = np.full((H, W), 2.0, np.float32)
    pc = lift_to_points(rgb, depth, cam)
    axes = surface_axes(depth, cam) / pc.pixel_size[:, None, None]
    views = TrainViews([cam], torch.as_tensor(rgb)[None], torch.ones((1, H, W), dtype=torch.bool))
    target = torch.as_tensor(cv2.remap(rgb, xs - 0.5, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    step = torch.tensor([0.5 * 2.0 / K[0, 0], 0.0, 0.0])  # half a pixel at depth 2
    inner = np.s_[4:-4, 4:-4]
    photo, moved = [], []
    for scale in (gaussians3d.INIT_SCALE, gaussians3d.MOVING_INIT_SCALE):
        init = from_points(pc.xyz, pc.rgb, pc.pixel_size * scale, opacity=0.9, axes=axes)
        g, report = train_gaussians(init, views, TrainConfig(iters=60, refine_start=10_000, coverage_weight=0.0))
        g.means = g.means + step.to(g.means.dtype)
        with torch.no_grad():
            moved.append(psnr(g.render(cam).rgb.clamp(0, 1)[inner], target[inner]))
        photo.append(report.psnr_input_view)
    assert moved[1] > moved[0] + 0.3, moved  # 28.99 -> 29.52 dB
    assert photo[1] > photo[0] - 1.5, photo  # 32.28 -> 31.49 dB


def test_only_the_mask_interior_starts_wider():
    """Moving points with all four neighbours in the mask start at MOVING_INIT_SCALE; those on the
    mask's edge and the static ones keep INIT_SCALE (wider, they would spill over static pixels)."""
    from types import SimpleNamespace

    from backend.stages import gaussians3d
    from backend.stages.lift import lift_to_points

    cam = Camera(intrinsics_from_fov(W, H, 50.0), W, H)
    rgb = np.random.default_rng(1).random((H, W, 3)).astype(np.float32)
    depth = np.full((H, W), 2.0, np.float32)
    mask = np.zeros((H, W), bool)
    mask[10:30, 20:50] = True
    lift = lift_to_points(rgb, depth, cam)
    g = gaussians3d.initial_gaussians(SimpleNamespace(rgb=rgb, camera=cam), SimpleNamespace(depth=depth), lift, mask)
    width = np.exp(g.log_scales.detach().numpy()[: len(lift)]).max(-1) / lift.pixel_size
    share = np.full((H, W), np.nan)
    share.reshape(-1)[lift.pixel] = width
    assert share[11:29, 21:49] == pytest.approx(gaussians3d.MOVING_INIT_SCALE, rel=1e-4)
    for edge in (share[10, 20:50], share[29, 20:50], share[10:30, 20], share[10:30, 49], share[:8], share[:, :18]):
        assert edge[np.isfinite(edge)] == pytest.approx(gaussians3d.INIT_SCALE, rel=1e-4)
    assert int(g.moving[: len(lift)].sum()) == int(mask.sum())  # only the size differs at the edge, not the flag
