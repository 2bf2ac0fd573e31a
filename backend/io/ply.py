"""Standard 3DGS PLY files: binary little-endian, one float32 vertex property per raw parameter.

The layout matches the files of the original 3DGS code and the common viewers (SuperSplat,
Blender add-ons): position, zero normals, SH DC, logit opacity, log scales, wxyz quaternion.
Our Gaussians hold exactly these raw values, so writing is a copy. Reading accepts files with
higher SH bands or other extra properties (ignored) and files without normals.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from backend.io.atomic import atomic_path
from backend.infra.errors import LoopscapeError
from backend.model.gaussians import Gaussians

PROPERTIES: tuple[str, ...] = (
    "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)
_REQUIRED = tuple(p for p in PROPERTIES if p not in ("nx", "ny", "nz"))


def gaussians_to_array(g: Gaussians) -> np.ndarray:
    """Structured float32 vertex array in :data:`PROPERTIES` order."""
    n = len(g)
    cols = {
        "means": g.means, "sh0": g.sh0, "logit_opacities": g.logit_opacities.reshape(n, 1),
        "log_scales": g.log_scales, "quats": g.quats,
    }
    a = {k: v.detach().cpu().to(torch.float32).numpy().reshape(n, -1) for k, v in cols.items()}
    flat = np.concatenate([a["means"], np.zeros((n, 3), np.float32), a["sh0"], a["logit_opacities"],
                           a["log_scales"], a["quats"]], axis=1)
    if not np.all(np.isfinite(flat)):
        raise LoopscapeError("the Gaussians contain NaN or infinite values; refusing to write a broken PLY.",
                             "The training diverged: lower the learning rate or report the job.")
    out = np.empty(n, dtype=[(p, "<f4") for p in PROPERTIES])
    for i, p in enumerate(PROPERTIES):
        out[p] = flat[:, i]
    return out


def write_gaussians_ply(path: str | Path, gaussians: Gaussians) -> None:
    """Write ``gaussians`` as a binary little-endian 3DGS PLY, atomically."""
    element = PlyElement.describe(gaussians_to_array(gaussians), "vertex")
    with atomic_path(path) as tmp:
        PlyData([element], text=False, byte_order="<").write(str(tmp))


def read_gaussians_ply(path: str | Path) -> Gaussians:
    """Read a 3DGS PLY (ours or another tool's) into raw-parameter Gaussians on the CPU."""
    path = Path(path)
    try:
        ply = PlyData.read(str(path))
    except FileNotFoundError:
        raise LoopscapeError(f"PLY file {path} does not exist.", "Check the path.") from None
    except Exception as e:  # plyfile raises several types for malformed headers and bodies
        raise LoopscapeError(f"{path.name} is not a readable PLY file ({e}).", "Export it again.") from None
    if "vertex" not in [el.name for el in ply.elements]:
        raise LoopscapeError(f"{path.name} has no vertex element.", "Use a 3D Gaussian splatting PLY.")
    v = ply["vertex"].data
    names = v.dtype.names or ()
    missing = [p for p in _REQUIRED if p not in names]
    if missing:
        raise LoopscapeError(f"{path.name} lacks the Gaussian properties {', '.join(missing)}.",
                             "It is a plain point cloud, not a 3D Gaussian splatting PLY.")

    def cols(*keys: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(v[k], dtype=np.float32) for k in keys], axis=1))

    return Gaussians(
        means=cols("x", "y", "z"),
        quats=cols("rot_0", "rot_1", "rot_2", "rot_3"),
        log_scales=cols("scale_0", "scale_1", "scale_2"),
        logit_opacities=cols("opacity")[:, 0].contiguous(),
        sh0=cols("f_dc_0", "f_dc_1", "f_dc_2"),
    )
