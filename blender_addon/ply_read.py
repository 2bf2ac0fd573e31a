"""3DGS PLY frames as activated point attributes for Blender (numpy only; the contract reads the files)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..contract import LoopscapeError
from ..contract.splats import PLY_PROPERTIES, read_ply, sh0_to_rgb

ATTRIBUTES = ("position", "color", "opacity", "scales", "orientations")


def _fields(prefix: str) -> tuple[str, ...]:
    return tuple(p for p in PLY_PROPERTIES if p.startswith(prefix))


_DC, _SCALE, _ROT = _fields("f_dc_"), _fields("scale_"), _fields("rot_")


def read_gaussians(path: str | Path) -> dict[str, np.ndarray]:
    """One PLY frame's activated attributes (see :func:`gaussians_from_vertices`)."""
    return gaussians_from_vertices(read_ply(path))


def gaussians_from_vertices(v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Activated attributes: position, colour (sRGB-encoded), opacity, scales, orientations (wxyz).

    Tolerant of other PLY point clouds: plain red/green/blue colours, and defaults for what is missing.
    """
    if not all(k in v for k in ("x", "y", "z")):
        raise LoopscapeError("PLY vertices lack x, y, z.", "Use a 3D Gaussian splatting PLY.")
    n = len(v["x"])
    pos = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float32)
    if all(k in v for k in _DC):
        col = sh0_to_rgb(np.stack([v[k] for k in _DC], 1))
    elif all(k in v for k in ("red", "green", "blue")):
        col = np.stack([v["red"], v["green"], v["blue"]], 1).astype(np.float32)
        col = col / 255.0 if np.issubdtype(v["red"].dtype, np.integer) else col
    else:
        col = np.full((n, 3), 0.8)
    col = np.clip(col, 0.0, 1.0).astype(np.float32)
    opa = (1.0 / (1.0 + np.exp(-v["opacity"].astype(np.float64)))) if "opacity" in v else np.ones(n)
    if all(k in v for k in _SCALE):
        scales = np.exp(np.stack([v[k] for k in _SCALE], 1).astype(np.float64))
    else:
        scales = np.full((n, 3), 0.01)
    if all(k in v for k in _ROT):
        q = np.stack([v[k] for k in _ROT], 1).astype(np.float64)
        norm = np.linalg.norm(q, axis=1, keepdims=True)
        q = np.where(norm > 1e-12, q / np.maximum(norm, 1e-12), np.array([1.0, 0, 0, 0]))
    else:
        q = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    return {"position": pos, "color": col, "opacity": opa.astype(np.float32),
            "scales": scales.astype(np.float32), "orientations": q.astype(np.float32)}


def pack_frames(frames: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate frames into one point set with a per-point ``frame`` index (-1: shown in every frame).

    When every frame has the same points in the same order, points identical in all frames are
    stored once with frame -1; a single frame is all static.
    """
    same = len({len(f["position"]) for f in frames}) == 1
    if same and len(frames) > 1:
        static = np.ones(len(frames[0]["position"]), dtype=bool)
        for f in frames[1:]:
            for k in ATTRIBUTES:
                diff = np.abs(f[k] - frames[0][k])
                static &= (diff.reshape(len(diff), -1) <= 1e-7).all(axis=1)
        parts = [{k: frames[0][k][static] for k in ATTRIBUTES} | {"frame": np.full(int(static.sum()), -1)}]
        for i, f in enumerate(frames):
            parts.append({k: f[k][~static] for k in ATTRIBUTES} | {"frame": np.full(int((~static).sum()), i)})
    else:
        parts = [f | {"frame": np.full(len(f["position"]), i)} for i, f in enumerate(frames)]
    if len(frames) == 1:
        parts[0]["frame"][:] = -1
    return {k: np.concatenate([p[k] for p in parts]) for k in ATTRIBUTES + ("frame",)}
