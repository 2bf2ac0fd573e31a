"""Full-reference image metrics: PSNR and SSIM, whole-image and masked, plus the border crop.

Images are float (H, W, 3) or (H, W) in [0, 1]. SSIM follows Wang et al. 2004: an 11x11
Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, per channel, averaged over the positions
where the window lies fully inside the image ("valid"), as in the reference MATLAB code.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

SSIM_WIN = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
PAPER_BORDER = 32  # px cropped by 3D-Cinemagraphy / 3D-MOM at 512 px
PAPER_SIDE = 512


def border_for(width: int, height: int, border_at_512: int = PAPER_BORDER) -> int:
    """The paper's 32-px border crop scaled to this resolution (32 px at a 512-px long side)."""
    return int(round(border_at_512 * max(width, height) / PAPER_SIDE))


def crop_border(img: np.ndarray, border: int) -> np.ndarray:
    """Drop ``border`` pixels on every side (first two axes)."""
    if border <= 0:
        return img
    h, w = img.shape[:2]
    if 2 * border >= min(h, w):
        raise ValueError(f"border {border} leaves nothing of a {w}x{h} image")
    return img[border:h - border, border:w - border]


def _as_float(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    return a.astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, data_range: float = 1.0) -> float:
    """PSNR in dB; with ``mask`` (H,W bool) the MSE is taken over masked pixels only (nan if empty)."""
    a, b = _as_float(a), _as_float(b)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ {a.shape} vs {b.shape}")
    se = (a - b) ** 2
    if se.ndim == 3:
        se = se.mean(axis=2)
    if mask is not None:
        m = np.asarray(mask, bool)
        if not m.any():
            return float("nan")
        se = se[m]
    mse = float(se.mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range ** 2 / mse)


def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Per-pixel SSIM (H, W), channel-averaged; values within 5 px of the border use reflected pixels."""
    a, b = _as_float(a), _as_float(b)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (SSIM_WIN, SSIM_WIN), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    maps = []
    for c in range(a.shape[2]):
        x, y = a[..., c], b[..., c]
        mx, my = blur(x), blur(y)
        sxx = blur(x * x) - mx * mx
        syy = blur(y * y) - my * my
        sxy = blur(x * y) - mx * my
        maps.append(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2)))
    return np.mean(maps, axis=0)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, data_range: float = 1.0) -> float:
    """Mean SSIM over the valid window positions; with ``mask``, over the masked valid positions."""
    m = ssim_map(a, b, data_range)
    r = SSIM_WIN // 2
    valid = np.zeros(m.shape, bool)
    valid[r:m.shape[0] - r, r:m.shape[1] - r] = True
    if mask is not None:
        valid &= np.asarray(mask, bool)
    if not valid.any():
        return float("nan")
    return float(m[valid].mean())
