"""The CPU rasteriser against a brute-force per-pixel compositor written here, and gradcheck."""
import math

import pytest
import torch

from backend.render.rasterize import rasterize


def brute_force(means, quats, scales, opac, colors, viewmat, K, W, H):
    """Per-pixel front-to-back loop, written from the 3DGS equations with gsplat's constants."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    items = []
    for i in range(len(means)):
        p = R @ means[i] + t
        x, y, z = p
        if z <= 0.01:
            continue
        q = quats[i] / quats[i].norm()
        w_, a, b, c = q
        Rq = torch.tensor([
            [1 - 2 * (b * b + c * c), 2 * (a * b - w_ * c), 2 * (a * c + w_ * b)],
            [2 * (a * b + w_ * c), 1 - 2 * (a * a + c * c), 2 * (b * c - w_ * a)],
            [2 * (a * c - w_ * b), 2 * (b * c + w_ * a), 1 - 2 * (a * a + b * b)]], dtype=means.dtype)
        S = torch.diag(scales[i])
        cov = R @ Rq @ S @ S @ Rq.T @ R.T
        lxp = (W - cx) / fx + 0.3 * W / fx; lxn = cx / fx + 0.3 * W / fx
        lyp = (H - cy) / fy + 0.3 * H / fy; lyn = cy / fy + 0.3 * H / fy
        tx = z * min(lxp, max(-lxn, x / z)); ty = z * min(lyp, max(-lyn, y / z))
        J = torch.tensor([[fx / z, 0, -fx * tx / z**2], [0, fy / z, -fy * ty / z**2]], dtype=means.dtype)
        c2 = J @ cov @ J.T + 0.3 * torch.eye(2, dtype=means.dtype)
        inv = torch.linalg.inv(c2)
        mu = torch.stack([fx * x / z + cx, fy * y / z + cy])
        items.append((float(z), mu, inv, float(opac[i]), colors[i], float(z)))
    items.sort(key=lambda it: it[0])
    img = torch.zeros(H, W, colors.shape[1], dtype=means.dtype)
    acc = torch.zeros(H, W, dtype=means.dtype)
    dep = torch.zeros(H, W, dtype=means.dtype)
    for py in range(H):
        for px in range(W):
            T = 1.0
            for _, mu, inv, o, col, z in items:
                d = torch.tensor([px + 0.5, py + 0.5], dtype=means.dtype) - mu
                sigma = 0.5 * float(d @ inv @ d)
                if sigma < 0:
                    continue
                alpha = min(0.999, o * math.exp(-sigma))
                if alpha < 1 / 255:
                    continue
                nT = T * (1 - alpha)
                if nT <= 1e-4:
                    break
                img[py, px] += alpha * T * col
                acc[py, px] += alpha * T
                dep[py, px] += alpha * T * z
                T = nT
    return img, acc, dep / acc.clamp_min(1e-10)


def random_scene(n, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * torch.tensor([0.6, 0.45, 0.3], dtype=dtype)
    means[:, 2] += 3.0
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.12 + 0.02
    opac = torch.rand(n, generator=g, dtype=dtype) * 0.9 + 0.1
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    W, H = 24, 18
    K = torch.tensor([[30.0, 0, W / 2], [0, 30.0, H / 2], [0, 0, 1]], dtype=dtype)
    return means, quats, scales, opac, colors, torch.eye(4, dtype=dtype), K, W, H


def test_matches_brute_force_compositor():
    means, quats, scales, opac, colors, vm, K, W, H = random_scene(60)
    out = rasterize(means, quats, scales, opac, colors, vm, K, W, H, backend="cpu")
    ref_rgb, ref_a, ref_d = brute_force(means.double(), quats.double(), scales.double(), opac.double(),
                                        colors.double(), vm.double(), K.double(), W, H)
    assert (out.colors.double() - ref_rgb).abs().max() < 1e-4
    assert (out.alpha[..., 0].double() - ref_a).abs().max() < 1e-4
    assert out.alpha.max() > 0.9  # the scene covers the image densely, so the check bites
    covered = ref_a > 1e-3
    assert (out.depth[..., 0].double() - ref_d)[covered].abs().max() < 1e-3


def test_early_termination_matches_brute_force():
    # Many opaque layers: most pixels stop before their last Gaussian.
    means, quats, scales, opac, colors, vm, K, W, H = random_scene(80, seed=3)
    opac = torch.full_like(opac, 0.99)
    scales = scales * 2
    out = rasterize(means, quats, scales, opac, colors, vm, K, W, H, backend="cpu")
    ref_rgb, ref_a, _ = brute_force(means.double(), quats.double(), scales.double(), opac.double(),
                                    colors.double(), vm.double(), K.double(), W, H)
    assert (out.colors.double() - ref_rgb).abs().max() < 1e-4
    assert (out.alpha[..., 0].double() - ref_a).abs().max() < 1e-4


def test_rotated_camera_and_background():
    means, quats, scales, opac, colors, _, K, W, H = random_scene(40, seed=5)
    from backend.model.camera import rotation_yaw_pitch
    import numpy as np
    vm = np.eye(4); vm[:3, :3] = rotation_yaw_pitch(8, -5).T; vm[:3, 3] = [0.1, -0.05, 0.2]
    vm = torch.tensor(vm, dtype=torch.float32)
    bg = torch.tensor([0.2, 0.4, 0.6])
    out = rasterize(means, quats, scales, opac, colors, vm, K, W, H, background=bg, backend="cpu")
    ref_rgb, ref_a, _ = brute_force(means.double(), quats.double(), scales.double(), opac.double(),
                                    colors.double(), vm.double(), K.double(), W, H)
    ref = ref_rgb + (1 - ref_a)[..., None] * bg.double()
    assert (out.colors.double() - ref).abs().max() < 1e-4


def test_gradcheck_double():
    means, quats, scales, opac, colors, vm, K, W, H = random_scene(6, dtype=torch.float64, seed=1)
    W, H = 10, 8
    K = torch.tensor([[12.0, 0, W / 2], [0, 12.0, H / 2], [0, 0, 1]], dtype=torch.float64)
    params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]

    def f(m, q, s, o, c):
        out = rasterize(m, q, s, o, c, vm, K, W, H, backend="cpu")
        return out.colors, out.alpha, out.depth

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-5, rtol=1e-3)
    out = f(*params)[0]
    out.sum().backward()
    for p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_empty_and_behind_camera():
    means = torch.tensor([[0.0, 0.0, -2.0]])
    out = rasterize(means, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.1), torch.ones(1),
                    torch.ones(1, 3), torch.eye(4), torch.tensor([[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]]), 8, 8,
                    backend="cpu")
    assert out.colors.shape == (8, 8, 3) and out.alpha.abs().max() == 0
