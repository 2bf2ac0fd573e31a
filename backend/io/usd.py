"""One time-sampled UsdGeomPoints for Blender: the looping Gaussians as an animated point cloud.

Coordinates: points are stored in the backend world unchanged (OpenCV: +x right, +y down,
+z forward of the input camera). The stage says ``upAxis = Z`` and ``metersPerUnit = 1`` because
Blender's USD importer rotates a Y-up stage by +90 degrees about X and scales by metersPerUnit;
with Z-up and 1.0 it does neither, so the imported object's local coordinates are exactly the
backend's. The Blender side parents the object under an Empty whose matrix is
``hero_camera.matrix_world @ diag(1, -1, -1, 1)``, which maps OpenCV world into the Blender scene.

A still result is one prim, ``PRIM_PATH``. A loop is three (``contract.splats.USD_PRIMS``, see
:func:`write_usd_layers`): the static Gaussians without time samples, and the forward and backward
layers of the moving ones, time-sampled in what moves only.

Per point (all time-sampled where they change): ``points``, ``widths`` (2 x the largest scale),
primvars ``opacity`` (float), ``scales`` (float3, linear sigmas), ``orient`` (quatf, wxyz as USD
stores it) and ``displayColor`` (linear rgb). Frame k of the data is time code frame_start + k;
time codes per second = fps.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from backend.io.atomic import atomic_path
from backend.infra.errors import LoopscapeError
from backend.model.gaussians import Gaussians, sh0_to_rgb
from contract.splats import USD_PRIMS, USD_ROOT

PRIM_PATH = f"{USD_ROOT}/Gaussians"  # the single point stream of a still result (write_usd_points)


@dataclass
class PointFrame:
    """Activated per-point arrays of one frame."""

    positions: np.ndarray  # (P, 3) backend world
    opacity: np.ndarray  # (P,) in [0, 1]
    scales: np.ndarray  # (P, 3) linear
    orientations: np.ndarray  # (P, 4) unit wxyz
    colors: np.ndarray  # (P, 3) rgb in [0, 1]

    def __iter__(self):  # unpacks like the (positions, opacity, scales, orientations, colors) tuple
        return iter((self.positions, self.opacity, self.scales, self.orientations, self.colors))


@torch.no_grad()
def gaussians_to_frame(g: Gaussians) -> PointFrame:
    """Activated arrays of one frame's Gaussians: sigmoid opacity, exp scales, unit quats, rgb."""
    q = g.quats / g.quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    as_np = lambda t: t.detach().float().cpu().numpy()  # noqa: E731
    return PointFrame(
        positions=as_np(g.means), opacity=as_np(torch.sigmoid(g.logit_opacities)),
        scales=as_np(torch.exp(g.log_scales)), orientations=as_np(q), colors=as_np(sh0_to_rgb(g.sh0).clamp(0, 1)),
    )


def _check(frames: list) -> list[PointFrame]:
    if not frames:
        raise LoopscapeError("no frames to export to USD.", "Run the 4D stage first.")
    out = []
    n = None
    for k, f in enumerate(frames):
        p, o, s, q, c = (np.asarray(a, dtype=np.float32) for a in f)
        n = len(p) if n is None else n
        shapes = {"positions": (p, (n, 3)), "opacity": (o.reshape(-1), (n,)), "scales": (s, (n, 3)),
                  "orientations": (q, (n, 4)), "colors": (c, (n, 3))}
        for name, (a, want) in shapes.items():
            if a.shape != want:
                raise LoopscapeError(f"USD export: frame {k} {name} has shape {a.shape}, expected {want}.",
                                     "Every frame must hold the same points in the same order.")
            if not np.all(np.isfinite(a)):
                raise LoopscapeError(f"USD export: frame {k} {name} holds NaN or infinite values.",
                                     "Re-run the 4D stage; its result is corrupt.")
        out.append(PointFrame(p, o.reshape(-1), s, q, c))
    return out


@dataclass
class LayerStream:
    """One loop layer for USD: the moving points' constant values and what changes per frame."""

    first: PointFrame  # frame 0 (colours and opacity hold for every frame)
    positions: np.ndarray  # (T, M, 3)
    orientations: np.ndarray | None = None  # (T, M, 4) unit wxyz, or None: first.orientations throughout
    scales: np.ndarray | None = None  # (T, M, 3) linear, or None: first.scales throughout


def _new_stage(fps: float, frame_start: int, n_frames: int):
    from pxr import Sdf, Usd, UsdGeom

    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)  # no rotation on import; see the module docstring
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    stage.SetTimeCodesPerSecond(float(fps))
    stage.SetFramesPerSecond(float(fps))
    stage.SetStartTimeCode(float(frame_start))
    stage.SetEndTimeCode(float(frame_start + n_frames - 1))
    root = UsdGeom.Xform.Define(stage, Sdf.Path(USD_ROOT))
    stage.SetDefaultPrim(root.GetPrim())
    return stage


def _define_points(stage, prim_path: str, first: PointFrame, animated: dict[str, np.ndarray], frame_start: int) -> None:
    """One UsdGeomPoints: every attribute of ``first`` as a default value, except those in ``animated``
    ({PointFrame field: (T, P, ...)}), which get one time sample per frame."""
    from pxr import Gf, Sdf, Usd, UsdGeom, Vt

    pts = UsdGeom.Points.Define(stage, prim_path)
    api = UsdGeom.PrimvarsAPI(pts.GetPrim())
    opacity = api.CreatePrimvar("opacity", Sdf.ValueTypeNames.FloatArray, UsdGeom.Tokens.vertex)
    scales = api.CreatePrimvar("scales", Sdf.ValueTypeNames.Float3Array, UsdGeom.Tokens.vertex)
    orient = api.CreatePrimvar("orient", Sdf.ValueTypeNames.QuatfArray, UsdGeom.Tokens.vertex)
    color = pts.CreateDisplayColorPrimvar(UsdGeom.Tokens.vertex)
    pts.CreateWidthsAttr()
    pts.SetWidthsInterpolation(UsdGeom.Tokens.vertex)
    c = np.ascontiguousarray
    writers = {
        "positions": lambda a, tc: pts.GetPointsAttr().Set(Vt.Vec3fArray.FromNumpy(c(a)), tc),
        "opacity": lambda a, tc: opacity.Set(Vt.FloatArray.FromNumpy(c(a)), tc),
        "scales": lambda a, tc: (scales.Set(Vt.Vec3fArray.FromNumpy(c(a)), tc),
                                 pts.GetWidthsAttr().Set(Vt.FloatArray.FromNumpy(c(2.0 * a.max(1) if len(a) else
                                                                                   np.zeros(0, np.float32))), tc)),
        # Vt.QuatfArray.FromNumpy wants (i, j, k, real)
        "orientations": lambda a, tc: orient.Set(Vt.QuatfArray.FromNumpy(c(a[:, [1, 2, 3, 0]])), tc),
        "colors": lambda a, tc: color.Set(Vt.Vec3fArray.FromNumpy(c(a)), tc),
    }
    for name, write in writers.items():
        if name in animated:
            for k, a in enumerate(animated[name]):
                write(a, Usd.TimeCode(float(frame_start + k)))
        else:
            write(getattr(first, name), Usd.TimeCode.Default())
    pos = animated.get("positions", first.positions[None])
    lo = pos.reshape(-1, 3).min(0) if pos.size else np.zeros(3)
    hi = pos.reshape(-1, 3).max(0) if pos.size else np.zeros(3)
    pts.CreateExtentAttr(Vt.Vec3fArray([Gf.Vec3f(*map(float, lo)), Gf.Vec3f(*map(float, hi))]))


def _export(stage, path: Path) -> Path:
    with atomic_path(path) as tmp:
        if not stage.GetRootLayer().Export(str(tmp)):
            raise LoopscapeError(f"could not write the USD file {path}.", "Check that the output folder is writable.")
    return path


def _check_target(path: Path, fps: float) -> None:
    if path.suffix not in (".usd", ".usdc", ".usda"):
        raise LoopscapeError(f"USD file name {path.name} needs a .usd, .usdc or .usda extension.", "Rename the output.")
    if fps <= 0:
        raise LoopscapeError(f"fps must be positive, got {fps}.", "Set the frame rate of the job.")


def write_usd_points(path: str | Path, frames: list, fps: float, frame_start: int = 1) -> Path:
    """Write ``frames`` (PointFrame or (positions, opacity, scales, orientations wxyz, colors)) as one
    animated UsdGeomPoints at ``path`` (.usd, .usdc or .usda), atomically. Returns the path."""
    path = Path(path)
    _check_target(path, fps)
    data = _check(list(frames))
    stage = _new_stage(fps, frame_start, len(data))
    # Values that never change get one default value instead of a sample per frame; points always move.
    animated = {"positions": np.stack([f.positions for f in data])}
    for name in ("opacity", "scales", "orientations", "colors"):
        first = getattr(data[0], name)
        if any(not np.array_equal(getattr(f, name), first) for f in data[1:]):
            animated[name] = np.stack([getattr(f, name) for f in data])
    _define_points(stage, PRIM_PATH, data[0], animated, frame_start)
    return _export(stage, path)


def write_usd_layers(path: str | Path, static: PointFrame, forward: LayerStream, backward: LayerStream, fps: float,
                     frame_start: int = 1) -> Path:
    """The compact loop as USD, atomically: ``USD_PRIMS`` static (no time samples), forward and
    backward (time-sampled positions, and orientations/scales only when given). Loop frame k is time
    code frame_start + k; Blender blends the two layers (blender_addon/loop_layers.py)."""
    path = Path(path)
    _check_target(path, fps)
    n = len(forward.positions)
    static = _check([static])[0]
    stage = _new_stage(fps, frame_start, n)
    _define_points(stage, USD_PRIMS["static"], static, {}, frame_start)
    for name, layer in (("forward", forward), ("backward", backward)):
        first = _check([layer.first])[0]
        moving = {"positions": layer.positions, "orientations": layer.orientations, "scales": layer.scales}
        animated = {k: np.asarray(v, np.float32) for k, v in moving.items() if v is not None}
        for k, a in animated.items():
            if a.shape[:2] != (n, len(first.positions)) or not np.all(np.isfinite(a)):
                raise LoopscapeError(f"USD export: the {name} layer's {k} have shape {a.shape} or non-finite values.",
                                     "Re-run the 4D stage; its result is corrupt.")
        _define_points(stage, USD_PRIMS[name], first, animated, frame_start)
    return _export(stage, path)
