"""Disocclusion fill against the truth: ``python -m backend.tools.fill_bench --scenes DIR``.

The pseudo views (``stages.multiview``) fill what the photo does not show, and the 3D fit learns
that fill as scenery. This scores it where the truth is known. On synthetic ground-truth scenes
(``python -m backend.evaluate --synthetic N --out OUT`` leaves them in ``OUT/scenes``) the photo is
lifted with its true depth and splatted into the first camera of every path that starts away from
the photo's. That frame is at time 0, so everything it sees is the photo's scene, moving parts
included. Every method fills the same holes, and only the holes are scored: PSNR over the hole
pixels, and LPIPS over them with the rest of the image taken from the truth (so the splatting's
own error counts for no method). Holes that touch the frame (scenery past the photo's edge) and
inner ones (disocclusions behind a nearer surface) are reported apart.

The evaluation's scenes open no inner hole at their paths' moves. ``--generate N`` renders N
still scenes with boulders standing in front of the water and the banks (``rocks``, ``still`` in
``backend.tools.synthetic.scene``) into ``--scenes``: every camera of every path sees time 0 there,
so every frame of a path is scored, and the paths' ends look behind the boulders.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from backend.infra.errors import LoopscapeError

FILLS = ("ours", "rule", "telea", "navier-stokes")
INPAINT_RADIUS = 3  # px, OpenCV's neighbourhood for the two inpainting methods
MIN_SHIFT = 1e-6  # a path whose first camera sits at the photo's sees no holes
ROCKS = 3  # boulders per generated scene


@dataclass
class Holes:
    scene: str
    path: str
    truth: np.ndarray  # (H, W, 3) the true render from the path's first camera
    fills: dict[str, np.ndarray]  # method -> (H, W, 3) splatted photo, holes filled
    edge: np.ndarray  # (H, W) bool: hole pixels whose hole touches the frame
    inner: np.ndarray  # (H, W) bool: the other hole pixels


def fill(method: str, image: np.ndarray, depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``image`` with its invalid pixels filled by ``method`` (one of FILLS)."""
    from backend.stages.multiview import fill_holes

    if method in ("ours", "rule"):  # as the pipeline fills; the background-side rule's edge colours alone
        return fill_holes(image, depth, valid, inpaint=method == "ours")[0]
    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
    u8 = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    out = cv2.inpaint(u8, (~valid).astype(np.uint8), INPAINT_RADIUS, flag).astype(np.float32) / 255.0
    return np.where(valid[..., None], image, out)


def split_holes(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hole pixels whose 8-connected hole touches the frame, the other hole pixels)."""
    _, labels = cv2.connectedComponents((~valid).astype(np.uint8), connectivity=8)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge = np.isin(labels, border[border > 0])
    return edge, ~valid & ~edge


def scene_holes(folder: Path) -> list[Holes]:
    """One :class:`Holes` per path of a GT scene whose first camera is not the photo's."""
    from backend.stages.lift import lift_to_points
    from backend.stages.multiview import render_points_zbuffer
    from backend.tools.evaluate import Scene

    scene = Scene(folder, max_side=10_000)
    if not scene.has_gt or scene.true_depth is None:
        return []
    depth = np.load(scene.true_depth).astype(np.float32)
    if depth.shape != (scene.H, scene.W):
        depth = cv2.resize(depth, (scene.W, scene.H), interpolation=cv2.INTER_NEAREST)
    pts = lift_to_points(scene.rgb, depth, scene.camera)
    info = json.loads((folder / "scene.json").read_text())
    out = []
    for path in info.get("paths", []):
        truth = scene.gt_frames(path)
        if truth is None:
            continue
        cams = scene.path_cameras(path, len(truth))
        # a still scene shows time 0 from every camera; a loop's frames show it only from the first
        for k in range(len(truth) if info.get("still") else 1):
            if np.abs(cams[k].w2c[:3, 3]).max() < MIN_SHIFT:
                continue
            image, zbuf, valid = render_points_zbuffer(pts.xyz, pts.rgb, cams[k], pts.pixel_size)
            if valid.all():
                continue
            edge, inner = split_holes(valid)
            out.append(Holes(scene.name, f"{path}/{k}", truth[k], {m: fill(m, image, zbuf, valid) for m in FILLS},
                             edge, inner))
    return out


def score(views: list[Holes], lpips: bool = True) -> list[dict]:
    """Per method and hole kind: pooled PSNR over the hole pixels, mean LPIPS over them, pixel share."""
    from backend.tools.metrics.lpips import lpips_distance

    rows = []
    for kind in ("inner", "edge", "all"):
        masks = [(v.inner if kind == "inner" else v.edge if kind == "edge" else v.inner | v.edge) for v in views]
        used = [(v, m) for v, m in zip(views, masks) if m.any()]
        if not used:  # e.g. no inner disocclusion at these cameras
            continue
        share = float(np.mean([m.mean() for m in masks]))
        for method in FILLS:
            se = np.concatenate([((v.fills[method] - v.truth) ** 2).mean(-1)[m] for v, m in used])
            row = {"holes": kind, "method": method, "views": len(used), "hole_share": round(share, 5),
                   "psnr": round(10 * math.log10(1 / max(float(se.mean()), 1e-12)), 3)}
            if lpips:  # the truth with the fill in its holes: only the fill differs
                d = [lpips_distance(np.where(m[..., None], v.fills[method], v.truth), v.truth, mask=m) for v, m in used]
                row["lpips"] = round(float(np.mean(d)), 5)
            rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    cols = ["holes", "method", "views", "hole_share", "psnr"] + (["lpips"] if any("lpips" in r for r in rows) else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "-")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def generate_rocks(root: Path, n: int, width: int) -> list[Path]:
    """Still boulder scenes ``root/rocks_000`` ... (seeds 0..n-1), rendered unless already there."""
    from backend.tools.synthetic import generate_scene

    folders = []
    for seed in range(n):
        folder = root / f"rocks_{seed:03d}"
        info = folder / "scene.json"
        have = json.loads(info.read_text()) if info.exists() else {}
        if (have.get("width"), have.get("rocks"), have.get("still")) != (width, ROCKS, True):
            print(f"rendering {folder.name} ({width} px wide)", file=sys.stderr, flush=True)
            generate_scene(seed, folder, width=width, height=width * 3 // 4, rocks=ROCKS, still=True)
        folders.append(folder)
    return folders


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backend.tools.fill_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", required=True, help="a folder of synthetic GT scenes (an evaluation's OUT/scenes), "
                    "or one scene")
    ap.add_argument("--generate", type=int, default=0, metavar="N",
                    help="first render N still scenes with boulders (seeds 0..N-1) into --scenes; "
                         "ones already there are kept")
    ap.add_argument("--width", type=int, default=128, help="width of generated scenes (height: 3/4 of it)")
    ap.add_argument("--out", help="also write fill_bench.csv and fill_bench.md here")
    ap.add_argument("--no-lpips", action="store_true")
    args = ap.parse_args(argv)
    root = Path(args.scenes)
    if args.generate:
        if args.generate < 0 or args.width < 32:
            print("error: --generate needs a positive number of scenes and --width at least 32 px.", file=sys.stderr)
            return 2
        try:
            generate_rocks(root, args.generate, args.width)
        except LoopscapeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    folders = [root] if (root / "gt").is_dir() else sorted(p for p in root.glob("*") if (p / "gt").is_dir())
    if not folders:
        print(f"error: {root} holds no synthetic ground-truth scene (a folder with gt/ and depth.npy). Generate "
              "some with: python -m backend.evaluate --synthetic 3 --max-side 128 --out OUT, then pass OUT/scenes.",
              file=sys.stderr)
        return 2
    views = [h for f in folders for h in scene_holes(f)]
    if not views:
        print(f"error: no path of the scenes in {root} starts away from the photo's camera, so there are no holes "
              "to score. Regenerate the scenes with their default paths.", file=sys.stderr)
        return 2
    rows = score(views, lpips=not args.no_lpips)
    md = table(rows)
    print(f"{len(views)} views from {len(folders)} scene(s)")
    print(md, end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "fill_bench.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(max(rows, key=len)), restval="")
            w.writeheader()
            w.writerows(rows)
        (out / "fill_bench.md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
