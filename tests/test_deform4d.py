"""The HexPlane deformation: plane orientation, zero start, loop closure, static Gaussians, regularisers."""
import numpy as np
import pytest
import torch

from backend.model.camera import Camera, intrinsics_from_fov
from backend.model.deform4d import PLANES, DeformConfig, Deformation4D, HexPlane, bake, deform_frame
from backend.model.gaussians import from_points
from backend.model.losses import psnr
from backend.model.motion_field import VelocityField, loop_gaussians

W, H, N = 24, 16, 6


def make_loop():
    K = intrinsics_from_fov(W, H, 50.0)
    cam = Camera(K, W, H)
    rng = np.random.default_rng(1)
    ys, xs = np.mgrid[0:H, 0:W]
    z = 2.0 + 0.01 * rng.random(H * W)
    uv = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], 1)
    xyz = np.concatenate([(uv - K[:2, 2]) / K[0, 0] * z[:, None], z[:, None]], 1).astype(np.float32)
    moving = ys.ravel() >= H // 2
    g = from_points(xyz, rng.random((H * W, 3)).astype(np.float32), (z / K[0, 0]).astype(np.float32) * 1.2,
                    opacity=0.95, moving=moving)
    vel = np.zeros((H, W, 3), np.float32)
    vel[..., 0] = 0.7 * 2.0 / K[0, 0]
    mask = ys >= H // 2
    return g, loop_gaussians(g, VelocityField(vel, cam, mask), N), cam


def randomise(deform: Deformation4D, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in deform.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))


def test_planes_are_sampled_along_the_right_axes():
    hp = HexPlane(features=2, resolutions=[5], time_resolution=7)
    with torch.no_grad():
        for p in hp.levels[0]:
            p.fill_(1.0)
        xy = hp.levels[0][PLANES.index((0, 1))]
        xy.copy_(torch.arange(2 * 5 * 5, dtype=torch.float32).view(1, 2, 5, 5))
        xt = hp.levels[0][PLANES.index((0, 3))]
        xt.copy_(torch.arange(2 * 7 * 5, dtype=torch.float32).view(1, 2, 7, 5) + 1.0)
    # grid vertex (i along x, j along y, k along t) of the normalised [-1, 1] domain
    i, j, k = 3, 1, 5
    pt = torch.tensor([[-1 + 2 * i / 4, -1 + 2 * j / 4, 0.0, -1 + 2 * k / 6]])
    f = hp(pt)[0]
    expect = xy[0, :, j, i] * xt[0, :, k, i]
    torch.testing.assert_close(f, expect.detach())


def test_starts_as_the_explicit_motion_and_leaves_static_gaussians_still():
    g, L, cam = make_loop()
    d = Deformation4D.for_loop(L)
    x0 = g.means[g.moving]
    assert (d.normalise(x0, torch.zeros(len(x0))).abs() <= 1).all()
    for t in (0, 3, N):
        a, b = deform_frame(L, d, t), L.assemble(t, L.means[t])
        torch.testing.assert_close(a.means, b.means)
        torch.testing.assert_close(a.log_scales, b.log_scales)
    randomise(d)
    static = torch.cat([~g.moving, torch.zeros(L.n_moving, dtype=torch.bool)])
    for t in (2, 4):
        a, b = deform_frame(L, d, t), L.assemble(t, L.means[t])
        assert torch.equal(a.means[static], b.means[static])
        assert torch.equal(a.quats[static], b.quats[static])
        assert (a.means[~static] - b.means[~static]).abs().max() > 1e-4  # the field does act


def test_loop_closes_exactly_even_with_a_random_field():
    g, L, cam = make_loop()
    d = Deformation4D.for_loop(L, DeformConfig(features=4, base_resolution=8))
    randomise(d, 3)
    with torch.no_grad():
        f0 = deform_frame(L, d, 0)
        fN = deform_frame(L, d, N)
        # frame 0 is the canonical 3D Gaussians, and frame N renders like frame 0
        torch.testing.assert_close(f0.means[: len(g)], g.means)
        r0, rN, rg = (x.render(cam).colors for x in (f0, fN, g))
        mid = deform_frame(L, d, N // 2).render(cam).colors
    assert psnr(r0, rg) >= 60
    assert psnr(rN, r0) >= 40
    assert psnr(mid, r0) < 35  # while the middle of the loop differs
    baked = bake(L, d)
    assert baked.means.shape == (N + 1, 2 * L.n_moving, 3) and baked.quats.shape == (N + 1, 2 * L.n_moving, 4)
    torch.testing.assert_close(baked.frame(2).means, deform_frame(L, d, 2).means)


def test_gradients_and_regularisers():
    g, L, cam = make_loop()
    d = Deformation4D.for_loop(L, DeformConfig(features=4, base_resolution=8))
    reg = {k: v.detach() for k, v in d.regularisers().items()}
    assert float(reg["time_l1"]) == 0.0 and float(reg["time_smooth"]) == 0.0  # time planes start at one
    assert float(reg["tv"]) > 0.0  # spatial planes start random
    with torch.no_grad():
        for level in d.planes.levels:
            for p in level:
                p.fill_(0.7)
    assert float(d.regularisers()["tv"].detach()) == 0.0
    randomise(d, 5)
    fr = deform_frame(L, d, 2)
    loss = fr.means.square().sum() + fr.quats.sum() + fr.log_scales.sum() + sum(d.regularisers().values())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters())


def test_batched_plane_sampling_matches_per_plane():
    """The CUDA path samples same-shaped planes in one batched grid_sample; the features and their
    gradients are those of the per-plane CPU path."""
    from backend.model.deform4d import HexPlane

    torch.manual_seed(0)
    hp = HexPlane(8, [8, 16], 9)
    for level in hp.levels:
        for p in level:
            p.data.uniform_(0.2, 1.5)
    x = torch.rand(500, 4) * 2.2 - 1.1  # some points outside [-1, 1]: border padding
    a = hp.sample_per_plane(x)
    ga = torch.autograd.grad(a.square().sum(), list(hp.parameters()))
    b = hp.sample_batched(x)
    gb = torch.autograd.grad(b.square().sum(), list(hp.parameters()))
    assert a.shape == b.shape == (500, 16)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    for u, v in zip(ga, gb):
        torch.testing.assert_close(v, u, rtol=1e-4, atol=1e-6)


def test_a_field_in_view_coordinates_moves_gaussians_only_across_the_view_rays():
    """With the supervising camera given, the field's domain is that view's pixels and disparity
    (every moving Gaussian inside [-1, 1]) and the position residuals are perpendicular to its rays:
    the input view cannot observe motion along them."""
    g, L, cam = make_loop()
    d = Deformation4D.for_loop(L, DeformConfig(features=4, base_resolution=8), view=cam)
    x0 = g.means[g.moving]
    q = d.normalise(x0, torch.zeros(len(x0)))
    assert (q.abs() <= 1).all() and (q[:, :2].max(0).values - q[:, :2].min(0).values > 1.5).all()
    randomise(d, 5)
    with torch.no_grad():
        for t in (2, N - 1):
            moved = deform_frame(L, d, t).means
            explicit = L.assemble(t, L.means[t]).means
            shift = moved - explicit
            ray = explicit - torch.as_tensor(cam.center, dtype=torch.float32)
            ray = ray / ray.norm(dim=-1, keepdim=True)
            along = (shift * ray).sum(-1).abs()
            assert shift.norm(dim=-1).max() > 1e-3  # the field does act
            assert along.max() < 1e-5 * (1 + shift.norm(dim=-1).max())


def test_position_residuals_are_bounded_by_the_loops_travel():
    """The residual's tanh spans at most ``max_shift_travel`` x the copies' mean path over the loop
    (here 0.7 px/frame for N frames), not a quarter of the region, so Adam's first fixed-size steps
    move the copies in proportion to their motion; 0 falls back to the extent bound."""
    g, L, cam = make_loop()
    travel = float((L.means[N, : L.n_moving] - L.means[0, : L.n_moving]).norm(dim=-1).mean())
    assert travel > 0
    for k in (1.0, 2.0):
        # a wide extent bound, so the travel bound is the one that holds
        d = Deformation4D.for_loop(L, DeformConfig(features=4, base_resolution=8, max_shift=10.0, max_shift_travel=k))
        assert float(d.shift_bound) == pytest.approx(k * travel, rel=1e-4)
        with torch.no_grad():
            d.head_pos.bias.fill_(50.0)  # saturate the tanh: the residual at |tau| = N is the bound
            x0 = g.means[g.moving]
            dx, _, _ = d(x0, torch.full((len(x0),), float(N)))
        torch.testing.assert_close(dx.norm(dim=-1), torch.full((len(x0),), k * travel * 3 ** 0.5), rtol=1e-4, atol=0)
    wide = Deformation4D.for_loop(L, DeformConfig(features=4, base_resolution=8, max_shift=10.0, max_shift_travel=0.0))
    assert float(wide.shift_bound) == pytest.approx(10.0 * float(wide.world_extent), rel=1e-4)
    assert float(wide.shift_bound) > 20 * float(d.shift_bound)


def test_fluid_past_the_views_edge_takes_the_fields_edge_values():
    """Moving Gaussians the supervising view sees past its image's edge (the margin ring's fluid)
    leave the field's domain as the photo's moving region spans it, so the grid keeps its resolution
    there, and they take the field's values at the domain's edge."""
    from backend.model.gaussians import Gaussians

    g, L, cam = make_loop()
    K = cam.K
    # A column of moving Gaussians 6 px past the right edge, on the moving rows, at the water's depth.
    v = np.arange(H // 2, H) + 0.5
    z = np.full(len(v), 2.0)
    xyz = np.stack([(W + 6.0 - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1).astype(np.float32)
    ring = from_points(xyz, np.full((len(v), 3), 0.5, np.float32), (z / K[0, 0]).astype(np.float32) * 1.2,
                       opacity=0.95, moving=np.ones(len(v), bool))
    vel = np.zeros((H, W, 3), np.float32)
    vel[..., 0] = 0.7 * 2.0 / K[0, 0]
    mask = np.mgrid[0:H, 0:W][0] >= H // 2
    both = Gaussians.concat([g, ring])
    Lr = loop_gaussians(both, VelocityField(vel, cam, mask), N)
    cfg = DeformConfig(features=4, base_resolution=8)
    photo, with_ring = Deformation4D.for_loop(L, cfg, view=cam), Deformation4D.for_loop(Lr, cfg, view=cam)
    for name in ("lo", "hi", "world_extent", "shift_bound"):
        torch.testing.assert_close(getattr(with_ring, name), getattr(photo, name))
    # At the domain's right edge, on their own rows and depth: those of the photo's last column.
    x_ring = both.means[len(g):]
    edge = torch.as_tensor(np.stack([(W - 0.5 - K[0, 2]) / K[0, 0] * z, xyz[:, 1], z], 1), dtype=torch.float32)
    q_ring, q_edge = with_ring.normalise(x_ring, torch.zeros(len(v))), with_ring.normalise(edge, torch.zeros(len(v)))
    assert (q_ring[:, 0] == 1).all() and (q_edge[:, 0] < 1).all()
    torch.testing.assert_close(q_ring[:, 1:], q_edge[:, 1:])
