"""How a Gaussian is stored and drawn: the 3DGS PLY layout, the SH constant, gsplat's constants.

The PLY layout is the original 3DGS code's, which common viewers (SuperSplat, Blender add-ons)
read: position, zero normals, SH DC, logit opacity, log scales, wxyz quaternion, all float32,
binary little-endian. ``read_ply`` also accepts files with higher SH bands, other extra
properties, no normals, big-endian or ASCII bodies. numpy only: Blender has no plyfile.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import LoopscapeError

SH_C0 = 0.28209479177387814  # zeroth-order SH basis: colour = 0.5 + SH_C0 * f_dc

# gsplat 1.5 rasterisation constants, shared by the CPU reference rasteriser and Blender's material.
EPS2D = 0.3  # screen-space dilation of the projected covariance, px^2
ALPHA_MIN = 1.0 / 255.0  # contributions fainter than this are skipped
ALPHA_MAX = 0.999  # per-Gaussian alpha clamp
T_MIN = 1e-4  # compositing stops before transmittance would fall to this
EXTENT_MAX = 3.33  # largest footprint, in standard deviations per axis

PLY_PROPERTIES: tuple[str, ...] = (
    "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)
PLY_REQUIRED: tuple[str, ...] = tuple(p for p in PLY_PROPERTIES if p not in ("nx", "ny", "nz"))
PLY_DTYPE = np.dtype([(p, "<f4") for p in PLY_PROPERTIES])

_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
          "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
          "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def rgb_to_sh0(rgb):
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0):
    return 0.5 + SH_C0 * sh0


def ply_header(n: int) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    lines += [f"property float {p}" for p in PLY_PROPERTIES]
    return ("\n".join(lines + ["end_header"]) + "\n").encode("ascii")


def ply_bytes(vertices: np.ndarray) -> bytes:
    """A whole PLY file for a structured array of dtype ``PLY_DTYPE``."""
    return ply_header(len(vertices)) + np.ascontiguousarray(vertices, dtype=PLY_DTYPE).tobytes()


def read_ply(path: str | Path) -> dict[str, np.ndarray]:
    """The 'vertex' element of a PLY file as {property name: array in native byte order}."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LoopscapeError(f"Cannot read PLY file {path} ({exc.strerror or exc}).", "Check the path.") from None
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise LoopscapeError(f"{path} is not a readable PLY file (no PLY header).", "Use a 3D Gaussian splatting PLY.")
    body_start = data.index(b"\n", end) + 1 if b"\n" in data[end:] else len(data)
    fmt, elements, current = "", [], None
    for line in data[:end].decode("ascii", "replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "format" and len(parts) > 1:
            fmt = parts[1]
        elif parts[0] == "element" and len(parts) == 3 and parts[2].isdigit():
            current = [parts[1], int(parts[2]), []]
            elements.append(current)
        elif parts[0] == "property" and current is not None and len(parts) >= 3:
            if parts[1] == "list":
                raise LoopscapeError(f"{path}: list property '{parts[-1]}' in element '{current[0]}' is not supported.",
                                    "Use a standard 3D Gaussian splatting PLY.")
            if parts[1] not in _TYPES:
                raise LoopscapeError(f"{path}: unknown PLY type '{parts[1]}'.", "Use a standard 3D Gaussian splatting PLY.")
            current[2].append((parts[2], _TYPES[parts[1]]))
    if not elements or elements[0][0] != "vertex":
        raise LoopscapeError(f"{path} has no vertex element first.", "Use a 3D Gaussian splatting PLY.")
    _, count, props = elements[0]
    if fmt == "ascii":
        rows = data[body_start:].decode("ascii", "replace").split("\n")[:count]
        try:
            arr = np.loadtxt(rows, dtype=np.float64, ndmin=2) if count else np.zeros((0, len(props)))
        except ValueError:
            raise LoopscapeError(f"{path} has a malformed ASCII body.", "Export it again.") from None
        if arr.shape != (count, len(props)):
            raise LoopscapeError(f"{path} is truncated ({count} vertices announced).", "Export it again.")
        return {name: arr[:, i].astype(np.dtype(t)) for i, (name, t) in enumerate(props)}
    if fmt not in ("binary_little_endian", "binary_big_endian"):
        raise LoopscapeError(f"{path} has an unknown PLY format '{fmt}'.", "Use a binary or ASCII PLY.")
    order = "<" if fmt == "binary_little_endian" else ">"
    dtype = np.dtype([(name, order + t) for name, t in props])
    if len(data) - body_start < count * dtype.itemsize:
        raise LoopscapeError(f"{path} is truncated ({count} vertices announced).", "Export it again.")
    rec = np.frombuffer(data, dtype=dtype, count=count, offset=body_start)
    return {name: rec[name].astype(rec[name].dtype.newbyteorder("=")) for name in rec.dtype.names}
