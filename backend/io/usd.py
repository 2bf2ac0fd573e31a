"""One time-sampled UsdGeomPoints for Blender: the looping Gaussians as an animated point cloud.

Coordinates: points are stored in the backend world unchanged (OpenCV: +x right, +y down,
+z forward of the input camera). The stage says ``upAxis = Z`` and ``metersPerUnit = 1`` because
Blender's USD importer rotates a Y-up stage by +90 degrees about X and scales by metersPerUnit;
with Z-up and 1.0 it does neither, so the imported object's local coordinates are exactly the
backend's. The Blender side parents the object under an Empty whose matrix is
``hero_camera.matrix_world @ diag(1, -1, -1, 1)``, which maps OpenCV world into the Blender scene.

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

PRIM_PATH = "/Loopscape/Gaussians"


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


def write_usd_points(path: str | Path, frames: list, fps: float, frame_start: int = 1) -> Path:
    """Write ``frames`` (PointFrame or (positions, opacity, scales, orientations wxyz, colors)) as one
    animated UsdGeomPoints at ``path`` (.usd, .usdc or .usda), atomically. Returns the path."""
    from pxr import Gf, Sdf, Usd, UsdGeom, Vt

    path = Path(path)
    if path.suffix not in (".usd", ".usdc", ".usda"):
        raise LoopscapeError(f"USD file name {path.name} needs a .usd, .usdc or .usda extension.", "Rename the output.")
    if fps <= 0:
        raise LoopscapeError(f"fps must be positive, got {fps}.", "Set the frame rate of the job.")
    data = _check(list(frames))

    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)  # no rotation on import; see the module docstring
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    stage.SetTimeCodesPerSecond(float(fps))
    stage.SetFramesPerSecond(float(fps))
    stage.SetStartTimeCode(float(frame_start))
    stage.SetEndTimeCode(float(frame_start + len(data) - 1))
    root = UsdGeom.Xform.Define(stage, Sdf.Path(PRIM_PATH).GetParentPath())
    stage.SetDefaultPrim(root.GetPrim())
    pts = UsdGeom.Points.Define(stage, PRIM_PATH)
    api = UsdGeom.PrimvarsAPI(pts.GetPrim())
    opacity = api.CreatePrimvar("opacity", Sdf.ValueTypeNames.FloatArray, UsdGeom.Tokens.vertex)
    scales = api.CreatePrimvar("scales", Sdf.ValueTypeNames.Float3Array, UsdGeom.Tokens.vertex)
    orient = api.CreatePrimvar("orient", Sdf.ValueTypeNames.QuatfArray, UsdGeom.Tokens.vertex)
    color = pts.CreateDisplayColorPrimvar(UsdGeom.Tokens.vertex)
    pts.CreateWidthsAttr()
    pts.SetWidthsInterpolation(UsdGeom.Tokens.vertex)

    def changes(get) -> bool:
        first = get(data[0])
        return any(not np.array_equal(get(f), first) for f in data[1:])

    # Values that never change get one default value instead of a sample per frame.
    animated = {name: changes(lambda f, n=name: getattr(f, n)) for name in ("opacity", "scales", "orientations", "colors")}
    extent_lo = np.min([f.positions.min(0) for f in data], axis=0) if len(data[0].positions) else np.zeros(3)
    extent_hi = np.max([f.positions.max(0) for f in data], axis=0) if len(data[0].positions) else np.zeros(3)
    pts.CreateExtentAttr(Vt.Vec3fArray([Gf.Vec3f(*map(float, extent_lo)), Gf.Vec3f(*map(float, extent_hi))]))

    for k, f in enumerate(data):
        tc = Usd.TimeCode(float(frame_start + k))
        pts.GetPointsAttr().Set(Vt.Vec3fArray.FromNumpy(np.ascontiguousarray(f.positions)), tc)
        widths = 2.0 * f.scales.max(1) if len(f.scales) else np.zeros(0, np.float32)
        if k == 0 or animated["scales"]:
            pts.GetWidthsAttr().Set(Vt.FloatArray.FromNumpy(np.ascontiguousarray(widths)), tc if animated["scales"] else Usd.TimeCode.Default())
        for prim_var, name, make in ((opacity, "opacity", Vt.FloatArray), (scales, "scales", Vt.Vec3fArray),
                                     (color, "colors", Vt.Vec3fArray)):
            if k == 0 or animated[name]:
                prim_var.Set(make.FromNumpy(np.ascontiguousarray(getattr(f, name))), tc if animated[name] else Usd.TimeCode.Default())
        if k == 0 or animated["orientations"]:
            q = np.ascontiguousarray(f.orientations[:, [1, 2, 3, 0]])  # Vt.QuatfArray.FromNumpy wants (i, j, k, real)
            orient.Set(Vt.QuatfArray.FromNumpy(q), tc if animated["orientations"] else Usd.TimeCode.Default())

    with atomic_path(path) as tmp:
        if not stage.GetRootLayer().Export(str(tmp)):
            raise LoopscapeError(f"could not write the USD file {path}.", "Check that the output folder is writable.")
    return path
