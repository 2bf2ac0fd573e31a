"""A result at a glance: ``preview.png`` (a labelled contact sheet) and ``preview.webp`` (the path video, looping).

The sheet is a grid of equal tiles, ``SHEET_COLUMNS`` wide:

    row 0   input photo | mask overlay with the hint arrows (motion jobs) | job summary
    row 1   ~6 frames of the path video (video.mp4), each labelled with its frame number
    row 2   ~6 frames of the input-view loop (input_view.mp4), motion jobs only

Every frame goes through :func:`backend.io.video.to_uint8`, the clipping conversion the videos use.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from backend.io.atomic import atomic_write_bytes
from backend.infra.errors import LoopscapeError
from backend.io.video import to_uint8
from contract import protocol

PREVIEW_NAME = "preview.png"
ANIM_NAME = "preview.webp"
SHEET_COLUMNS = 6  # frames per video row
TILE_MIN_LONG = 160  # tiny jobs are upscaled (nearest) so labels and arrows stay readable
TILE_MAX_LONG = 256  # large jobs are downscaled: the sheet is a glance, not a deliverable
LABEL_H = 18  # px of label strip above each tile
GAP = 4  # px between tiles and around the sheet
BG = (32, 32, 32)  # sheet background, RGB
ANIM_MAX_BYTES = 2_000_000
ANIM_MAX_LONG = 256
ANIM_MAX_FRAMES = 60  # longer videos are decimated (the frame duration grows to keep the speed)
ARROW_RGB = (255, 140, 26)  # the Blender overlay's hint colour
ANCHOR_RGB = (51, 204, 255)
MASK_RGB = np.array([70, 225, 120], np.float32)  # green: distinct from skies, water and the orange arrows


@dataclass(frozen=True)
class SheetLayout:
    """Geometry of the contact sheet: tile size, rows, and the whole sheet's size in pixels."""

    tile_w: int
    tile_h: int
    rows: int
    cols: int = SHEET_COLUMNS

    @staticmethod
    def for_image(width: int, height: int, rows: int) -> "SheetLayout":
        long_side = max(width, height)
        if long_side < TILE_MIN_LONG:
            s = float(math.ceil(TILE_MIN_LONG / long_side))
        else:
            s = min(1.0, TILE_MAX_LONG / long_side)
        return SheetLayout(max(1, round(width * s)), max(1, round(height * s)), rows)

    @property
    def cell_w(self) -> int:
        return self.tile_w + GAP

    @property
    def cell_h(self) -> int:
        return LABEL_H + self.tile_h + GAP

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the sheet."""
        return GAP + self.cols * self.cell_w, GAP + self.rows * self.cell_h

    def tile_origin(self, row: int, col: int) -> tuple[int, int]:
        """(x, y) of the tile's top-left pixel (its label strip is just above)."""
        return GAP + col * self.cell_w, GAP + row * self.cell_h + LABEL_H


def pick_frames(n: int, k: int = SHEET_COLUMNS) -> list[int]:
    """Up to ``k`` frame indices spread evenly over 0 .. n-1, first and last included."""
    if n <= 0:
        return []
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, min(k, n))})


def _tile(img: np.ndarray, layout: SheetLayout) -> np.ndarray:
    a = to_uint8(img)
    if a.shape[:2] == (layout.tile_h, layout.tile_w):
        return a
    interp = cv2.INTER_NEAREST if layout.tile_w > a.shape[1] else cv2.INTER_AREA
    return cv2.resize(a, (layout.tile_w, layout.tile_h), interpolation=interp)


def _put_text(canvas: np.ndarray, text: str, x: int, y: int, scale: float = 0.42, rgb=(235, 235, 235)) -> None:
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, rgb, 1, cv2.LINE_AA)


def mask_overlay(photo: np.ndarray, mask: np.ndarray, hints: Sequence[tuple[tuple[float, float], tuple[float, float]]] = (),
                 anchors: Sequence[tuple[float, float]] = (), flow: np.ndarray | None = None,
                 out_size: tuple[int, int] | None = None) -> np.ndarray:
    """The photo with the moving region tinted and outlined, the hint arrows (or, for a dense flow
    without arrows, a grid of flow arrows) and the anchor pins; drawn at ``out_size`` (w, h)."""
    H, W = mask.shape
    ow, oh = out_size or (W, H)
    base = cv2.resize(to_uint8(photo), (ow, oh), interpolation=cv2.INTER_NEAREST if ow > W else cv2.INTER_AREA)
    m = cv2.resize(mask.astype(np.uint8), (ow, oh), interpolation=cv2.INTER_NEAREST) > 0
    img = base.astype(np.float32)
    img[m] = 0.55 * img[m] + 0.45 * MASK_RGB
    img[~m] *= 0.6  # dim what stays still, so the moving region reads at a glance
    out = np.ascontiguousarray(img.clip(0, 255).astype(np.uint8))
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (255, 255, 255), 1, cv2.LINE_AA)
    sx, sy = ow / W, oh / H
    arrows = [((a[0] * sx, a[1] * sy), (b[0] * sx, b[1] * sy)) for a, b in hints]
    if not arrows and flow is not None and m.any():
        arrows = _flow_arrows(flow, mask, sx, sy)
    thick = max(1, round(min(ow, oh) / 120))
    for (x0, y0), (x1, y1) in arrows:
        cv2.arrowedLine(out, (round(x0), round(y0)), (round(x1), round(y1)), ARROW_RGB, thick, cv2.LINE_AA,
                        tipLength=0.3)
    for x, y in anchors:
        cv2.circle(out, (round(x * sx), round(y * sy)), max(3, 2 * thick + 1), ANCHOR_RGB, thick, cv2.LINE_AA)
    return out


def _flow_arrows(flow: np.ndarray, mask: np.ndarray, sx: float, sy: float,
                 grid: int = 10) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """A sparse grid of arrows along a dense flow (px/frame) inside the mask, the longest a grid step."""
    H, W = mask.shape
    step = max(W, H) / grid
    pts = [(x, y) for y in np.arange(step / 2, H, step) for x in np.arange(step / 2, W, step)
           if mask[int(y), int(x)]]
    if not pts:
        return []
    vel = np.array([flow[int(y), int(x)] for x, y in pts], np.float64)
    vmax = float(np.linalg.norm(vel, axis=-1).max())
    if vmax <= 0:
        return []
    k = 0.9 * step / vmax
    return [((x * sx, y * sy), ((x + k * v[0]) * sx, (y + k * v[1]) * sy)) for (x, y), v in zip(pts, vel)]


def contact_sheet(photo: np.ndarray, path_frames: Sequence[np.ndarray], overlay: np.ndarray | None = None,
                  input_view_frames: Sequence[np.ndarray] | None = None, summary: Sequence[str] = ()) -> np.ndarray:
    """The sheet as (H, W, 3) uint8 RGB; see the module doc for the layout."""
    if len(path_frames) == 0:
        raise LoopscapeError("the contact sheet needs at least one frame of the path video.", "Render the path first.")
    h, w = np.asarray(photo).shape[:2]
    rows = 2 + (1 if input_view_frames is not None and len(input_view_frames) else 0)
    lay = SheetLayout.for_image(w, h, rows)
    sw, sh = lay.size
    sheet = np.empty((sh, sw, 3), np.uint8)
    sheet[:] = BG

    def place(row: int, col: int, img: np.ndarray, label: str) -> None:
        x, y = lay.tile_origin(row, col)
        sheet[y:y + lay.tile_h, x:x + lay.tile_w] = _tile(img, lay)
        _put_text(sheet, label, x + 2, y - 5)

    place(0, 0, photo, "input photo")
    col = 1
    if overlay is not None:
        place(0, 1, overlay, "mask + arrows")
        col = 2
    tx, ty = lay.tile_origin(0, col)
    for i, line in enumerate(summary):
        _put_text(sheet, line, tx + 4, ty + 14 + 18 * i, rgb=(200, 200, 200))
    for j, i in enumerate(pick_frames(len(path_frames))):
        place(1, j, path_frames[i], f"path video #{i}")
    if rows == 3:
        for j, i in enumerate(pick_frames(len(input_view_frames))):
            place(2, j, input_view_frames[i], f"input view #{i}")
    return sheet


def encode_anim(frames: Sequence[np.ndarray], fps: float, max_bytes: int = ANIM_MAX_BYTES) -> bytes:
    """A looping animated WebP of ``frames``, at most ``max_bytes``: smaller and rougher until it fits."""
    from PIL import Image

    step = max(1, math.ceil(len(frames) / ANIM_MAX_FRAMES))
    picked = [to_uint8(f) for f in frames[::step]]
    h, w = picked[0].shape[:2]
    long_side, quality = min(ANIM_MAX_LONG, max(w, h)), 80
    while True:
        s = long_side / max(w, h)
        size = (max(2, round(w * s)), max(2, round(h * s)))
        imgs = [Image.fromarray(f).resize(size, Image.Resampling.LANCZOS if s < 1 else Image.Resampling.NEAREST)
                for f in picked]
        buf = io.BytesIO()
        imgs[0].save(buf, format="WEBP", save_all=True, append_images=imgs[1:], loop=0, quality=quality,
                     duration=max(1, round(1000.0 * step / fps)), method=4)
        data = buf.getvalue()
        if len(data) <= max_bytes or long_side <= 32:
            return data
        long_side, quality = int(long_side * 0.75), max(40, quality - 15)


def write_previews(folder: Path, photo: np.ndarray, path_frames: Sequence[np.ndarray], fps: float,
                   motion=None, input_view_frames: Sequence[np.ndarray] | None = None,
                   summary: Sequence[str] = ()) -> dict[str, str]:
    """Write preview.png and preview.webp into ``folder``; returns their result.json entries.

    ``motion`` is the job's MotionInputs (None for a still scene); ``input_view_frames`` one loop period.
    """
    overlay = None
    if motion is not None:
        overlay = mask_overlay(photo, motion.mask, [(h.start, h.end) for h in motion.hints], motion.anchors,
                               motion.flow, out_size=_overlay_size(photo))
    sheet = contact_sheet(photo, path_frames, overlay, input_view_frames, summary)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(sheet[..., ::-1]))
    if not ok:  # pragma: no cover - OpenCV only fails here on absurd sizes
        raise LoopscapeError("could not encode the contact sheet as PNG.", "Check the frame sizes.")
    atomic_write_bytes(Path(folder) / PREVIEW_NAME, buf.tobytes())
    atomic_write_bytes(Path(folder) / ANIM_NAME, encode_anim(path_frames, fps))
    return {protocol.KEY_PREVIEW: PREVIEW_NAME, protocol.KEY_PREVIEW_ANIM: ANIM_NAME}


def job_summary(job, width: int, height: int) -> list[str]:
    """The sheet's text block: what was run."""
    path = job.path if isinstance(job.path, str) else "custom"
    return [f"{Path(str(job.image)).name}  {width}x{height}",
            f"quality {job.quality}, {job.frames} frames at {job.fps:g} fps",
            f"camera path {Path(path).name}, depth {Path(str(job.depth)).name}",
            "rows: path video (video.mp4)" + (", input view (input_view.mp4)" if job.has_motion else "")]


def _overlay_size(photo: np.ndarray) -> tuple[int, int]:
    """Draw the overlay at tile size, so the arrows are crisp lines rather than resampled pixels."""
    h, w = np.asarray(photo).shape[:2]
    lay = SheetLayout.for_image(w, h, 1)
    return lay.tile_w, lay.tile_h
