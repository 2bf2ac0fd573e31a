"""Load the input photo as float RGB at the working resolution, and save it back as 8-bit PNG.

PNG and JPEG, 8 or 16 bits per channel. EXIF orientation is applied (cameras store portrait
shots sideways), alpha is dropped and grayscale is expanded to RGB. Pixel data is decoded by
OpenCV (keeps 16 bits); Pillow only identifies the format and reads the EXIF tag.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from backend.io.atomic import atomic_path
from backend.infra.errors import LoopscapeError

MIN_SIDE = 16  # smaller images cannot carry a landscape, and break the depth/flow stages
MIN_WORKING_SIDE = 16  # after --max-side: SSIM's 11-px window and the flow pyramids need this much
MAX_WORKING_SIDE = 16384  # the job's max_side bound
MAX_PIXELS = 2**27  # ~134 megapixels (a 16-bit RGB decode of this is 800 MB); checked from the header
SUPPORTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG"}  # MPO = JPEG from some cameras
_EXIF_ORIENTATION = 0x0112


@dataclass
class InputImage:
    """The photo at working resolution; ``scale`` = working size / original size."""

    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
    path: Path
    original_size: tuple[int, int]  # (W, H) after EXIF orientation
    scale: float

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


def load_image(path: str | Path, max_side: int | None = None) -> InputImage:
    """Read ``path`` and downscale (INTER_AREA) so the long side is at most ``max_side``; never upscale."""
    path = Path(path)
    if max_side is not None and int(max_side) <= 0:
        raise LoopscapeError(f"max_side must be positive, got {max_side}.", "Pass a size such as 512, or none to keep the original size.")
    if not path.exists():
        raise LoopscapeError(f"input image not found: {path}.", "Check the path (relative paths are taken from the current folder).")
    if path.is_dir():
        raise LoopscapeError(f"input image is a folder, not a file: {path}.", "Pass the path of a PNG or JPEG file.")
    data = path.read_bytes()
    fmt, orientation = _identify(data, path)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise LoopscapeError(f"could not decode the {fmt} image {path}; the file looks damaged.", "Re-export the image as PNG or JPEG.")
    rgb = _to_float_rgb(img, path)
    rgb = _apply_orientation(rgb, orientation)
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise LoopscapeError(f"image {path} is only {w}x{h} pixels.", f"Use an image at least {MIN_SIDE} pixels on each side (ideally 512 or more).")
    scale = 1.0
    if max_side is not None and max(h, w) > int(max_side):
        scale = int(max_side) / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        scale = nw / w if w >= h else nh / h  # the exact ratio along the long side after rounding
    if min(rgb.shape[:2]) < MIN_WORKING_SIDE:
        ww, wh = rgb.shape[1], rgb.shape[0]
        need = math.ceil(MIN_WORKING_SIDE * max(w, h) / min(w, h))
        raise LoopscapeError(
            f"image {path.name} is {w}x{h}; at --max-side {max_side} it is worked on at {ww}x{wh}, under "
            f"{MIN_WORKING_SIDE} px on a side.",
            f"Raise --max-side to at least {need}, or crop the photo to a less extreme shape." if need <= MAX_WORKING_SIDE
            else "Crop the photo to a less extreme shape (e.g. 3:1 or squarer).")
    rgb = np.clip(np.ascontiguousarray(rgb, dtype=np.float32), 0.0, 1.0)
    return InputImage(rgb=rgb, path=path, original_size=(w, h), scale=float(scale))


def save_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write float RGB in [0, 1] (or uint8 RGB) as an 8-bit PNG, atomically."""
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"save_png expects (H, W, 3), got {arr.shape}")
    if arr.dtype != np.uint8:
        from backend.io.video import to_uint8

        arr = to_uint8(arr)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr[:, :, ::-1]))
    if not ok:  # pragma: no cover - OpenCV only fails here on absurd sizes
        raise LoopscapeError(f"could not encode PNG for {path}.", "Check the image size.")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


class _TooLarge(Exception):
    pass


def _identify(data: bytes, path: Path) -> tuple[str, int]:
    """Return (format, EXIF orientation 1..8) or raise a user-facing error."""
    try:
        # PIL's own bomb check fires inside open() without saying the size; ours below does.
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            im = Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = limit
        with im:
            fmt = im.format or "?"
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise _TooLarge(w, h)
            orientation = 1
            if fmt in SUPPORTED_FORMATS:
                try:
                    orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1))
                except Exception:  # a broken EXIF block should not reject a readable photo
                    orientation = 1
    except _TooLarge as exc:
        raise LoopscapeError(f"image {path.name} has {exc.args[0]}x{exc.args[1]} pixels, over the limit of {MAX_PIXELS / 1e6:.0f} megapixels.",
                             "Downscale the photo (a long side of 4096 px is plenty) and try again.") from None
    except UnidentifiedImageError:
        raise LoopscapeError(f"{path} is not a readable image (damaged or unknown format).", "Use a PNG or JPEG file.") from None
    except OSError as exc:
        raise LoopscapeError(f"could not read image {path}: {exc}.", "Re-export the image as PNG or JPEG.") from None
    if fmt not in SUPPORTED_FORMATS:
        raise LoopscapeError(f"image format {fmt} of {path} is not supported.", "Convert it to PNG or JPEG.")
    return SUPPORTED_FORMATS[fmt], orientation if 1 <= orientation <= 8 else 1


def _to_float_rgb(img: np.ndarray, path: Path) -> np.ndarray:
    if img.dtype == np.uint8:
        f = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        f = img.astype(np.float32) / 65535.0
    else:
        raise LoopscapeError(f"image {path} has unsupported sample type {img.dtype}.", "Save it with 8 or 16 bits per channel.")
    if f.ndim == 2:
        return np.repeat(f[:, :, None], 3, axis=2)
    channels = f.shape[2]
    if channels == 1:
        return np.repeat(f, 3, axis=2)
    if channels == 2:  # gray + alpha
        return np.repeat(f[:, :, :1], 3, axis=2)
    return f[:, :, 2::-1] if channels >= 3 else f  # BGR(A) -> RGB, alpha dropped


def _apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip pixel data as EXIF tag 274 asks (same result as PIL's exif_transpose)."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(a, k=-1)
    if orientation == 7:
        return a[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(a, k=1)
    return a
