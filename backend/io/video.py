"""Video and frame-sequence output: H.264 mp4 through imageio-ffmpeg's bundled ffmpeg, and PNGs."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from backend.io.atomic import atomic_path
from backend.infra.errors import LoopscapeError


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 from uint8 or float in [0, 1] (clipped), or a torch tensor."""
    if hasattr(frame, "detach"):
        frame = frame.detach().cpu().numpy()
    a = np.asarray(frame)
    if a.ndim != 3 or a.shape[2] != 3:
        raise LoopscapeError(f"a video frame has shape {a.shape}, expected (height, width, 3).",
                             "Pass RGB frames.")
    if a.dtype == np.uint8:
        return a
    return (np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _pad_even(a: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: repeat the last row/column instead of rescaling."""
    ph, pw = a.shape[0] % 2, a.shape[1] % 2
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return a


def write_mp4(frames: Iterable[np.ndarray], path: str | Path, fps: float, crf: int = 18) -> int:
    """Write frames as H.264 (libx264, yuv420p) to ``path`` atomically; returns the frame count.

    Odd sizes are padded by one edge row/column. ``crf`` 18 is visually lossless for x264.
    """
    import imageio_ffmpeg

    if not (fps > 0):
        raise LoopscapeError(f"fps must be positive, got {fps}.", "Use e.g. 24.")
    it: Iterator[np.ndarray] = iter(frames)
    try:
        first = _pad_even(to_uint8(next(it)))
    except StopIteration:
        raise LoopscapeError("no frames to write to the video.", "Render at least one frame.") from None
    h, w = first.shape[:2]
    count = 0
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (w, h), fps=float(fps), codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
            quality=None, macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-crf", str(int(crf)), "-preset", "medium", "-movflags", "+faststart"])
        writer.send(None)  # start ffmpeg
        try:
            frame = first
            while True:
                if frame.shape[:2] != (h, w):
                    raise LoopscapeError(f"video frame {count} is {frame.shape[1]}x{frame.shape[0]}, "
                                         f"the first was {w}x{h}.", "All frames of a video must share one size.")
                writer.send(np.ascontiguousarray(frame))
                count += 1
                try:
                    frame = _pad_even(to_uint8(next(it)))
                except StopIteration:
                    break
        finally:
            writer.close()
    return count


def write_png_frames(frames: Iterable[np.ndarray], folder: str | Path, prefix: str = "") -> list[Path]:
    """Write ``folder/<prefix>0000.png`` ... (8-bit RGB), each atomically; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        target = folder / f"{prefix}{i:04d}.png"
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(to_uint8(frame)[..., ::-1]))
        if not ok:
            raise LoopscapeError(f"could not encode frame {i} as PNG.", "Check the frame data.")
        with atomic_path(target) as tmp:
            tmp.write_bytes(buf.tobytes())
        paths.append(target)
    return paths
