"""The Eulerian velocity field, Euler integration and the 3D symmetric loop (the preview result)."""
import numpy as np
import pytest
import torch

from backend.model.camera import Camera, intrinsics_from_fov
from backend.infra.errors import LoopscapeError
from backend.model.gaussians import from_points
from backend.stages.lift import lift_to_points
from backend.model.losses import psnr
from backend.model.motion_field import VelocityField, loop_gaussians

W, H, N = 32, 24, 6
U = 0.5  # pixels per frame, to the right, in the lower half


def make_scene():
    K = intrinsics_from_fov(W, H, 50.0)
    cam = Camera(K, W, H)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    # Depth varies per row (like a ground plane); a tiny jitter keeps depth ties out of the sort.
    depth = 3.0 - 1.5 * ys / H + 1e-3 * np.random.default_rng(0).random((H, W)).astype(np.float32)
    rgb = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * xs / 6), 0.5 + 0.3 * np.cos(2 * np.pi * ys / 7),
                    0.5 + 0.2 * np.sin(xs + ys)], -1).astype(np.float32)
    mask = ys >= H // 2
    pc = lift_to_points(rgb, depth, cam)
    g = from_points(pc.xyz, pc.rgb, pc.pixel_size * 1.2, opacity=0.95, moving=mask.reshape(-1))
    vel = np.zeros((H, W, 3), np.float32)
    vel[..., 0] = U * depth / K[0, 0]  # U pixels per frame at each pixel's depth
    vel[..., 1] = 0.3 * depth / K[1, 1]
    return g, vel * mask[..., None], mask, cam


def test_field_samples_the_map_at_pixel_centres_and_continues_past_the_edge():
    g, vel, mask, cam = make_scene()
    f = VelocityField(vel, cam, mask)
    v = f(g.means).numpy().reshape(H, W, 3)
    np.testing.assert_allclose(v, vel, atol=1e-7)
    # Another point on the same ray (twice as deep) samples the same pixel.
    np.testing.assert_allclose(f(2.0 * g.means).numpy().reshape(H, W, 3), vel, atol=1e-7)
    # Halfway between two horizontal pixel centres: the bilinear mean.
    mid = 0.5 * (g.means[20 * W + 3] + g.means[20 * W + 4])
    exp = 0.5 * (vel[20, 3] + vel[20, 4])
    np.testing.assert_allclose(f(mid[None]).numpy()[0], exp, rtol=2e-3, atol=1e-8)
    # Behind the camera: no motion.
    assert f(torch.tensor([[0.0, 0.0, -2.0]])).abs().max() == 0
    # Past the image's edge: the nearest edge pixel's motion, so the fluid goes on there (moving in
    # the lower half, still in the upper).
    K = cam.K

    def at(u: float, v: float, z: float = 2.0) -> list[float]:
        return [(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z]

    past = torch.tensor([at(W + 10, 20.5), at(-7, 18.5), at(10.5, H + 9), at(W + 10, 5.5)], dtype=torch.float32)
    np.testing.assert_allclose(f(past).numpy(), np.stack([vel[20, W - 1], vel[18, 0], vel[H - 1, 10], vel[5, W - 1]]),
                               atol=1e-7)
    assert np.abs(vel[20, W - 1]).max() > 0 and np.abs(vel[5, W - 1]).max() == 0
    # The mask switches motion off even where the map is not zero.
    f2 = VelocityField(np.ones((H, W, 3), np.float32), cam, mask)
    assert f2(g.means[: W * (H // 2 - 1)]).abs().max() == 0


def test_fluid_hidden_behind_a_still_occluder_flows_on_behind_it():
    """A boulder (a still block, nearer than the water round it) in the lower half's moving water:
    points behind it move with the nearest water, points on it and in front of the water stay still."""
    g, vel, mask, cam = make_scene()
    K = cam.K
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    depth = 3.0 - 1.5 * ys / H
    rock = (ys >= 16) & (ys < 18) & (xs >= 10) & (xs < 21)
    depth[rock] = 1.2
    water = mask & ~rock
    f = VelocityField(vel, cam, water, depth=depth)
    plain = VelocityField(vel, cam, water)

    def ray(y: float, x: float, z: float) -> torch.Tensor:
        return torch.tensor([[(x - K[0, 2]) / K[0, 0] * z, (y - K[1, 2]) / K[1, 1] * z, z]], dtype=torch.float32)

    behind = ray(16.5, 15.5, 2.0)  # the water's depth on that row, far behind the boulder's 1.2
    assert bool(f.hidden(behind)) and not bool(plain.hidden(behind))
    assert plain(behind).abs().max() == 0  # the masked map stops water at the boulder's outline
    v = f(behind)[0].numpy()
    near_water = vel[15, 15]  # the nearest water pixel, just upstream of the boulder
    np.testing.assert_allclose(v, near_water, rtol=1e-6)
    assert v[0] > 0
    # The boulder's own surface, and a point in front of it, do not move; nor water seen in the open.
    assert not bool(f.hidden(ray(16.5, 15.5, 1.2))) and f(ray(16.5, 15.5, 1.2)).abs().max() == 0
    assert f(ray(16.5, 15.5, 0.9)).abs().max() == 0
    idx = torch.nonzero(torch.as_tensor(water.reshape(-1))).squeeze(1)
    np.testing.assert_allclose(f(g.means[idx]).numpy(), plain(g.means[idx]).numpy(), atol=1e-7)
    with pytest.raises(LoopscapeError, match="depth"):
        VelocityField(vel, cam, water, depth=depth[:-1])


def test_euler_integration_moves_projections_by_the_flow_and_reverses():
    g, vel, mask, cam = make_scene()
    f = VelocityField(vel, cam, mask)
    idx = torch.nonzero(g.moving).squeeze(1)
    start = g.means[idx]
    traj = f.integrate(start, 4, +1.0)
    assert traj.shape == (5, len(idx), 3)
    uv0, _ = cam.project(start.numpy().astype(np.float64))
    uv4, _ = cam.project(traj[4].numpy().astype(np.float64))
    # Points that stay inside the image after 4 steps moved by 4 * U pixels in x, up to ~2 %:
    # drifting down they sample rows whose velocity was set for a slightly nearer depth.
    inside = (uv0[:, 0] < W - 4 * U - 1) & (uv0[:, 1] < H - 4 * 0.3 - 1)
    assert inside.sum() > 100
    d = uv4[inside] - uv0[inside]
    np.testing.assert_allclose(d[:, 0], 4 * U, atol=0.05)
    assert np.all(d[:, 1] > 0.3)  # and downwards
    back = f.integrate(traj[4], 4, -1.0)[-1]
    np.testing.assert_allclose(back[torch.as_tensor(inside)].numpy(), start[torch.as_tensor(inside)].numpy(), atol=5e-3)


def test_loop_has_constant_count_static_stays_and_frame_n_renders_like_frame_0():
    g, vel, mask, cam = make_scene()
    L = loop_gaussians(g, VelocityField(vel, cam, mask), N)
    m = int(g.moving.sum())
    assert L.n_moving == m and L.means.shape == (N + 1, 2 * m, 3)
    static = ~g.moving
    for t in range(N + 1):
        fr = L.frame(t)
        assert len(fr) == len(g) + m == L.n_gaussians
        assert torch.equal(fr.means[: len(g)][static], g.means[static])
        # transmittance shares (1 - t/N) for the forward copy, t/N for the backward copy:
        # together the two copies are exactly as opaque as the original
        k = t % N
        o = torch.sigmoid(g.logit_opacities[g.moving]).double().numpy()
        of = torch.sigmoid(fr.logit_opacities[: len(g)][g.moving]).double().numpy()
        ob = torch.sigmoid(fr.logit_opacities[len(g):]).double().numpy()
        np.testing.assert_allclose(of, np.maximum(1 - (1 - o) ** (1 - k / N), 1e-7), rtol=1e-4)
        np.testing.assert_allclose(ob, np.maximum(1 - (1 - o) ** (k / N), 1e-7), rtol=1e-4)
        if 0 < k:
            np.testing.assert_allclose((1 - of) * (1 - ob), 1 - o, rtol=1e-4)
    # The backward copy at t = N - 1 is one -V step from x0.
    x0 = g.means[g.moving]
    f = VelocityField(vel, cam, mask)
    np.testing.assert_allclose(L.means[N - 1, m:].numpy(), (x0 - f(x0)).numpy(), atol=1e-6)

    with torch.no_grad():
        r0 = L.frame(0).render(cam).colors
        rg = g.render(cam).colors
        rN = L.assemble(N, L.means[N]).render(cam).colors  # frame N itself, not wrapped
        rmid = L.frame(N // 2).render(cam).colors
    assert psnr(r0, rg) >= 60  # frame 0 is the 3D Gaussians as they were
    assert psnr(rN, r0) >= 40  # the loop closes
    top, bottom = slice(0, H // 2 - 3), slice(H // 2 + 2, H)
    assert psnr(rmid[top], r0[top]) >= 40  # static region untouched
    assert psnr(rmid[bottom], r0[bottom]) < 30  # moving region moved


def test_render_blends_the_two_layers_in_image_space_like_the_2d_loop():
    from backend.stages.loop2d import render_loop_2d

    g, vel, mask, cam = make_scene()
    L = loop_gaussians(g, VelocityField(vel, cam, mask), N)
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0], flow[..., 1] = U, 0.3  # the 2D motion the velocity map was built from
    inner = mask.copy()
    inner[: H // 2 + 2] = False  # keep the mask edge (where the 2D loop falls back to the still) out
    blend_db, one_set_db = [], []
    with torch.no_grad():
        rgb0 = g.render(cam).colors
        loop2d = render_loop_2d(rgb0.numpy(), flow * mask[..., None], N, mask=mask).frames
        assert psnr(L.render(0, cam).colors, rgb0) >= 60
        assert psnr(L.render(N, cam, wrap=False).colors, rgb0) >= 40  # frame N from its own state closes the loop
        for t in range(1, N):
            fwd, bwd = L.layers(t)
            assert len(fwd) == len(bwd) == len(g)
            expected = (1 - t / N) * fwd.render(cam).colors + (t / N) * bwd.render(cam).colors
            got = L.render(t, cam).colors
            torch.testing.assert_close(got, expected)
            ref = torch.as_tensor(loop2d[t])[torch.as_tensor(inner)]
            blend_db.append(psnr(got[torch.as_tensor(inner)], ref))
            one_set_db.append(psnr(L.frame(t).render(cam).colors[torch.as_tensor(inner)], ref))
    # The blend follows the 2D symmetric splatting; one composited set lets the front copy win.
    assert np.mean(blend_db) >= 28.0, blend_db
    assert np.mean(blend_db) >= np.mean(one_set_db) + 5.0, (blend_db, one_set_db)


def test_bad_inputs_raise_user_errors():
    g, vel, mask, cam = make_scene()
    with pytest.raises(LoopscapeError):
        VelocityField(vel[..., :2], cam)
    with pytest.raises(LoopscapeError):
        VelocityField(vel, cam, mask[:-1])
    bad = vel.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(LoopscapeError):
        VelocityField(bad, cam)
    with pytest.raises(LoopscapeError):
        loop_gaussians(g, VelocityField(vel, cam, mask), 1)
