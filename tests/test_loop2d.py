"""Symmetric-splatting loop of the input view: closure, motion, static pixels."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from backend.stages import loop2d
from backend.stages.loop2d import euler_integrate, loop_copies, loop_displacements, render_loop_2d


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.random((h // 4, w // 4, 3)).astype(np.float32)
    return cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def test_euler_integration_of_constant_and_sheared_flow() -> None:
    H, W = 24, 32
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0] = 0.75
    flow[..., 1] = -0.25
    d = euler_integrate(flow, 6).numpy()
    assert d.shape == (7, H, W, 2)
    assert np.all(d[0] == 0)
    # away from the borders every particle moves k * F
    np.testing.assert_allclose(d[6, 8:16, 2:20], np.broadcast_to([4.5, -1.5], (8, 18, 2)), atol=1e-5)
    # a flow that grows with x: the particle speeds up as it moves right (Eulerian, not k * F(x0))
    shear = np.zeros((H, W, 2), np.float32)
    shear[..., 0] = 0.05 * (np.arange(W) + 0.5)[None, :]
    d2 = euler_integrate(shear, 3).numpy()
    x = 5.5
    for _ in range(3):
        x += 0.05 * x
    assert d2[3, 10, 5, 0] == pytest.approx(x - 5.5, abs=1e-4)
    assert d2[3, 10, 5, 0] > 3 * 0.05 * 5.5 + 0.01


def test_loop_closes_exactly_and_static_pixels_never_change() -> None:
    H, W, N = 40, 56, 12
    rgb = _texture(H, W)
    mask = np.zeros((H, W), bool)
    mask[8:32, 10:46] = True
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0] = 0.8
    flow[..., 1] = 0.3
    out = render_loop_2d(rgb, flow, N, mask=mask, include_end=True)
    assert out.frames.shape == (N + 1, H, W, 3)
    assert np.array_equal(out.frames[0], rgb)  # frame 0 is the photo
    assert np.array_equal(out.frames[N], out.frames[0])  # frame N == frame 0: the loop closes
    for t in range(N + 1):
        assert np.array_equal(out.frames[t][~mask], rgb[~mask])
    # something actually moves inside the mask in the middle of the loop
    assert np.abs(out.frames[N // 2][mask] - rgb[mask]).mean() > 0.02
    assert out.forward.shape == (N + 1, H, W, 2) and out.backward.shape == (N + 1, H, W, 2)
    assert out.backward[3, 20, 20] == pytest.approx([-2.4, -0.9], abs=1e-5)


def test_constant_flow_moves_texture_by_flow_per_frame() -> None:
    H, W, N = 64, 80, 20
    rgb = _texture(H, W, seed=3)
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0] = 1.0
    flow[..., 1] = 0.5
    out = render_loop_2d(rgb, flow, N, mask=np.ones((H, W), bool))
    g = lambda a: (cv2.cvtColor(a, cv2.COLOR_RGB2GRAY) * 255).astype(np.uint8)  # noqa: E731
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    # early frames are dominated by the forward splat: frame 0 -> 3 moves by 3 F
    f03 = dis.calc(g(out.frames[0]), g(out.frames[3]), None)
    core = f03[16:48, 20:60].reshape(-1, 2)
    np.testing.assert_allclose(np.median(core, axis=0), [3.0, 1.5], atol=0.15)
    # between consecutive frames every copy moves by F, whatever the blend
    f = dis.calc(g(out.frames[9]), g(out.frames[10]), None)
    core = f[16:48, 20:60].reshape(-1, 2)
    np.testing.assert_allclose(np.median(core, axis=0), [1.0, 0.5], atol=0.15)


def test_default_mask_is_where_the_flow_is_nonzero() -> None:
    H, W = 20, 20
    rgb = _texture(H, W, seed=5)
    flow = np.zeros((H, W, 2), np.float32)
    flow[5:15, 5:15, 0] = 1.0
    out = render_loop_2d(rgb, flow, 6)
    still = np.ones((H, W), bool)
    still[5:15, 5:15] = False
    assert all(np.array_equal(fr[still], rgb[still]) for fr in out.frames)
    assert not np.array_equal(out.frames[3], rgb)


def test_copies_are_the_two_warps_alone_and_mark_their_holes() -> None:
    """Under an integer translation each copy is the image shifted by t and by -(N - t) frames; the
    strip a copy uncovers is a hole (still image, weight 0), and where neither copy has a hole the
    blended loop is exactly the blend of the copies (one splat per pixel: the densities agree)."""
    H, W, N = 24, 32, 6
    rgb = _texture(H, W, seed=7)
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0] = 1.0
    mask = np.ones((H, W), bool)
    loop = render_loop_2d(rgb, flow, N, mask=mask)
    c = loop_copies(rgb, loop, mask)
    assert c.n_frames == N and c.forward.shape == (N, H, W, 3) and c.forward_valid.shape == (N, H, W)
    fwd, bwd = c.forward.numpy(), c.backward.numpy()
    for t in (1, 4):
        np.testing.assert_allclose(fwd[t][:, t:], rgb[:, :W - t], atol=1e-5)  # moved right by t px
        s = N - t
        np.testing.assert_allclose(bwd[t][:, :W - s], rgb[:, s:], atol=1e-5)  # moved left by N - t px
        assert (c.forward_valid[t][:, :t] == 0).all() and (c.forward_valid[t][:, t:] == 1).all()
        assert (c.backward_valid[t][:, W - s:] == 0).all() and (c.backward_valid[t][:, :W - s] == 1).all()
        np.testing.assert_allclose(fwd[t][:, :t], rgb[:, :t])  # holes show the still image
        both = slice(t, W - s)
        blend = (1 - t / N) * fwd[t][:, both] + (t / N) * bwd[t][:, both]
        np.testing.assert_allclose(loop.frames[t][:, both], blend, atol=1e-5)
    np.testing.assert_allclose(fwd[0], rgb, atol=1e-6)
    with_end = loop_copies(rgb, render_loop_2d(rgb, flow, N, mask=mask, include_end=True), mask)
    assert with_end.n_frames == N  # frame N (= frame 0) is not a copy frame


def test_copies_keep_fine_texture_under_sub_pixel_motion() -> None:
    """A 5-px texture drifting 0.37 / 0.21 px per frame: the copies find each pixel's source and
    sample it bicubically, so they match the analytically shifted texture; splatting the same
    displacements forward (as the loop frames do) blurs it by 10 dB more."""
    H, W, N = 32, 40, 8
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32) + 0.5

    def texture(x, y):
        return np.stack([0.5 + 0.3 * np.sin(2 * np.pi * x / 5.0) * np.cos(2 * np.pi * y / 7.0),
                         0.5 + 0.3 * np.sin(2 * np.pi * (x + y) / 6.0),
                         0.5 + 0.3 * np.cos(2 * np.pi * (x - 2 * y) / 9.0)], -1).astype(np.float32)

    v = np.array([0.37, 0.21], np.float32)
    rgb, mask = texture(xs, ys), np.ones((H, W), bool)
    disp = loop_displacements(np.broadcast_to(v, (H, W, 2)).copy(), N, mask=mask)
    c = loop_copies(rgb, disp, mask)
    centres = torch.as_tensor(np.stack([xs, ys], -1).reshape(-1, 2))
    for t in (3, 6):
        truth = texture(xs - t * v[0], ys - t * v[1])
        ok = c.forward_valid[t].numpy() > 0
        # holes: the strips whose content came from off the image, and nothing more
        sx, sy = xs - t * v[0], ys - t * v[1]
        assert not ok[(sx < 0) | (sy < 0)].any() and ok[(sx > 1) & (sy > 1)].all()
        acc, wsum = torch.zeros(H * W, 3), torch.zeros(H * W)
        moved = centres + torch.as_tensor(disp.forward[t]).reshape(-1, 2)
        loop2d._splat(acc, wsum, torch.as_tensor(rgb).reshape(-1, 3), moved, 1.0, W, H)
        splat = (acc / wsum.clamp(min=1e-3)[:, None]).reshape(H, W, 3).numpy()
        psnr = lambda x: -10 * np.log10(((x - truth)[ok] ** 2).mean())  # noqa: E731
        assert psnr(c.forward[t].numpy()) > 35.0  # 41 and 38 dB here
        assert psnr(c.forward[t].numpy()) > psnr(splat) + 8.0  # the splat: 28 and 27 dB


def test_the_stage_keeps_displacements_only_and_only_for_4d_training() -> None:
    """The stage's artifact gives the 4D training the same copies as the rendered loop, without its frames."""
    from types import SimpleNamespace

    from contract.quality import PRESETS

    H, W, N = 20, 28, 6
    rgb = _texture(H, W, seed=3)
    mask = np.zeros((H, W), bool)
    mask[4:16, 5:23] = True
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0] = 0.6
    flow[..., 1] = 0.2 + 0.02 * np.arange(H)[:, None]
    ctx = lambda q: SimpleNamespace(preset=PRESETS[q], job=SimpleNamespace(frames=N), device="cpu")  # noqa: E731
    image, flows = SimpleNamespace(rgb=rgb), SimpleNamespace(input_view=flow)
    assert loop2d.run(ctx("preview"), image, flows, mask) is None  # the explicit loop never reads it
    disp = loop2d.run(ctx("draft"), image, flows, mask)
    assert not hasattr(disp, "frames")
    rendered = render_loop_2d(rgb, flow, N, mask=mask)
    np.testing.assert_array_equal(disp.forward, rendered.forward)
    np.testing.assert_array_equal(disp.backward, rendered.backward)
    a, b = loop_copies(rgb, disp, mask), loop_copies(rgb, rendered, mask)
    assert torch.equal(a.forward, b.forward) and torch.equal(a.backward_valid, b.backward_valid)
    np.testing.assert_array_equal(loop_displacements(flow, N, mask).forward, disp.forward)
