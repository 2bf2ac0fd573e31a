"""Render camera paths: the four evaluation presets and user paths from JSON (Blender keyframes).

Presets follow 3D-Cinemagraphy / 3D-MOM: R = I and t is the world-to-camera translation in
depth-normalised units (near content at 1.0), multiplied by ``scale``; they are relative to the
given (input) camera, whose pose is the identity in the backend world.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from backend.infra.errors import LoopscapeError
from backend.io.input_checks import check_camera_size, check_json_structure, check_path_frame, load_json_file
from backend.model.camera import Camera
from contract import camera as contract_camera
from contract.camera import PATH_PRESETS

PRESETS: tuple[str, ...] = PATH_PRESETS


def preset_translations(name: str, n_frames: int | None = None, scale: float = 1.0) -> np.ndarray:
    """(n, 3) world-to-camera translations of a preset."""
    if name not in PRESETS:
        raise LoopscapeError(f"unknown camera path '{name}'.", f"Use one of {', '.join(PRESETS)} or a path JSON.")
    if n_frames is not None and int(n_frames) < 1:
        raise LoopscapeError(f"a camera path needs at least one frame, got {n_frames}.", "Set frames to 1 or more.")
    if not (math.isfinite(scale) and scale > 0):
        raise LoopscapeError(f"path scale must be a positive number, got {scale}.", "Use 1.0 for normalised depth.")
    return np.array(contract_camera.preset_translations(name, n_frames, float(scale)), dtype=np.float64).reshape(-1, 3)


def preset_path(name: str, camera: Camera, n_frames: int | None = None, scale: float = 1.0) -> list[Camera]:
    """Cameras of a preset path, relative to ``camera`` (same K and size)."""
    cams = []
    for t in preset_translations(name, n_frames, scale):
        rel = np.eye(4)
        rel[:3, 3] = t
        cams.append(camera.with_pose(rel @ camera.w2c))
    return cams


# ----------------------------------------------------------------------------- JSON paths

def _matrix(value: Any, shape: tuple[int, int], where: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise LoopscapeError(f"{where} is not a numeric matrix.",
                             f"Give it as a nested list of numbers, shape {shape[0]}x{shape[1]}.") from None
    if m.shape != shape:
        raise LoopscapeError(f"{where} has shape {'x'.join(map(str, m.shape)) or 'scalar'}, expected "
                             f"{shape[0]}x{shape[1]}.", "Write it as a nested list of rows.")
    if not np.all(np.isfinite(m)):
        raise LoopscapeError(f"{where} contains NaN or infinity.", "Check the exported camera.")
    return m


def _size(value: Any, where: str) -> int:
    return check_camera_size(value, where, "Give the resolution the intrinsics K refer to.")


def load_path_json(path_or_dict: str | Path | dict | list, working_width: int, working_height: int) -> list[Camera]:
    """Cameras from ``{"width", "height", "frames": [{"K", "w2c"}, ...]}`` (or a bare frame list).

    K is given at (width, height) and is rescaled to the working resolution; w2c is world-to-camera
    in the backend world (OpenCV, input camera = identity). A bare list means K is already at the
    working resolution.
    """
    data = path_or_dict
    src = "camera path"
    if isinstance(data, (str, Path)):
        src = f"camera path {Path(data).name}"
        if not Path(data).exists():
            raise LoopscapeError(f"{src} does not exist.", "Check the path in the job file.")
        data = load_json_file(Path(data), src, "Export the camera path again.")
    else:
        check_json_structure(data, src, "Export the camera path again.")
    if isinstance(data, list):
        width, height, frames = working_width, working_height, data
    elif isinstance(data, dict):
        for key in ("width", "height", "frames"):
            if key not in data:
                raise LoopscapeError(f"{src} has no '{key}' field.",
                                     'Use {"width": W, "height": H, "frames": [{"K": ..., "w2c": ...}]}.')
        width, height = _size(data["width"], f"{src} width"), _size(data["height"], f"{src} height")
        frames = data["frames"]
    else:
        raise LoopscapeError(f"{src} must be an object or a list of frames, got {type(data).__name__}.",
                             'Use {"width": W, "height": H, "frames": [...]}.')
    if not isinstance(frames, list) or not frames:
        raise LoopscapeError(f"{src} has no frames.", "Give at least one frame with K and w2c.")
    if abs(width / height - working_width / working_height) > 0.01 * working_width / working_height:
        raise LoopscapeError(
            f"{src} is for a {width}x{height} image but the photo is {working_width}x{working_height} "
            "(another aspect ratio).", "Set the render resolution to the photo's aspect ratio.")
    cams = []
    for i, fr in enumerate(frames):
        where = f"{src} frame {i}"
        if not isinstance(fr, dict):
            raise LoopscapeError(f"{where} is a {type(fr).__name__}, not an object.", 'Use {"K": ..., "w2c": ...}.')
        for key in ("K", "w2c"):
            if key not in fr:
                raise LoopscapeError(f"{where} has no '{key}'.", 'Each frame needs "K" (3x3) and "w2c" (4x4).')
        K = _matrix(fr["K"], (3, 3), f"{where} K")
        w2c = _matrix(fr["w2c"], (4, 4), f"{where} w2c")
        if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1], atol=1e-6):
            raise LoopscapeError(f"{where} K is not a pinhole intrinsics matrix (fx, fy > 0, last row 0 0 1).",
                                 "Export K in pixels for the given width and height.")
        check_path_frame(K, w2c, width, height, where)
        if not np.allclose(w2c[3], [0, 0, 0, 1], atol=1e-6):
            raise LoopscapeError(f"{where} w2c last row is {w2c[3].tolist()}, expected [0, 0, 0, 1].",
                                 "Give a rigid 4x4 world-to-camera matrix.")
        R = w2c[:3, :3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
            raise LoopscapeError(f"{where} w2c rotation is not a proper rotation (scaled, sheared or mirrored).",
                                 "Remove object scale from the camera and export again.")
        cams.append(Camera(K, width, height, w2c).scaled(working_width, working_height))
    return cams
