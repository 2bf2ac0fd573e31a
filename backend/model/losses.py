"""Photometric losses shared by the 3D and 4D training stages."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None, dtype=None) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(a: Tensor, b: Tensor, size: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-pixel SSIM of two (H,W,C) images in [0,1] (Gaussian window, standard constants)."""
    x = a.permute(2, 0, 1)[None]
    y = b.permute(2, 0, 1)[None]
    C = x.shape[1]
    g = _gaussian_window(size, sigma, x.device, x.dtype)
    gx = g.view(1, 1, 1, -1).repeat(C, 1, 1, 1)
    gy = g.view(1, 1, -1, 1).repeat(C, 1, 1, 1)

    def blur(t: Tensor) -> Tensor:
        t = F.conv2d(F.pad(t, (size // 2, size // 2, 0, 0), mode="reflect"), gx, groups=C)
        return F.conv2d(F.pad(t, (0, 0, size // 2, size // 2), mode="reflect"), gy, groups=C)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx**2
    syy = blur(y * y) - my**2
    sxy = blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s[0].permute(1, 2, 0)


def photometric_loss(render: Tensor, target: Tensor, weight: Tensor | None = None, lambda_dssim: float = 0.2) -> Tensor:
    """(1 - lambda) L1 + lambda (1 - SSIM), optionally weighted per pixel by ``weight`` (H,W)."""
    l1 = (render - target).abs().mean(-1)
    dssim = 1.0 - ssim_map(render, target).mean(-1)
    per_pixel = (1 - lambda_dssim) * l1 + lambda_dssim * dssim
    if weight is None:
        return per_pixel.mean()
    return (per_pixel * weight).sum() / weight.sum().clamp_min(1e-8)


def psnr(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    err = (a.float() - b.float()) ** 2
    if mask is not None:
        m = mask.float()
        mse = (err.mean(-1) * m).sum() / m.sum().clamp_min(1.0)
    else:
        mse = err.mean()
    return float(10.0 * torch.log10(1.0 / mse.clamp_min(1e-12)))
