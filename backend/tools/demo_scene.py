"""The built-in default input: a procedural landscape with sky, clouds, mountains and a lake.

It is generated from a seed (no files shipped), together with its true depth, a motion mask
over the water and the clouds, and hint arrows: the water flows to the right, the clouds drift
left. ``python -m backend run --demo`` uses it, so the product runs on a fresh machine with no
photo and no network.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from backend.io.atomic import atomic_path, atomic_write_json


@dataclass
class DemoScene:
    rgb: np.ndarray  # (H, W, 3) float32
    depth: np.ndarray  # (H, W) float32, near content at 1.0
    mask: np.ndarray  # (H, W) bool: water and clouds
    hints: list[dict]  # arrows in image pixels
    width: int
    height: int


def _fbm(shape: tuple[int, int], rng: np.random.Generator, octaves: int = 5, base: int = 4) -> np.ndarray:
    """Fractal value noise in [0, 1] from upsampled random grids."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = base * 2**o
        grid = rng.random((cells + 1, int(cells * w / h) + 2)).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    out /= total
    return (out - out.min()) / max(float(out.max() - out.min()), 1e-6)


def make_demo_scene(width: int = 512, height: int = 320, seed: int = 7) -> DemoScene:
    rng = np.random.default_rng(seed)
    H, W = height, width
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    horizon = int(0.58 * H)  # the lake's far shore
    v = ys / H

    # Sky: vertical gradient plus soft cumulus from thresholded noise.
    sky = np.stack([0.45 + 0.35 * v, 0.62 + 0.25 * v, 0.92 + 0.05 * v], -1)
    clouds = np.clip((_fbm((H, W), rng, 5, 3) - 0.5) * 3.0, 0, 1) * (v < 0.45)
    sky = sky * (1 - clouds[..., None]) + np.array([0.97, 0.97, 0.98]) * clouds[..., None]

    # Mountains: two ridges from 1D noise, the far one hazier.
    def ridge(level: float, rough: float, s: int) -> np.ndarray:
        r = np.random.default_rng(s)
        line = cv2.resize(r.random((1, 12)).astype(np.float32), (W, 1), interpolation=cv2.INTER_CUBIC)[0]
        fine = cv2.resize(r.random((1, 60)).astype(np.float32), (W, 1), interpolation=cv2.INTER_LINEAR)[0]
        return (level - rough * (0.7 * line + 0.3 * fine)) * H

    far_r, near_r = ridge(0.50, 0.22, seed + 1), ridge(0.58, 0.16, seed + 2)
    rock = _fbm((H, W), rng, 4, 6)
    img = sky.copy()
    depth = np.full((H, W), 20.0, np.float32)
    far_m = ys >= far_r[None, :]
    near_m = ys >= near_r[None, :]
    img[far_m] = (np.array([0.50, 0.56, 0.68]) * (0.85 + 0.15 * rock[..., None]))[far_m]
    depth[far_m] = 9.0
    near_col = np.stack([0.25 + 0.15 * rock, 0.32 + 0.15 * rock, 0.22 + 0.1 * rock], -1)
    img[near_m] = near_col[near_m]
    depth[near_m] = 5.0 + 1.5 * (1 - (ys[near_m] - near_r[None, :].repeat(H, 0)[near_m]) / H)

    # Lake from the shore to the bottom: a ground plane, depth ~ 1 / (y - horizon).
    water = ys >= horizon
    ripple = _fbm((H, W), rng, 4, 8)
    streak = 0.5 + 0.5 * np.sin(xs / 6.0 + 4.0 * ripple)
    refl = np.flipud(img)[np.clip(2 * horizon - ys.astype(int), 0, H - 1), xs.astype(int)]
    water_col = 0.55 * np.array([0.16, 0.32, 0.45]) + 0.35 * refl + 0.1 * streak[..., None]
    img[water] = water_col[water]
    plane = 1.0 * (H - horizon) / np.maximum(ys - horizon + 1.0, 1.0)
    depth[water] = np.minimum(plane[water], 5.0)

    # The whole sky drifts (as an artist would paint it): a mask with pockets inside the clouds
    # would stop the Gaussians that enter a pocket and tear the clouds apart.
    mask = water | (~far_m & ~near_m & ~water)
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8)) > 0
    # Water flows right, clouds drift left; each arrow starts on the nearest masked pixel.
    wanted = [((0.20, 0.85), 0.20), ((0.60, 0.72), 0.20), ((0.75, 0.18), -0.13), ((0.30, 0.25), -0.13)]
    my, mx = np.nonzero(mask)
    hints = []
    for (fx, fy), dx in wanted:
        k = int(np.argmin((mx - fx * W) ** 2 + (my - fy * H) ** 2))
        x0, y0 = float(mx[k]) + 0.5, float(my[k]) + 0.5
        hints.append({"start": [x0, y0], "end": [x0 + dx * W, y0], "speed": None})
    return DemoScene(np.clip(img, 0, 1).astype(np.float32), depth.astype(np.float32), mask, hints, W, H)


def write_demo_inputs(folder: Path, scene: DemoScene | None = None) -> dict:
    """Write image.png, mask.png and depth.npy into ``folder``; return job fields that use them."""
    scene = scene or make_demo_scene()
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "image.png") as tmp:
        cv2.imwrite(str(tmp), (scene.rgb[..., ::-1] * 255 + 0.5).astype(np.uint8))
    with atomic_path(folder / "mask.png") as tmp:
        cv2.imwrite(str(tmp), scene.mask.astype(np.uint8) * 255)
    with atomic_path(folder / "depth.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, scene.depth)
    fields = {
        "image": str(folder / "image.png"),
        "mask": str(folder / "mask.png"),
        "depth": str(folder / "depth.npy"),
        "depth_kind": "depth",
        "hints": scene.hints,
    }
    atomic_write_json(folder / "demo_job_fields.json", fields)
    return fields
