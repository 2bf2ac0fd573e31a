"""Lift every pixel to a 3D point along its camera ray at the given depth (z, not ray length)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.model.camera import Camera


@dataclass
class PointCloud:
    """One point per input pixel, in backend world (OpenCV)."""

    xyz: np.ndarray  # (N, 3) float32 world positions
    rgb: np.ndarray  # (N, 3) float32 colours in [0, 1]
    pixel: np.ndarray  # (N,) int64 flat index y * width + x of the source pixel
    pixel_size: np.ndarray  # (N,) float32 world size of one pixel at that depth (depth / f)
    width: int
    height: int

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


def lift_to_points(rgb: np.ndarray, depth: np.ndarray, camera: Camera) -> PointCloud:
    """Back-project pixel centres (+0.5) with camera-space depth ``depth`` (H, W) through ``camera``."""
    depth = np.asarray(depth)
    h, w = depth.shape
    if rgb.shape[:2] != (h, w) or (camera.width, camera.height) != (w, h):
        raise ValueError(f"lift_to_points: image {rgb.shape[:2]}, depth {depth.shape} and camera "
                         f"{camera.height}x{camera.width} must share one size")
    if not np.all(np.isfinite(depth)) or depth.min() <= 0:
        raise ValueError("lift_to_points: depth must be finite and positive everywhere")
    K = camera.K
    ys, xs = np.mgrid[0:h, 0:w]
    u = xs.reshape(-1) + 0.5
    v = ys.reshape(-1) + 0.5
    z = depth.reshape(-1).astype(np.float64)
    # invert the full K (it may carry skew) rather than assuming a diagonal focal
    rays = np.stack([u, v, np.ones_like(u)], axis=1) @ np.linalg.inv(K).T
    pc = rays * (z / rays[:, 2])[:, None]
    c2w = camera.c2w
    xyz = pc @ c2w[:3, :3].T + c2w[:3, 3]
    focal = float(np.sqrt(K[0, 0] * K[1, 1]))  # geometric mean: the side of a square of equal area
    return PointCloud(
        xyz=xyz.astype(np.float32),
        rgb=np.asarray(rgb, dtype=np.float32).reshape(-1, 3).copy(),
        pixel=(ys * w + xs).reshape(-1).astype(np.int64),
        pixel_size=(z / focal).astype(np.float32),
        width=w,
        height=h,
    )


# ----------------------------------------------------------------------------- the stage

INPUTS = ("image", "depth")


def run(ctx, image, depth) -> PointCloud:
    return lift_to_points(image.rgb, depth.depth, image.camera)
