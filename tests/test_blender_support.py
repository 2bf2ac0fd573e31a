"""Shared helpers for the Blender tests (no tests here).

Every Blender scenario is a real module, ``tests/blender/scenarios/<name>.py`` with ``main(ctx)``,
and runs in its own Python process through ``tests/blender/harness.py``: bpy can be imported only
once per process, and installing the extension changes global state. The scenario fills
``ctx.out``, which the harness prints as one ``RESULT {json}`` line that the test asserts on. The
scenario interpreter is ``$LOOPSCAPE_BLENDER_PYTHON`` (e.g. a venv with ``bpy>=4.2,<4.3`` to check
the manifest's oldest Blender), else the test interpreter; the backend always runs with the repo's
``.venv/bin/python``.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from contract.camera import DEFAULT_FOV_DEG
from contract.splats import SH_C0

ROOT = Path(__file__).resolve().parents[1]
PY = ROOT / ".venv" / "bin" / "python"  # the backend's interpreter
BLENDER_PY = Path(os.environ.get("LOOPSCAPE_BLENDER_PYTHON") or sys.executable)  # runs Blender scenarios
BLENDER_TESTS = Path(__file__).resolve().parent / "blender"
FAKE_BACKEND = BLENDER_TESTS / "fake_backend.py"
_ZIP: list[Path] = []


_BPY_DIR: list[Path | None] = []


def bpy_dir() -> Path | None:
    """The bpy package folder of BLENDER_PY (None when it has no bpy); asked once per session."""
    if not _BPY_DIR:
        _BPY_DIR.append(None)
        if BLENDER_PY.exists():
            p = subprocess.run([str(BLENDER_PY), "-c", "import importlib.util as u; s = u.find_spec('bpy'); "
                                "print(s.submodule_search_locations[0] if s else '')"],
                               capture_output=True, text=True, timeout=60)
            if p.returncode == 0 and p.stdout.strip():
                _BPY_DIR[0] = Path(p.stdout.strip())
    return _BPY_DIR[0]


def have_bpy() -> bool:
    return PY.exists() and bpy_dir() is not None


def bpy_version() -> tuple[int, int, int]:
    """Version of BLENDER_PY's bpy, from the folder holding its bundled scripts (e.g. '4.2')."""
    d = bpy_dir()
    for sub in sorted(d.iterdir()) if d else []:
        if sub.is_dir() and (sub / "scripts").is_dir():
            major, minor = (int(x) for x in sub.name.split(".")[:2])
            return major, minor, 0
    return 0, 0, 0


def build_zip() -> Path:
    """Build (once per session) and return the extension zip."""
    if not _ZIP:
        sys.path.insert(0, str(ROOT))
        import build  # the project's build driver

        _ZIP.append(build.build_zip())
    return _ZIP[0]


def run_scenario(name: str, tmp_path: Path, args: dict | None = None, timeout: float = 240.0) -> dict:
    """Run scenario ``name`` with the extension installed, in a fresh Blender-module process; its RESULT dict."""
    a = {"zip": str(build_zip()), "backend_root": str(ROOT), "backend_python": str(PY),
         "work_dir": str(tmp_path / "work")}
    a.update(args or {})
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    p = subprocess.run([str(BLENDER_PY), str(BLENDER_TESTS / "harness.py"), name, str(tmp_path / "user_res"),
                        json.dumps(a)], capture_output=True, text=True, timeout=timeout, cwd=str(tmp_path), env=env)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise AssertionError(f"scenario {name} failed (rc {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def fake_interpreter(fake_dir: Path) -> Path:
    """An executable that runs tests/blender/fake_backend.py with FAKE_DIR=fake_dir, in place of Python."""
    py = fake_dir / "python"
    py.write_text(f'#!/bin/sh\nFAKE_DIR="{fake_dir}" exec "{sys.executable}" "{FAKE_BACKEND}" "$@"\n')
    py.chmod(0o755)
    return py


# ----------------------------------------------------------------------------- synthetic result


def intrinsics(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG) -> np.ndarray:
    f = 0.5 * max(width, height) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def _quat_z(angle: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(angle / 2), np.zeros_like(angle), np.zeros_like(angle), np.sin(angle / 2)], 1)


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a.T
    w2, x2, y2, z2 = b.T
    return np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], 1)


def synthetic_frames(width: int, height: int, n_frames: int, step: int = 1, seed: int = 0) -> dict:
    """A lifted-photo-like Gaussian set (one flat Gaussian per pixel, farther at the top) whose
    bottom-left quarter (the 'mask') drifts right over the frames while the rest stays still.

    Returns activated arrays per frame plus the mask and K. Half the Gaussians are written with a
    permuted axis order (smallest scale on x, rotated 90 degrees about y) to exercise the importer's
    smallest-axis handling; the geometry is the same.
    """
    rng = np.random.default_rng(seed)
    K = intrinsics(width, height)
    f = K[0, 0]
    us, vs = np.meshgrid(np.arange(0, width, step) + 0.5 * step, np.arange(0, height, step) + 0.5 * step)
    us, vs = us.ravel(), vs.ravel()
    depth = 1.0 + 1.5 * (1.0 - vs / height) + 0.1 * np.sin(us / 9.0)
    xyz = np.stack([(us - K[0, 2]) / f * depth, (vs - K[1, 2]) / f * depth, depth], 1)
    n = len(xyz)
    rgb = np.stack([0.5 + 0.4 * np.sin(us / 7.0), 0.5 + 0.4 * np.cos(vs / 5.0),
                    0.5 + 0.4 * np.sin((us + vs) / 11.0)], 1)
    footprint = depth / f * step
    scales = np.stack([0.75 * footprint, 0.5 * footprint, 0.08 * footprint], 1)
    quats = _quat_z(rng.uniform(0, np.pi, n))
    perm = rng.random(n) < 0.5
    # Same Gaussian with axes relabelled: R' = R @ Ry(90deg) maps x'->-z... keep covariance equal.
    ry = np.tile([math.cos(math.pi / 4), 0.0, math.sin(math.pi / 4), 0.0], (n, 1))  # Ry(+90deg)
    quats[perm] = _quat_mul(quats[perm], ry[perm])
    scales[perm] = scales[perm][:, [2, 1, 0]]
    opacity = np.full(n, 0.92)
    mask = (us < width / 2) & (vs > height / 2)
    frames = []
    for i in range(n_frames):
        pos = xyz.copy()
        pos[mask, 0] += 0.02 * i * depth[mask]
        frames.append({"means": pos, "quats": quats, "scales": scales, "opacities": opacity, "rgb": rgb})
    return {"frames": frames, "K": K, "width": width, "height": height, "moving": mask}


def write_ply(path: Path, g: dict) -> None:
    from plyfile import PlyData, PlyElement

    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1",
             "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    n = len(g["means"])
    cols = [g["means"], np.zeros((n, 3)), (g["rgb"] - 0.5) / SH_C0,
            np.log(g["opacities"] / (1 - g["opacities"]))[:, None], np.log(g["scales"]), g["quats"]]
    data = np.concatenate(cols, 1).astype(np.float32)
    rec = np.empty(n, dtype=[(k, "f4") for k in names])
    for i, k in enumerate(names):
        rec[k] = data[:, i]
    PlyData([PlyElement.describe(rec, "vertex")]).write(str(path))


def render_reference(g: dict, K: np.ndarray, w2c: np.ndarray, width: int, height: int) -> np.ndarray:
    """The backend's own renderer (CPU reference rasteriser) over a black background: (H, W, 3)."""
    import torch

    from backend.render.rasterize import rasterize

    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    out = rasterize(t(g["means"]), t(g["quats"]), t(g["scales"]), t(g["opacities"]), t(g["rgb"]), t(w2c), t(K),
                    width, height, background=torch.zeros(3), backend="cpu")
    return out.colors[..., :3].clamp(0, 1).numpy()


def write_fake_result(out: Path, syn: dict, with_video: bool = False) -> Path:
    """A result folder in the backend's layout (result.json + PLY frames) for import tests."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "ply").mkdir(exist_ok=True)
    plys = []
    for i, g in enumerate(syn["frames"]):
        rel = f"ply/frame_{i:04d}.ply"
        write_ply(out / rel, g)
        plys.append(rel)
    res = {"input_image": "input.png", "camera": {"K": syn["K"].tolist(), "width": syn["width"],
                                                  "height": syn["height"]},
           "ply_frames": plys, "usd": None, "video": None, "frames": len(plys), "fps": 24,
           "timings": {}, "metrics": {}, "warnings": [], "backend_version": "test"}
    (out / "result.json").write_text(json.dumps(res, indent=1))
    return out


def save_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    cv2.imwrite(str(path), cv2.cvtColor((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR))


def load_png(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"cannot read {path}"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse <= 1e-12 else 10.0 * math.log10(1.0 / mse)
