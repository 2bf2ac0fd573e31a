"""Masks and hints from files: a mask image or a labelme JSON (polygons = motion, lines = hints)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class MaskFileError(Exception):
    pass


def fill_polygon(mask: np.ndarray, points) -> None:
    """Even-odd fill of a polygon (pixel coordinates, y down) into mask (H, W), at pixel centres."""
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) < 3:
        return
    h, w = mask.shape
    x0, x1 = max(int(np.floor(pts[:, 0].min())), 0), min(int(np.ceil(pts[:, 0].max())) + 1, w)
    y0, y1 = max(int(np.floor(pts[:, 1].min())), 0), min(int(np.ceil(pts[:, 1].max())) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    px, py = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
    inside = np.zeros(px.shape, dtype=bool)
    a, b = pts, np.roll(pts, -1, axis=0)
    for (ax, ay), (bx, by) in zip(a, b):
        crosses = (ay > py) != (by > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = ax + (py - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (px < xi)
    mask[y0:y1, x0:x1] |= inside


def read_labelme(path: str | Path, width: int, height: int):
    """(mask (H, W) bool, hints [(start, end)], anchors [(x, y)]) scaled from the file's image size to width x height."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MaskFileError(f"Could not read labelme file {path}: {exc}") from exc
    if not isinstance(doc, dict) or "shapes" not in doc:
        raise MaskFileError(f"{path} is not a labelme JSON (no 'shapes').")
    sx = width / float(doc.get("imageWidth") or width)
    sy = height / float(doc.get("imageHeight") or height)
    mask = np.zeros((height, width), dtype=bool)
    hints, anchors = [], []
    for shape in doc["shapes"]:
        pts = [(p[0] * sx, p[1] * sy) for p in shape.get("points", [])]
        kind = shape.get("shape_type", "polygon")
        label = str(shape.get("label", "")).lower()
        if kind == "polygon" and not label.startswith(("hint", "anchor")):
            fill_polygon(mask, pts)
        elif kind in ("line", "linestrip") and len(pts) >= 2:
            hints.append((pts[0], pts[-1]))
        elif kind == "point" and pts:
            anchors.append(pts[0])
    return mask, hints, anchors


def mask_to_pixels(mask: np.ndarray) -> np.ndarray:
    """RGBA float pixels (bottom row first, as Blender stores images) for a bool mask."""
    v = np.flipud(mask).astype(np.float32)
    rgba = np.repeat(v[..., None], 4, axis=2)
    rgba[..., 3] = 1.0
    return rgba.ravel()
