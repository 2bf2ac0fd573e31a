"""Motion inputs at the working resolution: where things move (mask), which way (hint arrows,
anchors, or a dense Eulerian flow).

Everything the user gives is in input-image pixels (or, for labelme files, in the labelme file's
own imageWidth x imageHeight; for a dense flow, in the flow's own grid). This module rescales it
all to the working resolution, per axis, so later stages never think about sizes again.

Velocities are pixels per frame at the working resolution. A hint without an explicit speed moves
at (end - start) / 50 px per frame, the convention of the prior tools (3D-Cinemagraphy, 3D-MOM).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from backend.infra.errors import LoopscapeError
from backend.infra.events import EventSink
from backend.io.input_checks import check_flow_speed
from contract.labelme import read_labelme

ARROW_FRAMES = 50.0  # an arrow of length L means L / 50 px per frame (prior tools' convention)
FLOW_MASK_MIN = 1e-2  # px/frame below which a dense flow counts as static when it defines the mask
HINT_MASK_TOLERANCE = 2  # px at working res: a hint start this close to the mask still counts as inside


@dataclass
class Hint:
    """An arrow from ``start`` to ``end`` (x, y pixels at working res); ``speed`` px/frame or None."""

    start: tuple[float, float]
    end: tuple[float, float]
    speed: float | None = None
    name: str = ""

    def velocity(self, factor: float = 1.0) -> np.ndarray:
        """Pixels per frame: (end - start) / 50, or the unit direction times ``speed``; times ``factor``."""
        d = np.asarray(self.end, np.float64) - np.asarray(self.start, np.float64)
        if self.speed is not None:
            n = float(np.linalg.norm(d))
            d = d / n * float(self.speed) if n > 0 else np.zeros(2)
        else:
            d = d / ARROW_FRAMES
        return d * float(factor)


@dataclass
class MotionInputs:
    """Motion inputs at the working resolution (W, H)."""

    mask: np.ndarray  # (H, W) bool
    hints: list[Hint] = field(default_factory=list)
    anchors: list[tuple[float, float]] = field(default_factory=list)
    flow: np.ndarray | None = None  # (H, W, 2) float32 px/frame, zero outside the mask
    speed: float = 1.0
    edge_released_px: int = 0  # mask pixels the edge snap made static (backend.model.mask_edges)
    painted_mask: np.ndarray | None = None  # (H, W) bool, the mask before the edge snap (None: not snapped)

    @property
    def size(self) -> tuple[int, int]:
        return self.mask.shape[1], self.mask.shape[0]

    def hint_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Hint start points (K, 2) and velocities (K, 2) px/frame with the global speed applied."""
        if not self.hints:
            return np.zeros((0, 2)), np.zeros((0, 2))
        pts = np.array([h.start for h in self.hints], np.float64)
        vel = np.stack([h.velocity(self.speed) for h in self.hints])
        return pts, vel

    def anchor_array(self) -> np.ndarray:
        return np.asarray(self.anchors, np.float64).reshape(-1, 2)


def load_motion_inputs(
    working_size: tuple[int, int],
    original_size: tuple[int, int],
    mask_path: str | Path | None = None,
    labelme_path: str | Path | None = None,
    flow_path: str | Path | None = None,
    hints: Sequence[dict[str, Any]] = (),
    anchors: Sequence[Sequence[float]] = (),
    speed: float = 1.0,
    events: EventSink | None = None,
) -> MotionInputs | None:
    """Gather every motion input, rescale to ``working_size`` (W, H); None when there is none.

    ``hints`` are dicts ``{"start": [x, y], "end": [x, y], "speed": v|None}`` and ``anchors`` are
    ``[x, y]``, both in input-image pixels (``original_size``); a hint speed is in input-image px
    per frame. The mask is the union of the mask file and the labelme polygons; without either,
    a dense flow defines it (|flow| > 0.01 px/frame).
    """
    W, H = int(working_size[0]), int(working_size[1])
    W0, H0 = int(original_size[0]), int(original_size[1])
    if not (math.isfinite(speed) and speed > 0):
        raise LoopscapeError(f"motion speed factor must be a positive number, got {speed}.", "Use e.g. 1.0 (0.5 = half speed).")
    if mask_path is None and labelme_path is None and flow_path is None and not hints and not anchors:
        return None

    mask: np.ndarray | None = None
    all_hints: list[Hint] = []
    all_anchors: list[tuple[float, float]] = []
    if mask_path is not None:
        mask = load_mask(Path(mask_path), W, H)
    if labelme_path is not None:
        poly_mask, lm_hints, lm_anchors = _load_labelme(Path(labelme_path), W, H, need_polygons=mask is None and flow_path is None)
        if poly_mask is not None:
            mask = poly_mask if mask is None else (mask | poly_mask)
        all_hints += lm_hints
        all_anchors += lm_anchors
    flow = _load_flow(Path(flow_path), W, H) if flow_path is not None else None
    if mask is None and flow is not None:
        mask = np.linalg.norm(flow, axis=2) > FLOW_MASK_MIN
    sx, sy = W / W0, H / H0
    for i, h in enumerate(hints):
        all_hints.append(_hint_from_dict(h, i, sx, sy, W0, H0))
    for i, a in enumerate(anchors):
        x, y = _xy(a, f"anchor {i}")
        if not (0 <= x <= W0 and 0 <= y <= H0):
            raise LoopscapeError(f"anchor {i} at ({x:g}, {y:g}) lies outside the {W0}x{H0} image.", "Move the anchor onto the image.")
        all_anchors.append((x * sx, y * sy))

    if mask is None:
        raise LoopscapeError(
            "hint arrows or anchors were given but nothing says which region moves.",
            "Add a motion mask (paint it, or pass a mask PNG / labelme polygons) or a dense flow.",
        )
    if not mask.any():
        raise LoopscapeError("the motion mask is empty: no pixel is marked as moving.", "Paint the moving region (white = moving) or remove the mask.")
    if flow is not None:
        flow = flow * mask[:, :, None]
    all_hints = _drop_hints_off_mask(all_hints, mask, events)
    if flow is None and not all_hints:
        raise LoopscapeError(
            "a motion mask was given but no hint arrow lies inside it, so the direction of motion is unknown.",
            "Draw at least one arrow starting inside the masked region, or pass a dense flow.",
        )
    return MotionInputs(mask=mask, hints=all_hints, anchors=all_anchors, flow=flow, speed=float(speed))


# --- mask --------------------------------------------------------------------------------------

def load_mask(path: Path, W: int, H: int) -> np.ndarray:
    """A mask image (white = moving) at (H, W) as bool."""
    if not path.is_file():
        raise LoopscapeError(f"motion mask not found: {path}.", "Check the path, or leave the mask out.")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise LoopscapeError(f"motion mask {path} is not a readable image.", "Save the mask as a PNG, white = moving, black = static.")
    if img.dtype == np.uint8:
        f = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        f = img.astype(np.float32) / 65535.0
    else:
        f = img.astype(np.float32)
        f = f / max(float(f.max()), 1e-12)
    if f.ndim == 3:
        if f.shape[2] == 4 and np.ptp(f[:, :, :3]) == 0.0:
            f = f[:, :, 3]  # a flat colour with the mask in alpha
        else:
            f = f[:, :, :3].max(axis=2)  # any colour channel marks motion (RGB masks from tools)
    return _resize_mask(f, W, H)


def _resize_mask(f: np.ndarray, W: int, H: int) -> np.ndarray:
    """Resize a [0,1] mask to (H, W) and threshold at 0.5 (area average when shrinking)."""
    if f.shape != (H, W):
        shrinking = f.shape[0] >= H and f.shape[1] >= W
        f = cv2.resize(f, (W, H), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return f > 0.5


# --- labelme -----------------------------------------------------------------------------------

def _load_labelme(path: Path, W: int, H: int, need_polygons: bool) -> tuple[np.ndarray | None, list[Hint], list[tuple[float, float]]]:
    """Polygons, hints and anchors of a labelme file at (W, H), by the contract's rules (shared with Blender)."""
    doc = read_labelme(path)
    mask = doc.mask(W, H)
    if mask is None and need_polygons:
        raise LoopscapeError(f"labelme file {path} has no polygon, so it marks no moving region.",
                             "Draw the moving region as a polygon in labelme, or pass a mask PNG.")
    hints = [Hint(h.start, h.end, None, h.label) for h in doc.scaled_hints(W, H)]
    return mask, hints, doc.scaled_anchors(W, H)


# --- dense flow --------------------------------------------------------------------------------

def _load_flow(path: Path, W: int, H: int) -> np.ndarray:
    if not path.is_file():
        raise LoopscapeError(f"flow file not found: {path}.", "Check the path, or leave the flow out.")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise LoopscapeError(f"flow file {path} is not a readable .npy array ({exc}).", "Save it with numpy.save as float32 (2, H, W) in pixels per frame.") from None
    a = np.asarray(arr)
    if a.ndim == 4 and a.shape[0] == 1 and a.shape[1] == 2:
        a = a[0]
    if a.ndim == 3 and a.shape[0] == 2 and a.shape[2] != 2:
        a = np.moveaxis(a, 0, 2)
    elif not (a.ndim == 3 and a.shape[2] == 2):
        raise LoopscapeError(f"flow {path} has shape {arr.shape}; expected (2, H, W), (1, 2, H, W) or (H, W, 2).", "Save the flow as (2, H, W) float32, pixels per frame.")
    if not np.issubdtype(a.dtype, np.number) or a.shape[0] < 2 or a.shape[1] < 2:
        raise LoopscapeError(f"flow {path} has shape {arr.shape} and type {a.dtype}.", "Save the flow as (2, H, W) float32, pixels per frame.")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise LoopscapeError(f"flow {path} contains NaN or infinite values.", "Replace them (e.g. with 0 for static pixels) and save again.")
    check_flow_speed(a, path.name)  # before the resize and the mask threshold square it
    fh, fw = a.shape[:2]
    if (fw, fh) != (W, H):
        shrinking = fw >= W and fh >= H
        a = cv2.resize(a, (W, H), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        a[:, :, 0] *= W / fw  # vectors are in the flow grid's pixels: rescale per axis
        a[:, :, 1] *= H / fh
    return np.ascontiguousarray(a, dtype=np.float32)


# --- hints -------------------------------------------------------------------------------------

def _xy(v: Any, what: str) -> tuple[float, float]:
    try:
        x, y = (float(t) for t in v)
    except (TypeError, ValueError):
        raise LoopscapeError(f"{what} must be a pair [x, y] of numbers, got {v!r}.", "Give pixel coordinates of the input image.") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise LoopscapeError(f"{what} has a non-finite coordinate {v!r}.", "Give pixel coordinates of the input image.")
    return x, y


def _hint_from_dict(h: dict[str, Any], i: int, sx: float, sy: float, W0: int, H0: int) -> Hint:
    name = str(h.get("name", f"hint {i}")) if isinstance(h, dict) else f"hint {i}"
    if not isinstance(h, dict) or "start" not in h or "end" not in h:
        raise LoopscapeError(f"{name} must have 'start' and 'end' points, got {h!r}.", 'Write hints as {"start": [x, y], "end": [x, y]}.')
    x0, y0 = _xy(h["start"], f"{name} start")
    x1, y1 = _xy(h["end"], f"{name} end")
    if not (0 <= x0 <= W0 and 0 <= y0 <= H0):
        raise LoopscapeError(f"{name} starts at ({x0:g}, {y0:g}), outside the {W0}x{H0} input image.", "Move the arrow's start onto the image.")
    if (x0, y0) == (x1, y1):
        raise LoopscapeError(f"{name} has zero length, so it has no direction.", "Drag the arrow out in the direction of motion, or use an anchor for still points.")
    speed = h.get("speed")
    if speed is not None:
        speed = float(speed)
        if not (math.isfinite(speed) and speed >= 0):
            raise LoopscapeError(f"{name} has speed {speed}; it must be a non-negative number of pixels per frame.", "Leave it empty to use the arrow length / 50.")
        # input-image px/frame -> working px/frame along the arrow's direction
        d = np.array([(x1 - x0) * sx, (y1 - y0) * sy])
        d0 = np.array([x1 - x0, y1 - y0])
        speed *= float(np.linalg.norm(d) / np.linalg.norm(d0))
    return Hint((x0 * sx, y0 * sy), (x1 * sx, y1 * sy), speed, name)


def _drop_hints_off_mask(hints: list[Hint], mask: np.ndarray, events: EventSink | None) -> list[Hint]:
    H, W = mask.shape
    near = cv2.dilate(mask.astype(np.uint8), np.ones((2 * HINT_MASK_TOLERANCE + 1,) * 2, np.uint8)) > 0
    kept = []
    for h in hints:
        x, y = h.start
        xi, yi = min(max(int(x), 0), W - 1), min(max(int(y), 0), H - 1)
        if near[yi, xi]:
            kept.append(h)
        elif events is not None:
            events.warning(f"{h.name or 'a hint'} starts outside the motion mask and is ignored; draw it inside the moving region.")
    return kept
