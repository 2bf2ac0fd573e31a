"""Benchmark: ``python -m backend.tools.bench``: per-stage time and peak memory of the pipeline.

Runs the pipeline on the built-in demo scene (backend.tools.demo_scene), or on ``--scene DIR``
(image.png + labelme.json, e.g. 3dmom_scene_0), once per image size (``--sizes``, max side; 1024
is opt-in) and quality (``--qualities preview,final``), and once per loop length
(``--loop-lengths``, at the smallest size, first quality). ``--device cuda`` without a usable
CUDA and gsplat is refused with one line (exit 2) before any run. Every run is a fresh subprocess (``--child``), so peak memory is that run's own:

* per stage: wall time (the pipeline's ``result["timings"]``), the peak resident set size while
  the stage ran (a 5-ms sampler thread reading /proc/self/statm; ru_maxrss where /proc is
  missing) and, on CUDA, ``torch.cuda.max_memory_allocated`` reset at each stage start;
* per run: total time, the process's ru_maxrss, the number of Gaussians and frames.

Writes ``bench.csv`` (one row per run and stage, plus a ``total`` row) and ``bench.png``
(log-log: time and peak memory against pixels / Gaussians, and time against loop length), and
prints the table and the fitted scaling exponents (time ~ pixels^k).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from backend.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from backend.job import DEVICES
from contract.quality import QUALITIES

FIELDS = ["size", "frames", "quality", "device", "width", "height", "n_gaussians", "stage", "seconds",
          "peak_rss_mb", "cuda_peak_mb"]


# ----------------------------------------------------------------------------- child: one run

def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # no /proc: the process-wide peak so far (KB on Linux)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class StageMemory:
    """Attributes the peak RSS (and CUDA peak) to whichever pipeline stage is running."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.stage = "setup"
        self.peak: dict[str, int] = {}
        self.cuda_peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            r = _rss_bytes()
            s = self.stage
            if r > self.peak.get(s, 0):
                self.peak[s] = r
            self._stop.wait(0.005)

    def on_event(self, rec: dict) -> None:
        if rec.get("event") != "progress":
            return
        stage, frac = rec.get("stage"), rec.get("fraction")
        if frac == 0.0 and stage != self.stage:
            self.stage = stage
            self.peak[stage] = max(self.peak.get(stage, 0), _rss_bytes())
            if self.cuda:
                import torch
                torch.cuda.reset_peak_memory_stats()
        elif frac == 1.0 and stage == self.stage and self.cuda:
            import torch
            self.cuda_peak[stage] = max(self.cuda_peak.get(stage, 0), torch.cuda.max_memory_allocated())

    def __enter__(self) -> "StageMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_child(size: int, frames: int, quality: str, device: str, folder: Path, scene: str | None = None) -> dict:
    """One pipeline run on the demo scene (or ``scene``: a folder with image.png and labelme.json);
    returns the measurements (called in a fresh process)."""
    import torch

    from backend.tools.demo_scene import make_demo_scene, write_demo_inputs
    from backend.infra.events import NullSink
    from backend.job import JobSpec
    from backend.infra.device import resolve_device
    from backend.pipeline import run_job

    # the demo is drawn at least as large as the size asked for (the loader never upscales)
    if scene:
        inputs = {"image": str(Path(scene, "image.png").resolve()), "labelme": str(Path(scene, "labelme.json").resolve()),
                  "depth": "prior"}  # the GPU machine has no network: the depth model's time is not ours to bench
    else:
        w = max(512, size)
        inputs = write_demo_inputs(folder / "inputs", make_demo_scene(width=w, height=w * 5 // 8))
    job = JobSpec.from_dict({**inputs, "max_side": size, "frames": frames, "quality": quality, "device": device,
                             "path": "zoom-in"}, base_dir=folder)
    cuda = resolve_device(device).type == "cuda"
    sink = NullSink()
    mem = StageMemory(cuda)
    sink.listeners.append(mem.on_event)
    t0 = time.perf_counter()
    with mem:
        res_path = run_job(job, folder / "out", sink, use_cache=False)
    total = time.perf_counter() - t0
    res = json.loads(Path(res_path).read_text())
    cam = res["camera"]
    return {
        "size": size, "frames": frames, "quality": quality, "device": res["device"],
        "width": cam["width"], "height": cam["height"], "n_gaussians": res["metrics"].get("n_gaussians"),
        "timings": res["timings"], "total_seconds": total,
        "peak_rss_mb": {k: v / 2**20 for k, v in mem.peak.items()},
        "cuda_peak_mb": {k: v / 2**20 for k, v in mem.cuda_peak.items()},
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cuda_max_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }


# ----------------------------------------------------------------------------- parent

def run_one(size: int, frames: int, quality: str, device: str, work: Path, timeout: float,
            scene: str | None = None) -> dict:
    """Run one configuration in a fresh interpreter and return its measurements."""
    folder = work / f"s{size}_f{frames}_{quality}"
    folder.mkdir(parents=True, exist_ok=True)
    out_json = folder / "measure.json"
    out_json.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "backend.tools.bench", "--child", str(out_json), "--sizes", str(size),
           "--frames", str(frames), "--quality", quality, "--device", device] + (["--scene", scene] if scene else [])
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env, timeout=timeout)
    if r.returncode != 0 or not out_json.exists():
        tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-4:])
        raise RuntimeError(f"bench run size {size}, {frames} frames failed: {tail}")
    return json.loads(out_json.read_text())


def rows_of(m: dict) -> list[dict]:
    base = {k: m[k] for k in ("size", "frames", "quality", "device", "width", "height", "n_gaussians")}
    rows = [{**base, "stage": s, "seconds": round(t, 3), "peak_rss_mb": round(m["peak_rss_mb"].get(s, math.nan), 1),
             "cuda_peak_mb": round(m["cuda_peak_mb"][s], 1) if s in m["cuda_peak_mb"] else ""}
            for s, t in m["timings"].items()]
    rows.append({**base, "stage": "total", "seconds": round(m["total_seconds"], 3), "peak_rss_mb": round(m["ru_maxrss_mb"], 1),
                 "cuda_peak_mb": round(m["cuda_max_mb"], 1) if m.get("cuda_max_mb") is not None else ""})
    return rows


def scaling_exponent(x: list[float], y: list[float]) -> float:
    """Least-squares slope of log y against log x (nan with fewer than two points)."""
    if len(x) < 2:
        return math.nan
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def summary(size_runs: list[dict], loop_runs: list[dict]) -> str:
    stages = list(dict.fromkeys(s for m in size_runs + loop_runs for s in m["timings"]))
    cuda = any(m.get("cuda_max_mb") for m in size_runs)
    lines = ["| quality | max side | WxH | Gaussians | frames | " + " | ".join(stages) + " | total s | peak RSS MB |"
             + (" CUDA peak MB |" if cuda else ""),
             "|" + "---|" * (len(stages) + 7 + (1 if cuda else 0))]
    for m in size_runs + loop_runs:
        cells = [f"{m['timings'].get(s, math.nan):.2f}" for s in stages]
        line = (f"| {m['quality']} | {m['size']} | {m['width']}x{m['height']} | {m['n_gaussians']} | {m['frames']} | "
                + " | ".join(cells) + f" | {m['total_seconds']:.1f} | {m['ru_maxrss_mb']:.0f} |")
        if cuda:
            line += f" {m['cuda_max_mb'] or math.nan:.0f} |"
        lines.append(line)
    if cuda:  # the same runs' peak GPU memory per stage (torch.cuda.max_memory_allocated, MB)
        lines += ["", "Peak GPU memory per stage (MB):", "",
                  "| quality | max side | " + " | ".join(stages) + " |", "|" + "---|" * (len(stages) + 2)]
        lines += [f"| {m['quality']} | {m['size']} | " + " | ".join(
            f"{m['cuda_peak_mb'].get(s, math.nan):.0f}" for s in stages) + " |" for m in size_runs]
    size_runs = [m for m in size_runs if m["quality"] == size_runs[0]["quality"]] if size_runs else size_runs
    if len(size_runs) >= 2:
        px = [m["width"] * m["height"] for m in size_runs]
        lines.append("")
        lines.append(f"Scaling with pixels (log-log slope, sizes {', '.join(str(m['size']) for m in size_runs)}): "
                     f"total time ~ pixels^{scaling_exponent(px, [m['total_seconds'] for m in size_runs]):.2f}, "
                     f"peak RSS ~ pixels^{scaling_exponent(px, [m['ru_maxrss_mb'] for m in size_runs]):.2f}")
        per = []
        for s in stages:
            ys = [m["timings"].get(s) for m in size_runs]
            if all(y and y > 0 for y in ys):
                per.append(f"{s} {scaling_exponent(px, ys):.2f}")
        lines.append("Per stage time exponent: " + ", ".join(per))
    if len(loop_runs) >= 2:
        fr = [m["frames"] for m in loop_runs]
        lines.append(f"Scaling with loop length (frames {', '.join(map(str, fr))} at max side {loop_runs[0]['size']}): "
                     f"total time ~ frames^{scaling_exponent(fr, [m['total_seconds'] for m in loop_runs]):.2f}")
    return "\n".join(lines) + "\n"


def plot(size_runs: list[dict], loop_runs: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    px = [m["width"] * m["height"] for m in size_runs]
    stages = list(dict.fromkeys(s for m in size_runs for s in m["timings"]))
    ax = axes[0]
    for s in stages:
        ys = [m["timings"].get(s, math.nan) for m in size_runs]
        ax.loglog(px, ys, "o-", label=s, lw=1)
    ax.loglog(px, [m["total_seconds"] for m in size_runs], "k^-", label="total", lw=2)
    ax.set_xlabel("pixels (= Gaussians at init)")
    ax.set_ylabel("seconds")
    ax.set_title("time per stage vs image size")
    ax.legend(fontsize=6)
    ax = axes[1]
    ng = [m["n_gaussians"] or math.nan for m in size_runs]
    ax.loglog(ng, [m["ru_maxrss_mb"] for m in size_runs], "o-", label="peak RSS")
    if any(m.get("cuda_max_mb") for m in size_runs):
        ax.loglog(ng, [m["cuda_max_mb"] or math.nan for m in size_runs], "s-", label="CUDA peak")
    ax.set_xlabel("Gaussians after training")
    ax.set_ylabel("MB")
    ax.set_title("peak memory vs Gaussians")
    ax.legend(fontsize=7)
    ax = axes[2]
    if loop_runs:
        ax.loglog([m["frames"] for m in loop_runs], [m["total_seconds"] for m in loop_runs], "o-", label="total")
        for s in ("gaussians4d", "loop2d", "render", "export"):
            ys = [m["timings"].get(s, math.nan) for m in loop_runs]
            if not all(math.isnan(y) for y in ys):
                ax.loglog([m["frames"] for m in loop_runs], ys, ".--", label=s)
        ax.legend(fontsize=7)
    ax.set_xlabel("loop length (frames)")
    ax.set_ylabel("seconds")
    ax.set_title(f"time vs loop length (max side {loop_runs[0]['size'] if loop_runs else '-'})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backend.tools.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512], help="max sides (1024 is opt-in)")
    ap.add_argument("--frames", type=int, default=24, help="loop length for the size sweep")
    ap.add_argument("--loop-lengths", type=int, nargs="*", default=[12, 48],
                    help="loop lengths run at the smallest size (none: skip)")
    ap.add_argument("--quality", default="preview", choices=QUALITIES)
    ap.add_argument("--qualities", type=_qualities, help="comma-separated presets, each run at every size "
                    "(e.g. preview,final); overrides --quality")
    ap.add_argument("--device", default="auto", choices=DEVICES)
    ap.add_argument("--scene", help="a folder with image.png and labelme.json (e.g. 3dmom_scene_0) instead of the "
                    "demo scene; depth: the offline prior")
    ap.add_argument("--out", default="bench_out")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        m = run_child(args.sizes[0], args.frames, args.quality, args.device, Path(args.child).parent, args.scene)
        atomic_write_json(args.child, m)
        return 0
    qualities = args.qualities or [args.quality]
    problem = _device_problem(args.device)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.scene and not (Path(args.scene, "image.png").is_file() and Path(args.scene, "labelme.json").is_file()):
        print(f"error: --scene {args.scene} needs image.png and labelme.json. Pass a scene folder such as "
              "../shared/data/scenes/3dmom_scene_0.", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    size_runs, loop_runs = [], []
    try:
        for q in qualities:
            for s in sorted(args.sizes):
                size_runs.append(run_one(s, args.frames, q, args.device, out / "runs", args.timeout, args.scene))
                print(f"[{time.time() - t0:5.0f} s] {q} max side {s}: {size_runs[-1]['total_seconds']:.1f} s",
                      file=sys.stderr, flush=True)
        small = min(args.sizes)
        for f in args.loop_lengths:  # the loop-length sweep: first quality, smallest size
            if f == args.frames:
                loop_runs.append(next(m for m in size_runs if m["size"] == small))
                continue
            loop_runs.append(run_one(small, f, qualities[0], args.device, out / "runs", args.timeout, args.scene))
            print(f"[{time.time() - t0:5.0f} s] {f} frames: {loop_runs[-1]['total_seconds']:.1f} s", file=sys.stderr, flush=True)
        loop_runs.sort(key=lambda m: m["frames"])
        if args.loop_lengths and args.frames not in args.loop_lengths:
            loop_runs = sorted(loop_runs + [next(m for m in size_runs if m["size"] == small)], key=lambda m: m["frames"])
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = [r for m in size_runs + [m for m in loop_runs if m not in size_runs] for r in rows_of(m)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "bench.csv", buf.getvalue())
    plot([m for m in size_runs if m["quality"] == qualities[0]], loop_runs, out / "bench.png")
    text = summary(size_runs, [])
    if len(loop_runs) >= 2:
        fr = [m["frames"] for m in loop_runs]
        text += ("\nLoop-length runs:\n" + _loop_table(loop_runs)
                 + f"Scaling with loop length (frames {', '.join(map(str, fr))} at max side {loop_runs[0]['size']}): "
                 f"total time ~ frames^{scaling_exponent(fr, [m['total_seconds'] for m in loop_runs]):.2f}\n")
    head = (f"device {size_runs[0]['device']}, quality {', '.join(qualities)}, {args.frames} frames for the size sweep, "
            f"{'scene ' + Path(args.scene).name if args.scene else 'demo scene'}\n\n")
    atomic_write_text(out / "bench.md", head + text)
    print(head + text)
    print(f"total {time.time() - t0:.0f} s; wrote {out / 'bench.csv'}, {out / 'bench.png'}")
    return 0


def _qualities(text: str) -> list[str]:
    qs = [q.strip() for q in text.split(",") if q.strip()]
    bad = [q for q in qs if q not in QUALITIES]
    if not qs or bad:
        raise argparse.ArgumentTypeError(f"--qualities takes a comma-separated list of {', '.join(QUALITIES)}, got {text!r}")
    return qs


def _device_problem(device: str) -> str | None:
    """Why ``device`` cannot run here (one sentence with the fix), or None."""
    from backend.infra.device import check_device
    from backend.infra.errors import LoopscapeError

    try:
        check_device(device)
    except LoopscapeError as exc:
        return f"{exc.message} {exc.hint}"
    return None


def _loop_table(loop_runs: list[dict]) -> str:
    lines = ["| frames | max side | total s | " + " | ".join(("loop2d", "gaussians4d", "render", "export")) + " |",
             "|---|---|---|---|---|---|---|"]
    for m in loop_runs:
        t = m["timings"]
        lines.append(f"| {m['frames']} | {m['size']} | {m['total_seconds']:.1f} | "
                     + " | ".join(f"{t.get(s, math.nan):.2f}" for s in ("loop2d", "gaussians4d", "render", "export")) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
