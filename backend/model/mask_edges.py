"""Snap a painted motion mask's edge to the photo: release the static pixels a brush took along.

A mask painted over the sky or a river takes a pixel or a few of the mountain or the bank with it
(a brush is never exactly on the skyline, and a mask shrunk from the artist's resolution rounds
its edge). Those pixels then drift with the clouds or the water, and the animation carries a
ghost of the skyline across the sky. The mask is only trusted to say *what* moves; where its edge
is, the photo decides.

Each pass looks at the mask's outermost ring of pixels and releases (makes static) the ones whose
nearest colours are mostly static. The 7 nearest colours to the pixel vote. They are drawn from a
window around it, among two sides. The static side is every unmasked pixel at least 2 px from the
mask, since the mask's own neighbours may be mixed. The moving side is every masked pixel deeper
than the band, so the ring being judged never judges itself. A nearest-colour vote suits both
kinds of region: a sky is blue and white and a slope grey and green, which a mean per side would
blur, and a dark ripple in textured water finds darker ripples to vote for it. The passes peel
inward from the edge, at most ``band`` of them, so nothing deep inside the moving region is ever
released, however grey a cloud gets. The mask never grows: a pixel left out of it stays static.

Known limit: a mask drawn loosely round a cloud, with a thin margin of blue sky inside it, loses
that margin too, since it looks like the sky outside. Moving that margin was harmless; the snap
pins the mask to the cloud's own edge. On ``3dmom_scene_0`` at 256 px (preview, input view) the
videos with and without the snap differ by 0.005 on average, as much at frame 0 as later, and
the cloud's edge looks the same in both.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

NEAREST_K = 7  # the nearest colours that vote on a pixel's side
BAND_FRACTION = 0.01  # how far a brush strays, as a share of the long side: 5 px at 512, 12 at 1280
MIN_BAND_PX = 3
MAX_BAND_PX = 12
MAX_RELEASED_SHARE = 0.25  # a snap that would release more of the mask than this is not an edge fix: keep the mask


@dataclass
class SnappedMask:
    mask: np.ndarray  # (H, W) bool: the moving region with the released pixels removed
    released: int  # pixels made static


def band_px(width: int, height: int) -> int:
    """How deep the snap may peel, in working pixels: proportional to the image size."""
    return int(np.clip(round(BAND_FRACTION * max(width, height)), MIN_BAND_PX, MAX_BAND_PX))


def _static_votes(rgb: np.ndarray, points: np.ndarray, static: np.ndarray, moving: np.ndarray, radius: int,
                  k: int = NEAREST_K) -> np.ndarray:
    """For each (y, x) in ``points`` (N, 2): the share of its ``k`` nearest colours, among the
    ``static`` and ``moving`` pixels within ``radius``, that are static (NaN where the window holds
    no moving pixel, or fewer than ``k`` of both sides together)."""
    H, W = static.shape
    step = max(1, radius // 4)  # a grid of window offsets: at most 81 samples whatever the radius
    offs = np.arange(-radius, radius + 1, step)
    dy, dx = (a.reshape(-1) for a in np.meshgrid(offs, offs, indexing="ij"))
    ys = points[:, :1] + dy[None]
    xs = points[:, 1:] + dx[None]
    inside = (ys >= 0) & (ys < H) & (xs >= 0) & (xs < W)
    ys, xs = np.clip(ys, 0, H - 1), np.clip(xs, 0, W - 1)
    is_static = inside & static[ys, xs]
    is_moving = inside & moving[ys, xs]
    d = np.linalg.norm(rgb[ys, xs] - rgb[points[:, 0], points[:, 1]][:, None], axis=-1)
    d = np.where(is_static | is_moving, d, np.inf)
    k = min(k, d.shape[1])
    nearest = np.argpartition(d, k - 1, axis=1)[:, :k]
    votes = np.take_along_axis(is_static, nearest, axis=1).mean(axis=1)
    valid = np.isfinite(np.take_along_axis(d, nearest, axis=1)).all(axis=1) & is_moving.any(axis=1)
    return np.where(valid, votes, np.nan)


def snap_mask_edges(rgb: np.ndarray, mask: np.ndarray, band: int | None = None) -> SnappedMask:
    """``mask`` (H, W) bool with up to ``band`` px of its edge released where the photo ``rgb``
    (H, W, 3) in [0, 1] says the pixel belongs to the static side (see the module's docstring)."""
    mask = np.asarray(mask, bool)
    H, W = mask.shape
    band = band_px(W, H) if band is None else int(band)
    if band <= 0 or not mask.any() or mask.all():
        return SnappedMask(mask.copy(), 0)
    img = np.asarray(rgb, np.float32)
    m8 = mask.astype(np.uint8)
    ring3 = np.ones((3, 3), np.uint8)
    static = cv2.dilate(m8, ring3, borderType=cv2.BORDER_CONSTANT, borderValue=0) == 0
    deep = cv2.erode(m8, np.ones((2 * band + 1, 2 * band + 1), np.uint8), borderType=cv2.BORDER_CONSTANT,
                     borderValue=1) > 0
    # The candidates: every masked pixel the peel could reach.
    reach = mask & (cv2.dilate((~mask).astype(np.uint8), np.ones((2 * band + 1,) * 2, np.uint8),
                               borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0)
    pts = np.argwhere(reach)
    radius = band + 3  # reaches both sides from anywhere in the band
    # A pixel is static-like when most of its nearest colours in the window are static ones. Nearest
    # colours, not a mean per side: a sky is blue and white, a slope grey and green; and a vote, so
    # that a few static pixels a sloppy mask holds deep inside do not speak for the moving side.
    votes = _static_votes(img, pts, static, deep, radius)
    static_like = np.zeros_like(mask)
    static_like[pts[:, 0], pts[:, 1]] = votes > 0.5  # NaN (no moving side nearby) stays moving
    out = mask.copy()
    for _ in range(band):
        ring = out & (cv2.dilate((~out).astype(np.uint8), ring3, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0)
        release = ring & static_like
        if not release.any():
            break
        out &= ~release
    released = int(mask.sum() - out.sum())
    if released > MAX_RELEASED_SHARE * mask.sum():
        return SnappedMask(mask.copy(), 0)
    return SnappedMask(out, released)


def moving_clean_plate(rgb: np.ndarray, mask: np.ndarray, ring: int = 1, reach: int = 3) -> np.ndarray:
    """The photo's moving region without the static colour mixed into its edge: (H, W, 3).

    A pixel on the mask's edge is a mix of both sides (a skyline pixel is part sky, part rock: a
    photo is anti-aliased and a mask shrunk to the working size has soft edges). Moved with the
    clouds, that mix draws the skyline again in open sky. Here the ``ring`` outermost px of the
    mask take the colours of the moving pixels just inside them instead, grown outward a pixel at a
    time (a mean of the already known 3x3 neighbours); an edge pixel with no interior within
    ``reach`` px (a thin strand) keeps its own colour. Outside the mask the photo is unchanged.
    """
    mask = np.asarray(mask, bool)
    out = np.asarray(rgb, np.float32).copy()
    if ring <= 0 or not mask.any():
        return out
    k3 = np.ones((3, 3), np.uint8)
    known = cv2.erode(mask.astype(np.uint8), k3, iterations=ring, borderType=cv2.BORDER_CONSTANT, borderValue=1) > 0
    todo = mask & ~known
    for _ in range(reach):
        if not todo.any():
            break
        w = known.astype(np.float32)
        num = cv2.boxFilter(out * w[..., None], -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
        den = cv2.boxFilter(w, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
        grow = todo & (den > 0)
        out[grow] = num[grow] / den[grow][:, None]
        known |= grow
        todo &= ~grow
    return out
