"""Standard 3DGS PLY files, in the layout ``contract.splats`` defines (shared with Blender).

Our Gaussians hold exactly the PLY's raw values, so writing is one vectorised copy into a
structured array and one binary write. Reading accepts files with higher SH bands or other extra
properties (ignored), files without normals, and big-endian or ASCII bodies.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from backend.infra.errors import LoopscapeError
from backend.io.atomic import atomic_path
from backend.model.gaussians import Gaussians
from contract.splats import PLY_DTYPE, PLY_PROPERTIES, PLY_REQUIRED, layer_ply_bytes, ply_bytes, read_ply

PROPERTIES = PLY_PROPERTIES


def gaussians_to_array(g: Gaussians) -> np.ndarray:
    """Structured float32 vertex array in :data:`PROPERTIES` order."""
    n = len(g)
    cols = [g.means, torch.zeros(n, 3), g.sh0, g.logit_opacities.reshape(n, 1), g.log_scales, g.quats]
    flat = np.concatenate([c.detach().cpu().to(torch.float32).numpy().reshape(n, -1) for c in cols], axis=1)
    if not np.all(np.isfinite(flat)):
        raise LoopscapeError("the Gaussians contain NaN or infinite values; refusing to write a broken PLY.",
                             "The training diverged: lower the learning rate or report the job.")
    return np.ascontiguousarray(flat).view(PLY_DTYPE).reshape(n)


def write_gaussians_ply(path: str | Path, gaussians: Gaussians) -> None:
    """Write ``gaussians`` as a binary little-endian 3DGS PLY, atomically."""
    data = ply_bytes(gaussians_to_array(gaussians))
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_layer_ply(path: str | Path, moving: Gaussians, means: torch.Tensor, quats: torch.Tensor | None = None,
                    log_scales: torch.Tensor | None = None) -> None:
    """Write one loop layer (contract ``layer_ply_bytes``): the M moving Gaussians at frame 0 as a
    standard 3DGS vertex element, then their per-frame state (N, M, ...) in one binary block.
    Rotations and scales are stored per frame only when given (a deformation changed them)."""
    as_np = lambda t: t.detach().cpu().to(torch.float32).numpy()  # noqa: E731
    first = Gaussians(means=means[0], quats=moving.quats if quats is None else quats[0],
                      log_scales=moving.log_scales if log_scales is None else log_scales[0],
                      logit_opacities=moving.logit_opacities, sh0=moving.sh0)
    states = {"position": as_np(means)}
    if quats is not None:
        states["rotation"] = as_np(quats)
    if log_scales is not None:
        states["scale"] = as_np(log_scales)
    if not all(np.all(np.isfinite(a)) for a in states.values()):
        raise LoopscapeError("the loop's moving Gaussians contain NaN or infinite values; refusing to write a broken PLY.",
                             "The training diverged: lower the learning rate or report the job.")
    data = layer_ply_bytes(gaussians_to_array(first), states)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def read_gaussians_ply(path: str | Path) -> Gaussians:
    """Read a 3DGS PLY (ours or another tool's) into raw-parameter Gaussians on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise LoopscapeError(f"PLY file {path} does not exist.", "Check the path.")
    v = read_ply(path)
    missing = [p for p in PLY_REQUIRED if p not in v]
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
