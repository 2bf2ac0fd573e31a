"""labelme files: the one parser, and what each shape means for Loopscape.

Semantics (the same in Blender and on the command line):

- ``polygon`` and ``rectangle`` shapes mark the moving region, except those labelled ``hint*``
  or ``anchor*``;
- ``line`` and ``linestrip`` shapes are hint arrows (first point to last) when their label is
  empty or starts with ``hint``; lines with any other label are notes and are ignored;
- ``point`` shapes are anchors (pins that must not move) when their label is empty or starts
  with ``anchor``;
- other shape types (``circle``, ``mask``...) are ignored.

Labels compare case-insensitively. Coordinates are in the file's own imageWidth x imageHeight
pixels, with (0, 0) the top-left corner of the top-left pixel. A hint must start on the image
and have a length; every coordinate must be finite.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import LoopscapeError

MASK_TYPES = ("polygon", "rectangle")
HINT_TYPES = ("line", "linestrip")
ANCHOR_TYPES = ("point",)
MAX_IMAGE_SIDE = 100_000  # a labelme image size beyond this is a corrupt file, not a photo
MAX_COORD = 1e6  # a vertex this far off the image is a corrupt file
_FIX = "Re-save the annotation from labelme with the photo loaded."

Point = tuple[float, float]


@dataclass(frozen=True)
class LabelmeHint:
    start: Point
    end: Point
    label: str


@dataclass(frozen=True)
class Labelme:
    """A parsed labelme file, in its own pixel coordinates."""

    width: float
    height: float
    polygons: tuple[tuple[Point, ...], ...]
    hints: tuple[LabelmeHint, ...]
    anchors: tuple[Point, ...]

    def scale(self, width: int, height: int) -> tuple[float, float]:
        return width / self.width, height / self.height

    def mask(self, width: int, height: int) -> np.ndarray | None:
        """The union of the polygons rasterised at width x height (None when there is no polygon)."""
        if not self.polygons:
            return None
        sx, sy = self.scale(width, height)
        mask = np.zeros((height, width), dtype=bool)
        for poly in self.polygons:
            fill_polygon(mask, [(x * sx, y * sy) for x, y in poly])
        return mask

    def scaled_hints(self, width: int, height: int) -> list[LabelmeHint]:
        sx, sy = self.scale(width, height)
        return [LabelmeHint((h.start[0] * sx, h.start[1] * sy), (h.end[0] * sx, h.end[1] * sy), h.label)
                for h in self.hints]

    def scaled_anchors(self, width: int, height: int) -> list[Point]:
        sx, sy = self.scale(width, height)
        return [(x * sx, y * sy) for x, y in self.anchors]


def read_labelme(path: str | Path) -> Labelme:
    path = Path(path)
    if not path.is_file():
        raise LoopscapeError(f"labelme file not found: {path}.", "Check the path, or leave it out.")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise LoopscapeError(f"{path.name} is not a readable labelme JSON file ({type(exc).__name__}).", _FIX) from None
    return parse_labelme(doc, path.name)


def parse_labelme(doc: Any, source: str = "labelme file") -> Labelme:
    """Validate a decoded labelme document and sort its shapes into polygons, hints and anchors."""
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise LoopscapeError(f"{source} is not a labelme JSON file (it needs a 'shapes' list).", _FIX)
    w = _size(doc.get("imageWidth"), "imageWidth", source)
    h = _size(doc.get("imageHeight"), "imageHeight", source)
    polygons: list[tuple[Point, ...]] = []
    hints: list[LabelmeHint] = []
    anchors: list[Point] = []
    for k, shape in enumerate(doc["shapes"]):
        where = f"{source} shape {k}"
        if not isinstance(shape, dict):
            raise LoopscapeError(f"{where} is a {type(shape).__name__}, not an object.", _FIX)
        kind = shape.get("shape_type", "polygon")
        label = shape.get("label", "")
        if not isinstance(kind, str) or not isinstance(label, str):
            raise LoopscapeError(f"{where} has a non-text shape_type or label.", _FIX)
        label_l = label.lower()
        where = f"{source} shape {k} ('{label}')" if label else where
        pts = _points(shape.get("points"), where)
        if kind in MASK_TYPES and not label_l.startswith(("hint", "anchor")):
            polygons.append(_polygon(kind, pts, where))
        elif kind in HINT_TYPES and (not label_l or label_l.startswith("hint")):
            hints.append(_hint(pts, label or f"hint {k}", where, w, h))
        elif kind in ANCHOR_TYPES and (not label_l or label_l.startswith("anchor")):
            if len(pts) != 1:
                raise LoopscapeError(f"{where} is a point with {len(pts)} coordinates pairs.", _FIX)
            anchors.append(pts[0])
    return Labelme(w, h, tuple(polygons), tuple(hints), tuple(anchors))


def _size(v: Any, name: str, source: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= MAX_IMAGE_SIDE:  # NaN fails too
        raise LoopscapeError(f"{source} has {name} {v!r}; it must be the photo's size in pixels.", _FIX)
    return float(v)


def _points(v: Any, where: str) -> list[Point]:
    if not isinstance(v, list) or not v:
        raise LoopscapeError(f"{where} has no list of points.", _FIX)
    out = []
    for p in v:
        if (not isinstance(p, (list, tuple)) or len(p) != 2
                or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in p)):
            raise LoopscapeError(f"{where} has a point {_short(p)} that is not an [x, y] pair of numbers.", _FIX)
        if not all(-MAX_COORD <= c <= MAX_COORD for c in p):  # NaN and 400-digit integers fail too
            raise LoopscapeError(f"{where} has a coordinate {_short(p)} that is not a finite pixel position.", _FIX)
        x, y = float(p[0]), float(p[1])
        out.append((x, y))
    return out


def _polygon(kind: str, pts: list[Point], where: str) -> tuple[Point, ...]:
    if kind == "rectangle":
        if len(pts) < 2:
            raise LoopscapeError(f"{where} is a rectangle with {len(pts)} corner(s); it needs 2.", _FIX)
        (x0, y0), (x1, y1) = pts[0], pts[-1]
        return (x0, y0), (x1, y0), (x1, y1), (x0, y1)
    if len(pts) < 3:
        raise LoopscapeError(f"{where} is a polygon with {len(pts)} vertices; it needs at least 3.", _FIX)
    return tuple(pts)


def _hint(pts: list[Point], label: str, where: str, w: float, h: float) -> LabelmeHint:
    if len(pts) < 2:
        raise LoopscapeError(f"{where} is a line with {len(pts)} point(s); a hint arrow needs 2.", _FIX)
    start, end = pts[0], pts[-1]
    if not (0 <= start[0] <= w and 0 <= start[1] <= h):
        raise LoopscapeError(f"hint '{label}' starts at ({start[0]:g}, {start[1]:g}), outside the {w:g}x{h:g} image.",
                            "Move the arrow onto the image in labelme.")
    if start == end:
        raise LoopscapeError(f"hint '{label}' has zero length, so it has no direction.",
                            "Drag the arrow out in the direction of motion, or use a point for a still anchor.")
    return LabelmeHint(start, end, label)


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def fill_polygon(mask: np.ndarray, points) -> None:
    """Even-odd fill of a polygon (pixel coordinates, y down) into ``mask`` (H, W), sampled at pixel centres.

    A scanline fill: each row's edge crossings are sorted and the spans between pairs are set,
    so the cost is rows x edges, not pixels x edges.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        return
    h, w = mask.shape
    a, b = pts, np.roll(pts, -1, axis=0)
    y_lo = max(int(np.floor(pts[:, 1].min())), 0)
    y_hi = min(int(np.ceil(pts[:, 1].max())) + 1, h)
    for row in range(y_lo, y_hi):
        yc = row + 0.5
        crosses = (a[:, 1] > yc) != (b[:, 1] > yc)
        if not crosses.any():
            continue
        ax, ay, bx, by = a[crosses, 0], a[crosses, 1], b[crosses, 0], b[crosses, 1]
        xs = np.sort(ax + (yc - ay) * (bx - ax) / (by - ay))
        for x0, x1 in zip(xs[0::2], xs[1::2]):
            # pixel i is inside when x0 < i + 0.5 < x1
            i0 = max(int(np.ceil(x0 - 0.5)), 0)
            i1 = min(int(np.ceil(x1 - 0.5)), w)
            if i0 < i1:
                mask[row, i0:i1] = True  # sorted pairs never overlap: even-odd holds per polygon
