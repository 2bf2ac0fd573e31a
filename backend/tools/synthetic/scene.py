"""Procedural ground-truth landscapes: terrain, a water surface and a cloud backdrop whose textures
move at known constant velocities, rendered with Blender (Cycles, CPU) in a subprocess.

``generate_scene(seed, out_dir)`` writes a folder in the real-data layout plus ground truth:

    image.png            hero view at t = 0 (the input photo)
    mask.png             true motion mask (water + sky), white = moving
    motion.npy           true 2D flow (1, 2, H, W), pixels per frame at this resolution
    depth.npy            true depth (camera z) in depth-normalised units (10th pct of non-sky = 1)
    camera.json          {"K", "width", "height"} of the hero camera (OpenCV, pixel centres +0.5)
    scene.json           seed, velocities, the Blender->normalised scale, render timings
    gt/<path>/NNNN.png   true novel-view videos along up-down, zoom-in, side, circle; and
    gt/hero/NNNN.png     the fixed hero camera over time (for motion fidelity)
    gt/<path>/path.json  {"width", "height", "frames": [{"K", "w2c"}]} (OpenCV world = hero frame)
    gt/<path>/previous_loop/NNNN.png  frame k's camera one loop earlier, at time k - n_frames (k >= 1)

Two options serve the disocclusion benchmark (``backend.tools.fill_bench``). ``rocks=K`` stands K
textured boulders on the ground or in the water between 5 and 9 units ahead, so that the paths'
cameras look behind them: disocclusions inside the frame whose hidden surface the renders know.
``still=True`` renders every camera at time 0 (no loop, no ``previous_loop``), so that every
frame of a path shows the photo's scene from another place. Both default off, and the scenes the
evaluation generates are unchanged by them.

The loop truth. A seamless loop of N frames must show frame 0 again at frame N, yet the true scene
has moved on by then, so every loop cross-fades from the motion that starts at the photo (time t)
into the motion that ends at it (time t - N). Scored against the plain video, most of the moving
region's squared error is that second copy's texture, which no loop can get right (for our
preview at 128 px, 93% on average and at least 84% per video); the loop truth blends the two true renders with the loop's weights, (1 - t/N) T(t) + (t/N) T(t - N),
so its error measures depth, 3D motion and novel-view fill (``evaluate.Scene.loop_truth_frames``).

Paths: each evaluation path of ARCHITECTURE.md (60 frames, circle 90) is subsampled to
``n_frames`` evenly spaced poses; time advances one loop frame per rendered frame, so frame k of
every video shows time k. A scene is 1 + 5 N renders, plus 5 (N - 1) for the loop truth (96 at N = 10).
The Blender camera maps to OpenCV by ``c2w_cv = matrix_world @ diag(1, -1, -1, 1)`` and the
OpenCV world is scaled by ``scale`` so that depths are in the backend's normalised units.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from backend.io.atomic import atomic_write_json
from backend.infra.errors import LoopscapeError
from contract.camera import PATH_PRESETS, preset_translations

PATH_NAMES = PATH_PRESETS
FLIP = np.diag([1.0, -1.0, -1.0])  # OpenCV camera axes <-> Blender camera axes
PREVIOUS_LOOP = "previous_loop"  # gt/<path>/ subfolder: each frame's camera at time k - n_frames


def eval_path_translations(name: str, n: int) -> list[np.ndarray]:
    """World-to-camera translations of the paper's path ``name`` subsampled to ``n`` poses (R = I)."""
    if name in PATH_NAMES:
        full = preset_translations(name)  # the published F-frame path
        idx = np.round(np.linspace(0, len(full) - 1, n)).astype(int)
        return [np.array(full[i]) for i in idx]
    raise LoopscapeError(f"unknown evaluation path '{name}'.", f"Use one of: {', '.join(PATH_NAMES)}.")


@dataclass
class SceneParams:
    """Everything random about a scene, drawn from the seed."""

    seed: int
    cam_height: float
    pitch_deg: float
    lens: float
    water_velocity: np.ndarray  # world units / frame on the water plane (x, y)
    sky_velocity: float         # world units / frame along x on the backdrop
    terrain_grid: np.ndarray
    water_grid: np.ndarray
    sky_grid: np.ndarray
    materials: dict
    sun_rotation: tuple
    rocks: list[np.ndarray]  # (ny, nx, 3) closed grids of boulder vertices, world units


def _terrain(rng: np.random.Generator) -> np.ndarray:
    xs, ys = np.linspace(-70, 70, 57), np.linspace(0.5, 80, 48)
    X, Y = np.meshgrid(xs, ys)
    cx = rng.uniform(-3, 3) + 0.04 * Y * rng.uniform(-1, 1)  # a winding valley floor with water
    width = rng.uniform(3.0, 6.0)
    z = -0.5 + 0.35 * np.maximum(np.abs(X - cx) - width, 0) ** 1.15
    for _ in range(6):  # rolling hills
        k = rng.uniform(0.05, 0.35, 2)
        ph = rng.uniform(0, 2 * np.pi, 2)
        z += rng.uniform(0.2, 0.7) * np.sin(k[0] * X + ph[0]) * np.sin(k[1] * Y + ph[1]) * (np.abs(X - cx) > width)
    z += rng.uniform(5, 14) * np.clip((Y - 45) / 35, 0, 1) ** 2 * (0.6 + 0.4 * np.sin(0.08 * X + rng.uniform(0, 6)))
    return np.stack([X, Y, z], -1)


def _plane(x0, x1, y0, y1, z0, z1, vertical: bool) -> np.ndarray:
    if vertical:  # an x-z plane at y = y0
        return np.array([[[x0, y0, z0], [x1, y0, z0]], [[x0, y0, z1], [x1, y0, z1]]], float)
    return np.array([[[x0, y0, z0], [x1, y0, z0]], [[x0, y1, z0], [x1, y1, z0]]], float)


def _terrain_height(grid: np.ndarray, x: float, y: float) -> float:
    """Bilinear height of the terrain grid at (x, y)."""
    xs, ys = grid[0, :, 0], grid[:, 0, 1]
    i = int(np.clip(np.searchsorted(ys, y) - 1, 0, len(ys) - 2))
    j = int(np.clip(np.searchsorted(xs, x) - 1, 0, len(xs) - 2))
    ty = float(np.clip((y - ys[i]) / (ys[i + 1] - ys[i]), 0, 1))
    tx = float(np.clip((x - xs[j]) / (xs[j + 1] - xs[j]), 0, 1))
    z = grid[i:i + 2, j:j + 2, 2]
    return float((1 - ty) * ((1 - tx) * z[0, 0] + tx * z[0, 1]) + ty * ((1 - tx) * z[1, 0] + tx * z[1, 1]))


def _rocks(seed: int, count: int, terrain: np.ndarray, lens: float) -> list[np.ndarray]:
    """``count`` lumpy boulders in the hero view, 5-9 units ahead, resting on the ground or the water.

    Drawn from their own random stream, so that the rest of the scene is the seed's without them.
    Each is a closed latitude-longitude grid (its seam column repeated) that ``_grid_mesh`` builds.
    """
    rng = np.random.default_rng([seed, 1])
    half_width = 18.0 / lens  # tan of the hero camera's half field of view (36 mm sensor)
    lat = np.linspace(0.0, np.pi, 10)[:, None]
    lon = np.linspace(0.0, 2 * np.pi, 17)[None, :]
    rocks = []
    for _ in range(count):
        y = rng.uniform(5.0, 9.0)
        x = rng.uniform(-0.6, 0.6) * half_width * y
        r = rng.uniform(0.45, 0.9)
        lump = 1.0 + sum(rng.uniform(0.04, 0.1) * np.sin(k * lon + rng.uniform(0, 6)) * np.sin(lat) ** 2
                         * np.cos(m * lat + rng.uniform(0, 6)) for k, m in ((2, 1), (3, 2), (5, 3)))
        radius = r * lump
        base = max(_terrain_height(terrain, x, y), 0.0)  # on the river bed the water covers its foot
        stretch = rng.uniform(0.9, 1.3)  # wider than deep
        rocks.append(np.stack([x + stretch * radius * np.sin(lat) * np.cos(lon),
                               y + radius * np.sin(lat) * np.sin(lon),
                               base + 0.55 * r + 0.75 * radius * np.cos(lat)], -1))
    return rocks


def draw_params(seed: int, rocks: int = 0) -> SceneParams:
    rng = np.random.default_rng(seed)
    ang = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(0.04, 0.09)
    hue = rng.uniform(-0.05, 0.05)
    materials = {
        "terrain": {"scale": float(rng.uniform(0.2, 0.4)), "ramp_pos": [0.35, 0.7],
                    "color_a": [0.10 + hue, 0.22, 0.06], "color_b": [0.42, 0.36 + hue, 0.22]},
        "water": {"scale": float(rng.uniform(0.6, 1.0)), "detail": 2.0, "ramp_pos": [0.3, 0.75],
                  "color_a": [0.02, 0.10, 0.22 + hue], "color_b": [0.55, 0.70, 0.85]},
        "sky": {"scale": float(rng.uniform(0.03, 0.05)), "ramp_pos": [0.4, 0.7], "strength": 1.0,
                "color_a": [0.25, 0.45 + hue, 0.85], "color_b": [0.95, 0.95, 0.97]},
        "rock": {"scale": 2.5, "detail": 6.0, "ramp_pos": [0.3, 0.75],
                 "color_a": [0.16, 0.14, 0.12], "color_b": [0.62, 0.58, 0.52]},
    }
    p = SceneParams(  # the keyword order is the draw order: keep it, or every seed's scene changes
        seed=seed, cam_height=float(rng.uniform(1.4, 2.2)), pitch_deg=float(rng.uniform(3, 8)),
        lens=float(rng.uniform(30, 40)),
        water_velocity=np.array([speed * math.cos(ang), speed * math.sin(ang), 0.0]),
        sky_velocity=float(rng.choice([-1, 1]) * rng.uniform(0.2, 0.45)),
        terrain_grid=_terrain(rng), water_grid=_plane(-70, 70, 0.5, 80, 0.0, 0.0, False),
        sky_grid=_plane(-250, 250, 100, 100, -20, 120, True), materials=materials,
        sun_rotation=(math.radians(rng.uniform(35, 55)), 0.0, math.radians(rng.uniform(-60, 60))), rocks=[])
    p.rocks = _rocks(seed, rocks, p.terrain_grid, p.lens)
    return p


def hero_c2w_blender(p: SceneParams) -> np.ndarray:
    th = math.radians(90.0 - p.pitch_deg)  # Blender camera looks down its -Z; rotate it to look along +Y, pitched down
    R = np.array([[1, 0, 0], [0, math.cos(th), -math.sin(th)], [0, math.sin(th), math.cos(th)]])
    M = np.eye(4)
    M[:3, :3] = R
    M[:3, 3] = (0.0, 0.0, p.cam_height)
    return M


def intrinsics(lens: float, sensor: float, width: int, height: int) -> np.ndarray:
    """ARCHITECTURE.md's mapping for sensor_fit HORIZONTAL, square pixels, no shift."""
    fx = lens / sensor * width
    return np.array([[fx, 0, width / 2.0], [0, fx, height / 2.0], [0, 0, 1.0]])


def _blender_python() -> list[str]:
    """The interpreter that has bpy: $LOOPSCAPE_BPY_PYTHON, else this one."""
    exe = os.environ.get("LOOPSCAPE_BPY_PYTHON", sys.executable)
    return [exe, "-m", "backend.tools.synthetic.render_scene"]


def _project(K: np.ndarray, c2w_bl: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cam = (pts - c2w_bl[:3, 3]) @ c2w_bl[:3, :3] @ FLIP  # world -> OpenCV camera
    z = cam[..., 2]
    uv = cam[..., :2] / np.where(np.abs(z) < 1e-9, 1e-9, z)[..., None] * np.diag(K)[:2] + K[:2, 2]
    return uv, z


def generate_scene(seed: int, out_dir: str | Path, width: int = 128, height: int = 96, n_frames: int = 10,
                   samples: int = 16, paths: tuple[str, ...] = PATH_NAMES, threads: int = 2,
                   rocks: int = 0, still: bool = False) -> dict:
    """Build and render one scene into ``out_dir``; returns scene.json's content. ``rocks`` and
    ``still``: see the module's docstring."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    p = draw_params(seed, rocks)
    sensor = 36.0
    K = intrinsics(p.lens, sensor, width, height)
    hero = hero_c2w_blender(p)
    spec = {
        "seed": seed, "width": width, "height": height, "samples": samples, "threads": threads, "K": K.tolist(),
        "camera": {"lens": p.lens, "sensor": sensor}, "hero_c2w_blender": hero.tolist(),
        "terrain": {"grid": p.terrain_grid.tolist()},
        "water": {"grid": p.water_grid.tolist(), "velocity": p.water_velocity.tolist()},
        "sky": {"grid": p.sky_grid.tolist(), "velocity": [p.sky_velocity, 0.0, 0.0]},
        "rocks": [{"grid": g.tolist()} for g in p.rocks],
        "materials": p.materials, "sun": {"energy": 3.0, "rotation": list(p.sun_rotation)}, "renders": [],
    }
    # A first pass ray-casts the hero view to fix the depth scale, which the path poses depend on.
    work = out / ".blender"
    work.mkdir(exist_ok=True)
    _run_blender(spec, work)
    rc = np.load(work / "raycast.npz")
    depth_bl, index, hit = rc["depth"], rc["index"], rc["hit"]
    if not np.isfinite(depth_bl).all():
        raise LoopscapeError(f"synthetic scene {seed}: some hero rays hit nothing.", "This is a generator bug; try another seed.")
    sky = index == 1
    sky &= hit[..., 1] > 90  # the backdrop; water (also index 1) is not sky
    ground = ~sky
    scale = 1.0 / float(np.percentile(depth_bl[ground], 10))
    moving = index == 1

    renders = [{"file": "image.png", "c2w_blender": hero.tolist(), "time": 0}]
    paths_cv: dict[str, list[np.ndarray]] = {}
    loop = not still  # a still scene renders every camera at time 0 and has no loop truth
    for k in range(n_frames):
        renders.append({"file": f"gt/hero/{k:04d}.png", "c2w_blender": hero.tolist(), "time": k if loop else 0})
        if k and loop:
            renders.append({"file": f"gt/hero/{PREVIOUS_LOOP}/{k:04d}.png", "c2w_blender": hero.tolist(),
                            "time": k - n_frames})
    for name in paths:
        w2cs = []
        for k, t in enumerate(eval_path_translations(name, n_frames)):
            c2w = hero.copy()
            c2w[:3, 3] = hero[:3, 3] + hero[:3, :3] @ FLIP @ (-t) / scale  # OpenCV centre -t, back to Blender units
            renders.append({"file": f"gt/{name}/{k:04d}.png", "c2w_blender": c2w.tolist(), "time": k if loop else 0})
            if k and loop:
                renders.append({"file": f"gt/{name}/{PREVIOUS_LOOP}/{k:04d}.png", "c2w_blender": c2w.tolist(),
                                "time": k - n_frames})
            w2c = np.eye(4)
            w2c[:3, 3] = t
            w2cs.append(w2c)
        paths_cv[name] = w2cs
    for sub in ["hero", *paths]:
        (out / "gt" / sub / (PREVIOUS_LOOP if loop else "")).mkdir(parents=True, exist_ok=True)
    spec["renders"] = renders
    t1 = time.time()
    _run_blender(spec, out, raycast_dir=work)
    t_render = time.time() - t1

    # Analytic flow: a texture feature at hit p moves to p + velocity in one frame.
    vel = np.zeros(hit.shape)
    vel[moving & ~sky] = p.water_velocity
    vel[sky] = (p.sky_velocity, 0.0, 0.0)
    uv0, _ = _project(K, hero, hit)
    uv1, _ = _project(K, hero, hit + vel)
    flow = np.where(moving[..., None], uv1 - uv0, 0.0).astype(np.float32)
    np.save(out / "motion.npy", flow.transpose(2, 0, 1)[None])
    np.save(out / "depth.npy", (depth_bl * scale).astype(np.float32))
    cv2.imwrite(str(out / "mask.png"), (moving * 255).astype(np.uint8))
    atomic_write_json(out / "camera.json", {"K": K.tolist(), "width": width, "height": height})
    for name, w2cs in paths_cv.items():
        atomic_write_json(out / "gt" / name / "path.json", {"width": width, "height": height,
                          "frames": [{"K": K.tolist(), "w2c": w.tolist()} for w in w2cs]})
    atomic_write_json(out / "gt" / "hero" / "path.json", {"width": width, "height": height,
                      "frames": [{"K": K.tolist(), "w2c": np.eye(4).tolist()} for _ in range(n_frames)]})
    info = {
        "seed": seed, "width": width, "height": height, "n_frames": n_frames, "samples": samples,
        "paths": list(paths), "loop_truth": loop, "still": still, "rocks": len(p.rocks),
        "scale_blender_to_normalised": scale,
        "water_velocity_world": p.water_velocity.tolist(), "sky_velocity_world": p.sky_velocity,
        "moving_fraction": float(moving.mean()), "sky_fraction": float(sky.mean()),
        "mean_speed_px": float(np.linalg.norm(flow[moving], axis=-1).mean()) if moving.any() else 0.0,
        "render_seconds": round(t_render, 2), "total_seconds": round(time.time() - t0, 2),
    }
    atomic_write_json(out / "scene.json", info)
    return info


def _run_blender(spec: dict, folder: Path, raycast_dir: Path | None = None) -> None:
    spec_path = folder / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    try:
        r = subprocess.run(_blender_python() + [str(spec_path)], capture_output=True, text=True, env=env, cwd=root)
    except OSError as e:  # e.g. $LOOPSCAPE_BPY_PYTHON names no interpreter
        raise LoopscapeError(f"could not start Blender's Python for the synthetic scene ({e.strerror}: {e.filename}).",
                             "Set LOOPSCAPE_BPY_PYTHON to a Python that has bpy, or install bpy here.") from None
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
        raise LoopscapeError("Blender could not render the synthetic scene: " + " | ".join(tail),
                             "Check that bpy is installed in the backend environment (or set LOOPSCAPE_BPY_PYTHON).")
    if raycast_dir is not None and (folder / "raycast.npz").exists():
        (folder / "raycast.npz").unlink()  # the second pass re-casts the same hero rays; keep one copy
    spec_path.unlink(missing_ok=True)
