"""Masks and motion inputs from files and images, as bool arrays (H, W) with row 0 at the top (no bpy).

labelme files are read by the contract's parser, so Blender and the command line see the same
mask, hints and anchors; Blender stores image pixels bottom row first, hence the flips here.
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..contract.labelme import read_labelme as _read_labelme

Point = tuple[float, float]
Arrow = tuple[Point, Point]  # a hint arrow's start and end


def read_labelme(path: str | Path, width: int, height: int) -> tuple[np.ndarray, list[Arrow], list[Point]]:
    """(mask (H, W) bool, hints [(start, end)], anchors [(x, y)]) scaled from the file's image size to
    width x height; raises the contract's LoopscapeError for a file it refuses."""
    doc = _read_labelme(path)
    mask = doc.mask(width, height)
    hints = [(h.start, h.end) for h in doc.scaled_hints(width, height)]
    return (np.zeros((height, width), dtype=bool) if mask is None else mask), hints, doc.scaled_anchors(width, height)


def mask_to_pixels(mask: np.ndarray) -> np.ndarray:
    """RGBA float pixels (bottom row first, as Blender stores images) for a bool mask."""
    v = np.flipud(mask).astype(np.float32)
    rgba = np.repeat(v[..., None], 4, axis=2)
    rgba[..., 3] = 1.0
    return rgba.ravel()


def pixels_to_mask(pixels: np.ndarray, width: int, height: int, channels: int) -> np.ndarray:
    """A bool mask from Blender's flat float pixels: the luminance of RGB over 0.5, ignoring alpha
    (painting in Blender changes colour, not alpha)."""
    px = np.asarray(pixels, dtype=np.float32).reshape(height, width, channels)
    value = px[..., :3].mean(axis=2) if channels >= 3 else px[..., 0]
    return np.flipud(value > 0.5)


def write_png_gray(path: Path, mask: np.ndarray) -> None:
    """8-bit greyscale PNG, written with zlib only (no colour management on the way)."""
    h, w = mask.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in (mask.astype(np.uint8) * 255))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(png)
    os.replace(tmp, path)
