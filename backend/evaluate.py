"""Evaluation harness: ``python -m backend.evaluate``.

* ``--synthetic N``: generate N Blender ground-truth scenes (backend.synthetic), run the pipeline
  on each along the hero view and the four evaluation paths, for each variant (ours, ours with the
  true depth, ours without 3D-MOM, and the other qualities), and score every rendered video
  against the ground truth (PSNR / SSIM / LPIPS, whole and masked, after the paper's border crop)
  plus the no-reference and motion metrics.
* ``--scenes DIR``: real scenes (no ground truth): no-reference metrics only.
* ``--results DIR...``: score existing result folders (a scene's GT is found via ``--gt``).

Writes ``table.md``, ``table.csv`` and ``plots.png`` into ``--out`` and prints the table.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from backend.atomic import atomic_write_text
from backend.errors import LoopscapeError
from backend.metrics import image as IM
from backend.metrics import motion as MO
from backend.metrics.piqe import piqe

PATHS = ("up-down", "zoom-in", "side", "circle")


def read_frames(folder: Path) -> np.ndarray:
    files = sorted(p for p in Path(folder).glob("*.png") if p.stem.isdigit())
    if not files:
        raise LoopscapeError(f"no NNNN.png frames in {folder}.", "Run the pipeline with png_frames: true.")
    return np.stack([cv2.imread(str(f))[:, :, ::-1].astype(np.float32) / 255.0 for f in files])


def reference_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None, lpips: bool = True) -> dict[str, float]:
    """Mean over frames of PSNR / SSIM / LPIPS (whole and masked) after the scaled 32-px border crop."""
    from backend.metrics.lpips import lpips_distance, weights_path

    h, w = gt.shape[1:3]
    b = IM.border_for(w, h)
    rows = []
    for p, g in zip(pred, gt):
        pc, gc = IM.crop_border(p, b), IM.crop_border(g, b)
        mc = IM.crop_border(mask, b) if mask is not None else None
        r = {"psnr": IM.psnr(pc, gc), "ssim": IM.ssim(pc, gc)}
        if mc is not None:
            r.update({"m_psnr": IM.psnr(pc, gc, mc), "m_ssim": IM.ssim(pc, gc, mc)})
        if lpips and weights_path("alex") is not None:
            r["lpips"] = lpips_distance(pc, gc)
            if mc is not None:
                r["m_lpips"] = lpips_distance(pc, gc, mask=mc)
        rows.append(r)
    return {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}


def no_reference_metrics(frames: np.ndarray, mask: np.ndarray, target_flow: np.ndarray | None) -> dict[str, float]:
    out = MO.video_metrics(frames, mask, target_flow)
    out["piqe"] = float(np.mean([piqe(f) for f in frames]))
    return out


def score_result(result_dir: Path, scene: Path | None) -> dict[str, float]:
    """Score one result folder (frames/NNNN.png) against scene ground truth when available."""
    res = json.loads((result_dir / "result.json").read_text())
    frames = read_frames(result_dir / "frames")
    mask = None
    if scene is not None and (scene / "mask.png").exists():
        m = cv2.imread(str(scene / "mask.png"), cv2.IMREAD_GRAYSCALE)
        mask = cv2.resize(m, (frames.shape[2], frames.shape[1]), interpolation=cv2.INTER_NEAREST) > 127
    out: dict[str, float] = {}
    for k in ("mom3d_epe_before", "mom3d_epe_after"):
        v = res.get("metrics", {}).get(k)
        if v is not None:
            out[k] = float(v)
    out["seconds"] = float(sum(res.get("timings", {}).values()))
    path_name = res.get("eval_path")
    if scene is not None and path_name and (scene / "gt" / path_name).exists():
        gt = read_frames(scene / "gt" / path_name)
        n = min(len(gt), len(frames))
        out.update(reference_metrics(frames[:n], gt[:n], mask))
    if mask is not None:
        flow = None
        if (scene / "motion.npy").exists() and path_name in (None, "hero"):
            flow = np.load(scene / "motion.npy")[0].transpose(1, 2, 0)
        out.update(no_reference_metrics(frames, mask, flow))
    return out


def run_variant(scene: Path, variant: dict, path_name: str, out: Path, max_side: int, n_frames: int) -> Path:
    """Run the pipeline for one scene / variant / path; returns the result folder."""
    from backend.events import EventSink
    from backend.job import JobSpec
    from backend.pipeline import run_job

    job = {"image": str(scene / "image.png"), "mask": str(scene / "mask.png"), "flow": str(scene / "motion.npy"),
           "camera": json.loads((scene / "camera.json").read_text()), "frames": n_frames, "max_side": max_side,
           "png_frames": True, "quality": variant.get("quality", "preview"), "mom3d": variant.get("mom3d", True),
           "depth": str(scene / "depth.npy") if variant.get("true_depth") else "auto",
           "path": str(scene / "gt" / path_name / "path.json")}
    spec = JobSpec.from_dict(job, base_dir=scene)
    run_dir = out / "runs" / scene.name / variant["name"]
    run_job(spec, run_dir, EventSink(stream=io.StringIO()) if _sink_takes_stream() else EventSink())
    dest = out / "results" / scene.name / variant["name"] / path_name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copytree(run_dir / "frames", dest / "frames")
    res = json.loads((run_dir / "result.json").read_text())
    res["eval_path"] = path_name
    (dest / "result.json").write_text(json.dumps(res))
    return dest


def _sink_takes_stream() -> bool:
    import inspect

    from backend.events import EventSink
    return "stream" in inspect.signature(EventSink).parameters


VARIANTS = [
    {"name": "ours-preview", "quality": "preview"},
    {"name": "ours-true-depth", "quality": "preview", "true_depth": True},
    {"name": "no-3dmom", "quality": "preview", "mom3d": False},
    {"name": "ours-draft", "quality": "draft"},
]


def write_table(rows: list[dict], out: Path) -> str:
    keys = ["scene", "variant", "path"] + sorted({k for r in rows for k in r} - {"scene", "variant", "path"})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "table.csv", buf.getvalue())
    # Markdown: mean over scenes per variant and path
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["path"]), []).append(r)
    mkeys = keys[3:]
    lines = ["| variant | path | " + " | ".join(mkeys) + " |", "|" + "---|" * (len(mkeys) + 2)]
    for (v, p), rs in sorted(groups.items()):
        vals = [np.nanmean([r.get(k, np.nan) for r in rs]) for k in mkeys]
        lines.append(f"| {v} | {p} | " + " | ".join(f"{x:.3f}" for x in vals) + " |")
    md = "\n".join(lines) + "\n"
    atomic_write_text(out / "table.md", md)
    _plot(groups, out)
    return md


def _plot(groups: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = sorted({v for v, _ in groups})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("m_psnr", "motion_epe")):
        vals = [np.nanmean([r.get(key, np.nan) for (v, _p), rs in groups.items() if v == var for r in rs]) for var in variants]
        ax.bar(range(len(variants)), vals)
        ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right")
        ax.set_title(key)
    fig.tight_layout()
    fig.savefig(out / "plots.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backend.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--synthetic", type=int, default=0, help="generate and evaluate N synthetic scenes")
    ap.add_argument("--scenes", help="folder of real scenes (no-reference metrics)")
    ap.add_argument("--results", nargs="*", default=[], help="existing result folders to score")
    ap.add_argument("--gt", help="scene folder with ground truth for --results")
    ap.add_argument("--max-side", type=int, default=128)
    ap.add_argument("--quality", default="preview", help="quality of the main variant")
    ap.add_argument("--frames", type=int, default=8, help="frames per evaluation video")
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--out", default="eval_out")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    t0 = time.time()
    try:
        for r in args.results:
            rows.append({"scene": Path(args.gt).name if args.gt else "-", "variant": Path(r).name, "path": "-",
                         **score_result(Path(r), Path(args.gt) if args.gt else None)})
        scenes: list[Path] = []
        if args.synthetic:
            from backend.synthetic import generate_scene
            for s in range(args.synthetic):
                d = out / "scenes" / f"syn_{s:03d}"
                if not (d / "scene.json").exists():
                    w = args.max_side
                    generate_scene(s, d, width=w, height=w * 3 // 4, n_frames=args.frames)
                scenes.append(d)
        if args.scenes:
            scenes += sorted(p for p in Path(args.scenes).iterdir() if (p / "image.png").exists())
        variants = [dict(VARIANTS[0], quality=args.quality)] + VARIANTS[1:]
        for scene in scenes:
            has_gt = (scene / "gt").exists()
            for var in variants if has_gt else variants[:1]:
                for path_name in (["hero"] + args.paths.split(",")) if has_gt else []:
                    rd = run_variant(scene, var, path_name, out, args.max_side, args.frames)
                    rows.append({"scene": scene.name, "variant": var["name"], "path": path_name, **score_result(rd, scene)})
    except LoopscapeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print("nothing to evaluate: pass --synthetic N, --scenes DIR or --results DIR...", file=sys.stderr)
        return 2
    print(write_table(rows, out))
    print(f"[{time.time() - t0:.0f} s] wrote {out / 'table.md'}, {out / 'table.csv'}, {out / 'plots.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
