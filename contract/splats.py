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
    return read_ply_elements(path, first_only=True)["vertex"]


def read_ply_elements(path: str | Path, first_only: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Every element of a PLY file, in file order: {element name: {property name: array}}.

    The first element must be 'vertex'. ``first_only`` stops after it (other tools' extra elements
    are then never parsed)."""
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
    out: dict[str, dict[str, np.ndarray]] = {}
    if fmt == "ascii":
        rows = data[body_start:].decode("ascii", "replace").split("\n")
        at = 0
        for name, count, props in elements[:1] if first_only else elements:
            try:
                arr = np.loadtxt(rows[at:at + count], dtype=np.float64, ndmin=2) if count else np.zeros((0, len(props)))
            except ValueError:
                raise LoopscapeError(f"{path} has a malformed ASCII body.", "Export it again.") from None
            if arr.shape != (count, len(props)):
                raise LoopscapeError(f"{path} is truncated ({count} {name} rows announced).", "Export it again.")
            out[name] = {p: arr[:, i].astype(np.dtype(t)) for i, (p, t) in enumerate(props)}
            at += count
        return out
    if fmt not in ("binary_little_endian", "binary_big_endian"):
        raise LoopscapeError(f"{path} has an unknown PLY format '{fmt}'.", "Use a binary or ASCII PLY.")
    order = "<" if fmt == "binary_little_endian" else ">"
    offset = body_start
    for name, count, props in elements[:1] if first_only else elements:
        dtype = np.dtype([(p, order + t) for p, t in props])
        if len(data) - offset < count * dtype.itemsize:
            raise LoopscapeError(f"{path} is truncated ({count} {name} rows announced).", "Export it again.")
        rec = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        out[name] = {p: rec[p].astype(rec[p].dtype.newbyteorder("=")) for p in rec.dtype.names}
        offset += count * dtype.itemsize
    return out


# ----------------------------------------------------------------------------- loop layers
# The compact looping result (docs/DESIGN.md, "Result layout"): the static Gaussians once, and per
# frame only the moving ones, as two layers at full opacity. Loop frame t is the image-space blend
# (1 - w) R(static + forward layer) + w R(static + backward layer), w = backward_weight(t, N).

LAYERS: tuple[str, ...] = ("static", "forward", "backward")
USD_ROOT = "/Loopscape"
USD_PRIMS: dict[str, str] = {name: f"{USD_ROOT}/{name.capitalize()}" for name in LAYERS}
FRAME_ELEMENT = "frame_state"  # second PLY element of a layer file: per-frame state, frame-major
# What a frame_state row may hold, in this order; positions always, rotations and scales only
# when the 4D deformation changes them.
STATE_GROUPS: dict[str, tuple[str, ...]] = {"position": ("x", "y", "z"), "rotation": ("rot_0", "rot_1", "rot_2", "rot_3"),
                                            "scale": ("scale_0", "scale_1", "scale_2")}


def backward_weight(t: float, n_frames: int) -> float:
    """Weight of the backward layer at loop time t of an N-frame loop (forward: 1 minus it)."""
    return float(t) / float(n_frames)


def layer_ply_bytes(vertices: np.ndarray, states: dict[str, np.ndarray]) -> bytes:
    """A loop-layer PLY: a standard 3DGS 'vertex' element (the layer's M Gaussians at frame 0, so any
    viewer opens it) followed by a ``FRAME_ELEMENT`` of N x M rows, frame-major, holding the state
    groups given in ``states`` ({group: (N, M, k) float32}; 'position' required)."""
    m = len(vertices)
    groups = [g for g in STATE_GROUPS if g in states]
    if "position" not in states or set(states) - set(STATE_GROUPS):
        raise ValueError(f"states must hold 'position' and only {sorted(STATE_GROUPS)}, got {sorted(states)}")
    n = states["position"].shape[0]
    cols = [np.asarray(states[g], np.float32).reshape(n * m, len(STATE_GROUPS[g])) for g in groups]
    names = [p for g in groups for p in STATE_GROUPS[g]]
    body = np.ascontiguousarray(np.concatenate(cols, 1) if cols else np.zeros((0, 0), np.float32), dtype="<f4")
    head = ply_header(m).decode("ascii").replace("end_header\n", "")
    head += f"element {FRAME_ELEMENT} {n * m}\n" + "".join(f"property float {p}\n" for p in names) + "end_header\n"
    return head.encode("ascii") + np.ascontiguousarray(vertices, dtype=PLY_DTYPE).tobytes() + body.tobytes()


def read_layer_ply(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A loop-layer PLY as (vertex properties, {state group: (N, M, k) float32})."""
    el = read_ply_elements(path)
    v = el["vertex"]
    m = len(next(iter(v.values()))) if v else 0
    rows = el.get(FRAME_ELEMENT)
    if rows is None or not all(p in rows for p in STATE_GROUPS["position"]):
        raise LoopscapeError(f"{path} is not a loop-layer PLY (no {FRAME_ELEMENT} positions).",
                             "Run the job again with this version of the backend.")
    count = len(rows["x"])
    if m == 0 or count % m:
        raise LoopscapeError(f"{path}: {count} frame rows do not split into frames of {m} Gaussians.",
                             "Run the job again.")
    n = count // m
    states = {g: np.stack([rows[p] for p in props], 1).astype(np.float32).reshape(n, m, len(props))
              for g, props in STATE_GROUPS.items() if all(p in rows for p in props)}
    return v, states
