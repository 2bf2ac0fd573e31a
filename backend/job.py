"""The job spec: what Blender (or a user) asks the backend to do, validated before any work.

A job is a JSON object (see docs/DESIGN.md). CLI flags override its fields. Every problem is
reported as a LoopscapeError naming the field, what was wrong, and what is expected.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from backend.infra.errors import LoopscapeError
from backend.io.input_checks import check_camera, check_json_structure, load_json_file
from backend.stages.depth import DEFAULT_MODEL as DEFAULT_DEPTH_MODEL
from backend.stages.depth import FILE_EXTS as DEPTH_FILE_EXTS
from contract.camera import DEFAULT_PATH, PATH_PRESETS
from contract.quality import DEFAULT_QUALITY, QUALITIES

DEVICES = ("auto", "cpu", "cuda")
MAX_COORD = 1e6  # hint/anchor coordinates, input pixels


@dataclass
class JobSpec:
    image: str | None = None
    mask: str | None = None
    labelme: str | None = None
    flow: str | None = None
    hints: list[dict] = field(default_factory=list)  # {"start": [x, y], "end": [x, y], "speed": float|None}, input px
    anchors: list[list[float]] = field(default_factory=list)  # [x, y] input px
    speed: float = 1.0
    camera: dict | None = None  # {"K", "width", "height"} or {"fov_deg"}
    path: str | dict = DEFAULT_PATH  # preset name, path JSON file, or an inline path object
    depth: str = "auto"  # auto | model | prior | PATH
    depth_kind: str = "depth"  # for a depth file: depth | disparity
    depth_model: str = DEFAULT_DEPTH_MODEL  # the model the depth stage loads by default
    frames: int = 60
    fps: float = 24.0
    max_side: int = 512
    quality: str = DEFAULT_QUALITY
    device: str = "auto"
    seed: int = 0
    png_frames: bool = False
    full_ply_sequence: bool = False  # also one full PLY per loop frame (the compact layout is always written)
    mom3d: bool = True  # False: use the per-view flows as they are (the paper's ablation)
    snap_mask: bool = True  # release the static pixels at the mask's edge (backend.model.mask_edges)
    base_dir: str = "."  # relative paths in a job file resolve against the file's folder

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: Any, base_dir: Path | str = ".") -> "JobSpec":
        if not isinstance(data, dict):
            raise LoopscapeError(f"The job must be a JSON object, not {type(data).__name__}.",
                                 "See docs/DESIGN.md for the job format.")
        check_json_structure(data, "The job", "Fix the job file or the matching command-line flag.")
        known = {f.name for f in fields(cls)} - {"base_dir"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LoopscapeError(f"Unknown job key(s): {', '.join(unknown)}.",
                                 f"Valid keys are: {', '.join(sorted(known))}.")
        job = cls(base_dir=str(base_dir))
        for key, value in data.items():
            setattr(job, key, value)
        job.validate()
        return job

    @classmethod
    def from_file(cls, path: str | Path) -> "JobSpec":
        path = Path(path)
        if not path.is_file():
            raise LoopscapeError(f"Job file not found: {path}.", "Check the path to the job JSON.")
        data = load_json_file(path, f"Job file {path}", "Fix the file or regenerate it.")
        return cls.from_dict(data, base_dir=path.resolve().parent)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("base_dir")
        return d

    def resolve(self, p: str | None) -> Path | None:
        """A path from the job, relative to the job file's folder."""
        if p is None:
            return None
        q = Path(p).expanduser()
        return q if q.is_absolute() else (Path(self.base_dir) / q)

    @property
    def has_motion(self) -> bool:
        return bool(self.mask or self.labelme or self.flow or self.hints)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        _opt_str(self, "image", "mask", "labelme", "flow")
        _enum(self, "quality", QUALITIES)
        _enum(self, "device", DEVICES)
        _enum(self, "depth_kind", ("depth", "disparity"))
        _type(self, "depth", str)
        if self.depth not in ("auto", "model", "prior") and not self.depth.lower().endswith(DEPTH_FILE_EXTS):
            _bad("depth", self.depth, "auto, model, prior or the path of a .npy, .png or .exr depth file")
        _type(self, "depth_model", str)
        _int(self, "frames", 1, 100_000)
        _int(self, "max_side", 1, 16384, hint="--max-side must be a positive number of pixels, e.g. 512.")
        _int(self, "seed", 0, 2**31 - 1)
        _number(self, "fps", 0.1, 1000)
        _number(self, "speed", 0.0, 1000)
        _type(self, "png_frames", bool)
        _type(self, "full_ply_sequence", bool)
        _type(self, "mom3d", bool)
        _type(self, "snap_mask", bool)
        if not isinstance(self.hints, list):
            _bad("hints", self.hints, "a list of {start: [x, y], end: [x, y], speed}")
        for i, h in enumerate(self.hints):
            if not isinstance(h, dict) or set(h) - {"start", "end", "speed"} or not {"start", "end"} <= set(h):
                _bad(f"hints[{i}]", h, "an object with start [x, y], end [x, y] and optional speed")
            _point(h["start"], f"hints[{i}].start")
            _point(h["end"], f"hints[{i}].end")
            if h.get("speed") is not None and not _is_num(h["speed"]):
                _bad(f"hints[{i}].speed", h["speed"], "a number (pixels per frame) or null")
        if not isinstance(self.anchors, list):
            _bad("anchors", self.anchors, "a list of [x, y] points")
        for i, a in enumerate(self.anchors):
            _point(a, f"anchors[{i}]")
        if self.camera is not None:
            _validate_camera(self.camera)
        if isinstance(self.path, str):
            if self.path not in PATH_PRESETS and not self.path.endswith(".json"):
                _bad("path", self.path, f"one of {', '.join(PATH_PRESETS)} or a path JSON file")
        elif not isinstance(self.path, (dict, list)):
            _bad("path", self.path, "a preset name, a path JSON file, or a path object")
        if self.has_motion and self.frames < 2:
            raise LoopscapeError(f"frames = {self.frames}, but a motion loop needs at least 2 frames.",
                                 "Use --frames 2 or more, or drop the mask/hints/flow for a still scene.")


def _bad(name: str, value: Any, expected: str) -> None:
    shown = repr(value)
    shown = shown if len(shown) < 60 else shown[:57] + "..."
    raise LoopscapeError(f"Job field '{name}' is {shown} ({type(value).__name__}); expected {expected}.",
                         "Fix the job file or the matching command-line flag.")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _type(job: JobSpec, name: str, typ: type) -> None:
    v = getattr(job, name)
    if not isinstance(v, typ):
        _bad(name, v, typ.__name__)


def _opt_str(job: JobSpec, *names: str) -> None:
    for n in names:
        v = getattr(job, n)
        if v is not None and not (isinstance(v, str) and v):
            _bad(n, v, "a file path (string) or null")


def _enum(job: JobSpec, name: str, choices: tuple[str, ...]) -> None:
    v = getattr(job, name)
    if v not in choices:
        _bad(name, v, "one of " + ", ".join(choices))


def _int(job: JobSpec, name: str, lo: int, hi: int, hint: str = "") -> None:
    v = getattr(job, name)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
        setattr(job, name, v)
    if not isinstance(v, int) or isinstance(v, bool):
        _bad(name, v, "an integer")
    if not lo <= v <= hi:
        raise LoopscapeError(f"Job field '{name}' is {v}; it must be between {lo} and {hi}.",
                             hint or "Fix the job file or the matching flag.")


def _number(job: JobSpec, name: str, lo: float, hi: float) -> None:
    v = getattr(job, name)
    if not _is_num(v):
        _bad(name, v, "a number")
    if not lo <= v <= hi:
        raise LoopscapeError(f"Job field '{name}' is {v}; it must be between {lo} and {hi}.", "Fix the value.")
    setattr(job, name, float(v))


def _point(p: Any, name: str) -> None:
    # Bounded: coordinates near 1e300 overflow to inf/NaN in the motion fit instead of failing here.
    if not (isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_num(c) and abs(c) <= MAX_COORD for c in p)):
        _bad(name, p, f"a point [x, y] in input-image pixels, each within +-{MAX_COORD:.0e}")


def _validate_camera(cam: Any) -> None:
    check_camera(cam)
