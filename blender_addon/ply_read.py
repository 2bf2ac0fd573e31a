"""Minimal, tolerant reader for 3DGS PLY files (numpy only; Blender has no plyfile)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

SH_C0 = 0.28209479177387814
_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
          "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
          "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


class PlyError(Exception):
    pass


def read_vertices(path: str | Path) -> dict[str, np.ndarray]:
    """The 'vertex' element of a PLY file as {property name: array}."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise PlyError(f"{path} is not a PLY file.")
    body_start = data.index(b"\n", end) + 1
    header = data[:end].decode("ascii", "replace").splitlines()
    fmt, elements, current = "", [], None
    for line in header:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "element":
            current = [parts[1], int(parts[2]), []]
            elements.append(current)
        elif parts[0] == "property" and current is not None:
            if parts[1] == "list":
                raise PlyError(f"{path}: list property '{parts[-1]}' in element '{current[0]}' is not supported "
                               "(expected a standard 3DGS PLY).")
            if parts[1] not in _TYPES:
                raise PlyError(f"{path}: unknown PLY type '{parts[1]}'.")
            current[2].append((parts[2], _TYPES[parts[1]]))
    if not elements or elements[0][0] != "vertex":
        raise PlyError(f"{path} has no vertex element first (expected a standard 3DGS PLY).")
    _, count, props = elements[0]
    if fmt == "ascii":
        rows = data[body_start:].decode("ascii").split("\n")[:count]
        arr = np.loadtxt(rows, dtype=np.float64, ndmin=2) if count else np.zeros((0, len(props)))
        return {name: arr[:, i].astype(np.dtype(t)) for i, (name, t) in enumerate(props)}
    order = "<" if fmt == "binary_little_endian" else ">"
    dtype = np.dtype([(name, order + t) for name, t in props])
    if len(data) - body_start < count * dtype.itemsize:
        raise PlyError(f"{path} is truncated ({count} vertices announced).")
    rec = np.frombuffer(data, dtype=dtype, count=count, offset=body_start)
    return {name: rec[name].astype(rec[name].dtype.newbyteorder("=")) for name in rec.dtype.names}


def gaussians_from_vertices(v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Activated attributes: position, colour (sRGB-encoded), opacity, scales, orientations (wxyz)."""
    n = len(v["x"]) if "x" in v else 0
    if not all(k in v for k in ("x", "y", "z")):
        raise PlyError("PLY vertices lack x, y, z.")
    pos = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float32)
    if all(f"f_dc_{i}" in v for i in range(3)):
        col = 0.5 + SH_C0 * np.stack([v[f"f_dc_{i}"] for i in range(3)], 1)
    elif all(k in v for k in ("red", "green", "blue")):
        col = np.stack([v["red"], v["green"], v["blue"]], 1).astype(np.float32)
        col = col / 255.0 if np.issubdtype(v["red"].dtype, np.integer) else col
    else:
        col = np.full((n, 3), 0.8)
    col = np.clip(col, 0.0, 1.0).astype(np.float32)
    opa = (1.0 / (1.0 + np.exp(-v["opacity"].astype(np.float64)))) if "opacity" in v else np.ones(n)
    if all(f"scale_{i}" in v for i in range(3)):
        scales = np.exp(np.stack([v[f"scale_{i}"] for i in range(3)], 1).astype(np.float64))
    else:
        scales = np.full((n, 3), 0.01)
    if all(f"rot_{i}" in v for i in range(4)):
        q = np.stack([v[f"rot_{i}"] for i in range(4)], 1).astype(np.float64)
        norm = np.linalg.norm(q, axis=1, keepdims=True)
        q = np.where(norm > 1e-12, q / np.maximum(norm, 1e-12), np.array([1.0, 0, 0, 0]))
    else:
        q = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    return {"position": pos, "color": col, "opacity": opa.astype(np.float32),
            "scales": scales.astype(np.float32), "orientations": q.astype(np.float32)}
