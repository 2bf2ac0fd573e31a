"""Pre-flight checks: every input is validated before any heavy stage, each problem one clear line.

Cheap checks that need only the job run when it is built (JSON structure, bounded numbers, the
camera). Checks that need the photo's working size (the camera path, motion magnitudes, a depth
file's content) run in ``preflight`` at the end of the load stage, before depth and training.
Every failure is a ``LoopscapeError`` (message + what to do), which the CLI prints as one line.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.infra.errors import LoopscapeError

if TYPE_CHECKING:  # heavy imports stay out of the CLI's start-up
    from backend.model.camera import Camera
    from backend.job import JobSpec
    from backend.io.motion_inputs import MotionInputs

MAX_JSON_DEPTH = 32  # a job nests 5 levels (path -> frames -> [i] -> w2c -> row); more is a broken file
MAX_JSON_NODES = 2_000_000  # a 10 000-frame camera path is ~300 000 numbers
MAX_JSON_INT = 10**15  # beyond float precision; a 400-digit int would overflow float conversions
MAX_JSON_TEXT = 256 * 1024 * 1024
MAX_SPEED_FRACTION = 0.10  # of the image's long side per frame: faster is a unit mistake, not water
MAX_FOCAL_FACTOR = 1000.0  # focal / long side: ~0.06 degree field of view
MIN_FOCAL_FACTOR = 0.01  # ~176 degrees
MAX_CAMERA_SIDE = 1_000_000
MAX_TRANSLATION = 1e6  # the backend world has near content at 1 and a far shell at <= 20


# ----------------------------------------------------------------------------- JSON

class _BigInt(Exception):
    pass


def _parse_int(text: str) -> int:
    # Refuse before int() runs: Python refuses > 4300 digits with a ValueError of its own, and
    # smaller giants overflow the first float() applied to them.
    if len(text.lstrip("-")) > 18:
        raise _BigInt(text)
    return int(text)


def parse_json_text(text: str, what: str, hint: str) -> Any:
    """Decode ``text`` as JSON, with bounded depth and numbers; LoopscapeError names ``what``."""
    if len(text) > MAX_JSON_TEXT:
        raise LoopscapeError(f"{what} is {len(text) // (1024 * 1024)} MB, too large for a job or path file.", hint)
    try:
        data = json.loads(text, parse_int=_parse_int)
    except _BigInt as exc:
        digits = len(str(exc).lstrip("-"))
        raise LoopscapeError(f"{what} holds a {digits}-digit integer; numbers must stay below {MAX_JSON_INT:.0e}.",
                             hint) from None
    except RecursionError:
        raise LoopscapeError(f"{what} is nested too deeply to be a job or path file.", hint) from None
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise LoopscapeError(f"{what} is not valid JSON ({exc}).", hint) from None
    check_json_structure(data, what, hint)
    return data


def load_json_file(path: Path, what: str, hint: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LoopscapeError(f"{what} does not exist.", hint) from None
    except IsADirectoryError:
        raise LoopscapeError(f"{what} is a folder, not a file.", hint) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LoopscapeError(f"{what} cannot be read ({exc}).", hint) from None
    return parse_json_text(text, what, hint)


def check_json_structure(data: Any, what: str, hint: str = "Fix the file or the matching flag.") -> None:
    """Bounded depth, size and integers, checked without recursion (so a hostile file cannot
    exhaust the stack here either)."""
    stack: list[tuple[Any, int, str]] = [(data, 0, "")]
    nodes = 0
    while stack:
        v, depth, where = stack.pop()
        nodes += 1
        if nodes > MAX_JSON_NODES:
            raise LoopscapeError(f"{what} holds more than {MAX_JSON_NODES} values.", hint)
        if depth > MAX_JSON_DEPTH:
            raise LoopscapeError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep (at {where or 'the top'}).",
                                 hint)
        if isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(k, str):
                    raise LoopscapeError(f"{what} has a non-text key {k!r:.40} at {where or 'the top'}.", hint)
                stack.append((x, depth + 1, f"{where}.{k}" if where else k))
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                stack.append((x, depth + 1, f"{where}[{i}]"))
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_JSON_INT:
            raise LoopscapeError(f"{what} field '{where}' is a {len(str(abs(v)))}-digit integer; numbers must stay "
                                 f"below {MAX_JSON_INT:.0e}.", hint)


# ----------------------------------------------------------------------------- output folder

def check_out_dir(out: str | Path) -> Path:
    """The output folder, created and proven writable, before --demo or any stage writes to it."""
    text = str(out)
    if not text.strip():
        raise LoopscapeError("--out is empty, which would write the result into the current folder.",
                             "Name an output folder, e.g. --out out/photo.")
    p = Path(text).expanduser().resolve()
    if p.exists() and not p.is_dir():
        raise LoopscapeError(f"The output folder {p} is an existing file.", "Choose a folder with --out.")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise LoopscapeError(f"Cannot write to the output folder {p} ({exc.strerror or exc}).",
                             "Choose a folder you can write to with --out.") from None
    return p


# ----------------------------------------------------------------------------- camera

def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_camera_size(value: Any, where: str, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or not 1 <= value <= MAX_CAMERA_SIDE:
        raise LoopscapeError(f"{where} must be a positive whole number of pixels (at most {MAX_CAMERA_SIDE}), "
                             f"got {value!r:.40}.", hint)
    return int(value)


def check_intrinsics(K: Any, width: int, height: int, where: str, hint: str) -> np.ndarray:
    """A pinhole K for a ``width`` x ``height`` image: 3x3 finite numbers, plausible positive focals,
    last row [0, 0, 1]."""
    if not (isinstance(K, (list, tuple)) and len(K) == 3
            and all(isinstance(r, (list, tuple)) and len(r) == 3 and all(_num(c) for c in r) for r in K)):
        raise LoopscapeError(f"{where} must be a 3x3 list of finite numbers (pixels), got {K!r:.60}.", hint)
    k = np.array(K, dtype=np.float64)
    side = max(width, height)
    for name, f in (("fx", k[0, 0]), ("fy", k[1, 1])):
        if not MIN_FOCAL_FACTOR * side <= f <= MAX_FOCAL_FACTOR * side:
            raise LoopscapeError(f"{where} has focal length {name} = {f:g} px for a {width}x{height} image; it must "
                                 f"be between {MIN_FOCAL_FACTOR * side:g} and {MAX_FOCAL_FACTOR * side:g} px.", hint)
    if not np.allclose(k[2], [0.0, 0.0, 1.0], atol=1e-6):
        raise LoopscapeError(f"{where} last row is {k[2].tolist()}, expected [0, 0, 1].", hint)
    if abs(k[1, 0]) > 1e-6 * side or abs(k[0, 2]) > 100 * side or abs(k[1, 2]) > 100 * side:
        raise LoopscapeError(f"{where} is not a pinhole intrinsics matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]] "
                             f"with the principal point near the image.", hint)
    return k


def check_camera(cam: Any) -> None:
    """The job's ``camera``: {fov_deg} or {K, width, height}; every key given is checked, because
    the pipeline uses K whenever it is present."""
    hint = "Give camera {\"K\": 3x3, \"width\": W, \"height\": H} or {\"fov_deg\": degrees}."
    if not isinstance(cam, dict):
        raise LoopscapeError(f"Job field 'camera' is {type(cam).__name__}, not an object.", hint)
    unknown = sorted(set(cam) - {"K", "width", "height", "fov_deg"})
    if unknown:
        raise LoopscapeError(f"Job field 'camera' has unknown key(s) {', '.join(map(str, unknown))}.", hint)
    if "fov_deg" in cam and not (_num(cam["fov_deg"]) and 1 <= cam["fov_deg"] <= 179):
        raise LoopscapeError(f"Job field 'camera.fov_deg' is {cam['fov_deg']!r:.40}; expected a field of view in "
                             "degrees between 1 and 179.", hint)
    if "K" not in cam:
        if "fov_deg" not in cam:
            raise LoopscapeError("Job field 'camera' has neither 'K' nor 'fov_deg'.", hint)
        for k in ("width", "height"):
            if k in cam:
                check_camera_size(cam[k], f"Job field 'camera.{k}'", hint)
        return
    for k in ("width", "height"):
        if k not in cam:
            raise LoopscapeError(f"Job field 'camera' lacks '{k}'.", hint)
    w = check_camera_size(cam["width"], "Job field 'camera.width'", hint)
    h = check_camera_size(cam["height"], "Job field 'camera.height'", hint)
    check_intrinsics(cam["K"], w, h, "Job field 'camera.K'", hint)


# ----------------------------------------------------------------------------- camera path

def check_path_frame(K: np.ndarray, w2c: np.ndarray, width: int, height: int, where: str) -> None:
    """A path frame: a plausible pinhole K and an invertible rigid world-to-camera with a bounded
    translation (the matrices are already finite 3x3 and 4x4)."""
    check_intrinsics(K.tolist(), width, height, f"{where} K", "Export K in pixels for the path's width and height.")
    if np.abs(w2c[:3, :3]).max() > 1.0 + 1e-4:  # a rotation's entries are cosines; also keeps R @ R.T finite
        raise LoopscapeError(f"{where} w2c rotation has entries beyond 1, so it is not a proper rotation "
                             "(scaled, sheared or mirrored).", "Remove object scale from the camera and export again.")
    t = w2c[:3, 3]
    if np.abs(t).max() > MAX_TRANSLATION:
        raise LoopscapeError(f"{where} w2c translation {t.tolist()} is beyond {MAX_TRANSLATION:g} scene units.",
                             "Export the path in the backend world (near content at 1.0).")


def camera_path(job: "JobSpec", cam: "Camera") -> "list[Camera]":
    """The render cameras of ``job``, validated, with exactly ``job.frames`` frames."""
    from backend.model.camera_paths import PRESETS, load_path_json, preset_path

    if isinstance(job.path, str) and job.path in PRESETS:
        return preset_path(job.path, cam, n_frames=job.frames, scale=1.0)
    src = job.resolve(job.path) if isinstance(job.path, str) else job.path
    if isinstance(src, Path) and not src.is_file():
        raise LoopscapeError(f"Camera path file not found: {src}.", "Pass a preset name or an existing path JSON.")
    cams = load_path_json(src, cam.width, cam.height)
    if len(cams) != job.frames:
        raise LoopscapeError(
            f"The camera path has {len(cams)} frame{'s' if len(cams) != 1 else ''} but the loop is {job.frames} frames.",
            f"Pass --frames {len(cams)}, or export a path with {job.frames} frames.")
    return cams


# ----------------------------------------------------------------------------- motion and depth

def _peak_speed(flow: np.ndarray) -> float:
    """Largest vector length of an (H, W, 2) flow, in float64 so that 1e30 does not overflow."""
    f = flow.astype(np.float64, copy=False)
    return float(np.sqrt(np.max(f[..., 0] ** 2 + f[..., 1] ** 2))) if f.size else 0.0


def check_flow_speed(flow: np.ndarray, name: str) -> None:
    """A dense flow (H, W, 2) on its own grid: refuse before it is resized or used for the mask."""
    fh, fw = flow.shape[:2]
    limit = MAX_SPEED_FRACTION * max(fw, fh)
    top = _peak_speed(flow)
    if not top <= limit:
        raise LoopscapeError(
            f"The dense flow {name} moves up to {top:.3g} px per frame on its {fw}x{fh} grid, over "
            f"{MAX_SPEED_FRACTION:.0%} of its size ({limit:.3g} px) per frame.",
            "Give the flow in pixels per frame at the flow's own size (not per second, not normalised).")


def check_motion_speed(inputs: "MotionInputs") -> None:
    """Refuse arrows faster than ``MAX_SPEED_FRACTION`` of the long side per frame: such speeds are
    unit mistakes (px per second) and tear the scene apart. A dense flow was checked the same way on
    its own grid when it was read (``check_flow_speed``)."""
    W, H = inputs.size
    limit = MAX_SPEED_FRACTION * max(W, H)
    _, vel = inputs.hint_arrays()
    for h, v in zip(inputs.hints, vel):
        s = float(np.hypot(v[0], v[1]))
        if not s <= limit:
            raise LoopscapeError(
                f"{h.name or 'A hint'} asks for {s:.3g} px per frame at the {W}x{H} working size, over "
                f"{MAX_SPEED_FRACTION:.0%} of the image ({limit:.3g} px) per frame.",
                "Shorten the arrow, or lower its speed or --speed.")


def check_depth_file(job: "JobSpec") -> None:
    """Read a depth file now, so a broken one is reported before any model or training runs."""
    if job.depth in ("auto", "model", "prior"):
        return
    from backend.stages.depth import read_depth_file

    read_depth_file(job.resolve(job.depth))


@dataclass
class Preflight:
    path_cams: "list[Camera]"


def preflight(job: "JobSpec", cam: "Camera", motion: "MotionInputs | None") -> Preflight:
    """Everything left to check once the photo's working size is known; runs before the depth stage."""
    path_cams = camera_path(job, cam)
    if motion is not None:
        check_motion_speed(motion)
    check_depth_file(job)
    return Preflight(path_cams=path_cams)
