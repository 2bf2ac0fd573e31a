"""PIQE, the no-reference quality score used by 3D-MOM (Venkatanath et al., NCC 2015).

From the paper's definition: the grey image (0..255) becomes MSCN coefficients (7x7 Gaussian,
sigma 7/6, C = 1); 16x16 blocks whose MSCN variance exceeds 0.1 are "spatially active". An
active block is distorted when it shows a noticeable artifact (some 6-pixel segment of one of
its four 1-px edges is nearly flat: std < 0.1) or noise (center-surround criterion
sigma_blk > 2 * beta). A distorted block adds its MSCN variance (at most ~1); the score is
100 * (sum + C1) / (N_active + C1), C1 = 1. Lower is better; 0..100.
"""
from __future__ import annotations

import cv2
import numpy as np

BLOCK = 16
ACTIVITY_T = 0.1
EDGE_T = 0.1
SEGMENT = 6
C1 = 1.0


def mscn(gray255: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a grey image in [0, 255]."""
    g = gray255.astype(np.float64)
    mu = cv2.GaussianBlur(g, (7, 7), 7.0 / 6.0, borderType=cv2.BORDER_REPLICATE)
    var = cv2.GaussianBlur(g * g, (7, 7), 7.0 / 6.0, borderType=cv2.BORDER_REPLICATE) - mu * mu
    return (g - mu) / (np.sqrt(np.abs(var)) + 1.0)


def _to_gray255(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    f = a.astype(np.float64) if a.dtype == np.uint8 else np.clip(a.astype(np.float64), 0, 1) * 255.0
    if f.ndim == 3:  # ITU-R BT.601 luma, as rgb2gray
        f = 0.2989 * f[..., 0] + 0.5870 * f[..., 1] + 0.1140 * f[..., 2]
    return f


def _noticeable(block: np.ndarray) -> bool:
    edges = (block[0, :], block[-1, :], block[:, 0], block[:, -1])
    for e in edges:
        win = np.lib.stride_tricks.sliding_window_view(e, SEGMENT)
        if (win.std(axis=1) < EDGE_T).any():
            return True
    return False


def _noisy(block: np.ndarray) -> bool:
    c = BLOCK // 2
    center = block[:, c - 1:c + 1]
    surround = np.concatenate([block[:, :c - 1], block[:, c + 1:]], axis=1)
    s_blk, s_cen, s_sur = block.std(), center.std(), surround.std()
    if s_sur == 0:
        return False
    ratio = s_cen / s_sur
    beta = abs(ratio - s_blk) / max(ratio, s_blk)
    return bool(s_blk > 2.0 * beta)


def piqe(img: np.ndarray) -> float:
    """PIQE score of an RGB or grey image (float in [0,1] or uint8). Lower is better."""
    m = mscn(_to_gray255(img))
    h, w = (m.shape[0] // BLOCK) * BLOCK, (m.shape[1] // BLOCK) * BLOCK
    if h == 0 or w == 0:
        raise ValueError(f"PIQE needs at least {BLOCK}x{BLOCK} pixels, got {m.shape[1]}x{m.shape[0]}")
    total, active = 0.0, 0
    for y in range(0, h, BLOCK):
        for x in range(0, w, BLOCK):
            b = m[y:y + BLOCK, x:x + BLOCK]
            v = float(b.var())
            if v <= ACTIVITY_T:
                continue
            active += 1
            if _noticeable(b) or _noisy(b):
                total += v  # counted once per block, so the score stays within 0..100
    return float(min(100.0, 100.0 * (total + C1) / (active + C1)))
