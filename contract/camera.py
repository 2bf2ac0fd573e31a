"""Camera rules both sides apply: the default field of view and the preset camera paths.

Backend world is the input camera's OpenCV frame (+x right, +y down, +z forward). The preset
paths follow 3D-Cinemagraphy / 3D-MOM: R = I and t is the world-to-camera translation in
depth-normalised units (near content at 1.0).
"""
from __future__ import annotations

import math

# The reference code's f = 582.69 px at 512 px is a 47.4 degree field of view; we apply it to
# the long side so that every aspect ratio gets the same framing instead of a fixed focal.
DEFAULT_FOV_DEG = math.degrees(2.0 * math.atan(256.0 / 582.69))


def focal_from_fov(span_px: float, fov_deg: float) -> float:
    """Focal length in pixels for a field of view across ``span_px`` pixels."""
    return 0.5 * span_px / math.tan(math.radians(fov_deg) / 2.0)


def _up_down(s: float) -> tuple[float, float, float]:
    return 0.0, 0.08 - 0.16 * s, 0.0


def _zoom_in(s: float) -> tuple[float, float, float]:
    return 0.0, 0.0, -0.24 * s


def _side(s: float) -> tuple[float, float, float]:
    return 0.09 - 0.18 * s, 0.0, 0.0


def _circle(s: float) -> tuple[float, float, float]:
    a = 4.0 * s - 2.0  # s in [0, 1) maps to [-2, 2): two turns of the circle, one of the dolly
    return -0.04 * math.cos(a * math.pi), -0.04 * math.sin(a * math.pi), -0.09 * math.cos(a * math.pi / 2)


# name -> (translation at s in [0, 1], default frame count, whether s reaches 1 on the last frame)
_PATHS = {
    "up-down": (_up_down, 60, True),
    "zoom-in": (_zoom_in, 60, True),
    "side": (_side, 60, True),
    "circle": (_circle, 90, False),  # a closed loop: the last frame must not repeat the first
}
PATH_PRESETS: tuple[str, ...] = tuple(_PATHS)
DEFAULT_PATH = "zoom-in"


def preset_frames(name: str) -> int:
    """The preset's frame count in the published evaluation."""
    return _PATHS[name][1]


def preset_translations(name: str, n_frames: int | None = None, scale: float = 1.0) -> list[tuple[float, float, float]]:
    """World-to-camera translations t (R = I) of a preset path, one per frame; KeyError for an unknown name."""
    fn, default_n, endpoint = _PATHS[name]
    n = default_n if n_frames is None else int(n_frames)
    if n <= 1:
        return [tuple(scale * v for v in fn(0.0))] * max(n, 0)
    step = 1.0 / (n - 1 if endpoint else n)
    return [tuple(scale * v for v in fn(i * step)) for i in range(n)]
