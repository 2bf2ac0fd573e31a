"""Command line: ``python -m backend run [JOB.json] --out DIR [flags]`` and ``python -m backend info``.

stdout carries only JSON lines (the progress protocol in contract/protocol.py), or with
``--events human`` (the default on a terminal) a live progress display; human-readable errors
also go to stderr. Exit codes: 0 success, 2 bad input, 130 cancelled, 1 internal error.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
from pathlib import Path

from backend import __version__
from backend.infra import cancel
from backend.infra.errors import Cancelled, LoopscapeError
from backend.infra.events import EventSink
from backend.io.input_checks import check_out_dir
from backend.io.publish import disk_full_cause, disk_full_error, estimate_run_bytes, out_lock
from backend.job import DEVICES, PATH_PRESETS, QUALITIES, JobSpec
from contract import protocol

EPILOG = """\
examples:
  python -m backend run --demo --out out/demo
      the built-in procedural landscape (sky, mountains, a lake), with its mask and arrows
  python -m backend run --image photo.jpg --labelme photo.json --quality preview --frames 30 --out out/photo
      animate the polygons of a labelme file along its hint* arrows, fast explicit preview
  python -m backend run job.json --out out/job --device cuda --quality final
      a job file written by the Blender extension, with CLI overrides

events on stdout (one JSON object per line):
  {"event": "progress", "stage": "gaussians3d", "fraction": 0.4}
  {"event": "warning", "message": "..."}     {"event": "log", "message": "..."}
  {"event": "done", "result": "OUT/result.json"} or {"event": "error", "message": "...", "hint": "...", "kind": "input"}
"""


def _point_list(text: str, n_min: int, n_max: int, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be comma-separated numbers, got {text!r}")
    if not n_min <= len(vals) <= n_max:
        raise argparse.ArgumentTypeError(f"{what} needs {n_min}..{n_max} numbers, got {text!r}")
    return vals


def _hint(text: str) -> dict:
    v = _point_list(text, 4, 5, "--hint")
    return {"start": v[0:2], "end": v[2:4], "speed": v[4] if len(v) == 5 else None}


def _anchor(text: str) -> list[float]:
    return _point_list(text, 2, 2, "--anchor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backend",
        description="Loopscape backend: one landscape photo to a looping 4D Gaussian scene.",
    )
    parser.add_argument("--version", action="version", version=f"loopscape-backend {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="run a job: photo -> depth -> 3D Gaussians -> motion -> 4D loop -> video + PLY/USD",
        description="Run the pipeline. Give a job JSON, or flags, or both (flags override the file).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("job", nargs="?", help="job JSON file (as written by the Blender extension)")
    run.add_argument("--out", required=True, help="output folder (created; result.json is written last)")
    run.add_argument("--demo", action="store_true", help="use the built-in procedural landscape as the input")
    g = run.add_argument_group("inputs")
    g.add_argument("--image", help="the photo (PNG or JPEG, 8/16-bit)")
    g.add_argument("--mask", help="motion mask PNG (white = moves); resized to the photo")
    g.add_argument("--labelme", help="labelme JSON: polygons = mask, line shapes named hint* = arrows")
    g.add_argument("--flow", help="dense flow .npy, (2,H,W) or (1,2,H,W), pixels per frame at its own size")
    g.add_argument("--hint", type=_hint, action="append", metavar="X0,Y0,X1,Y1[,SPEED]",
                   help="a motion arrow in photo pixels; speed defaults to length/50 px per frame (repeatable)")
    g.add_argument("--anchor", type=_anchor, action="append", metavar="X,Y", help="a pin that must not move (repeatable)")
    g.add_argument("--speed", type=float, help="global factor on arrow speeds (default 1)")
    g.add_argument("--no-snap-mask", dest="snap_mask", action="store_false", default=None,
                   help="keep the mask's edge exactly as painted (by default static pixels at its edge are left out)")
    g = run.add_argument_group("depth and camera")
    g.add_argument("--depth", help="auto (model if available, else prior) | model | prior | PATH to a depth file")
    g.add_argument("--depth-kind", choices=("depth", "disparity"), help="what a depth file holds (default depth)")
    g.add_argument("--depth-model", help="HF model id or local folder (default Depth Anything V2 Small)")
    g.add_argument("--fov", type=float, metavar="DEG", help="field of view of the photo along its long side")
    g = run.add_argument_group("output")
    g.add_argument("--path", help=f"camera path: {' | '.join(PATH_PRESETS)} | PATH.json (per-frame K and w2c)")
    g.add_argument("--frames", type=int, help="loop length in frames (default 60)")
    g.add_argument("--fps", type=float, help="frames per second (default 24)")
    g.add_argument("--max-side", type=int, help="downscale so the long side is at most this (default 512)")
    g.add_argument("--quality", choices=QUALITIES, help="preview: explicit motion, seconds; draft; final")
    g.add_argument("--device", choices=DEVICES, help="auto picks CUDA (gsplat) when present, else CPU")
    g.add_argument("--seed", type=int, help="random seed (default 0)")
    g.add_argument("--png-frames", action="store_true", default=None, help="also write frames/NNNN.png")
    g.add_argument("--full-ply-sequence", action="store_true", default=None,
                   help="also write one full 3DGS PLY per loop frame, for viewers that play PLY sequences")
    g.add_argument("--no-mom3d", dest="mom3d", action="store_false", default=None,
                   help="ablation: use the per-view flows as they are, without 3D motion optimisation")
    run.add_argument("--events", choices=("auto", "human", "json"), default="auto",
                     help="stdout: a live progress display (human), JSON lines (json), or human on a terminal "
                          "and json otherwise (auto, the default)")

    sub.add_parser("info", help="print the backend's versions and devices as JSON (used by Blender's check)")
    return parser


FLAG_TO_FIELD = {
    "image": "image", "mask": "mask", "labelme": "labelme", "flow": "flow", "speed": "speed",
    "depth": "depth", "depth_kind": "depth_kind", "depth_model": "depth_model", "path": "path",
    "frames": "frames", "fps": "fps", "max_side": "max_side", "quality": "quality", "device": "device",
    "seed": "seed", "png_frames": "png_frames", "mom3d": "mom3d", "snap_mask": "snap_mask",
    "full_ply_sequence": "full_ply_sequence",
}


def job_from_args(args: argparse.Namespace) -> JobSpec:
    job = JobSpec.from_file(args.job) if args.job else JobSpec()
    data = job.to_dict()
    cwd = Path.cwd()
    for flag, key in FLAG_TO_FIELD.items():
        v = getattr(args, flag)
        if v is None:
            continue
        if key in ("image", "mask", "labelme", "flow") or (key in ("depth", "path") and v.endswith((".npy", ".png", ".exr", ".json"))):
            v = str((cwd / v).resolve()) if not Path(v).is_absolute() else v
        data[key] = v
    if args.hint:
        data["hints"] = args.hint
    if args.anchor:
        data["anchors"] = args.anchor
    if args.fov is not None:
        data["camera"] = {"fov_deg": args.fov}
    if args.demo:
        from backend.tools.demo_scene import write_demo_inputs

        demo_dir = Path(args.out).resolve() / "work" / "demo_input"
        fields = write_demo_inputs(demo_dir)
        for k, v in fields.items():
            if k in ("image", "mask", "depth", "depth_kind", "hints"):
                data[k] = v
    if not data.get("image"):
        raise LoopscapeError("No photo given.", "Pass --image PATH, a job file with \"image\", or --demo.")
    return JobSpec.from_dict(data, base_dir=job.base_dir)


def info() -> dict:
    import platform

    out: dict = {"backend": __version__, "python": platform.python_version()}
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
        out["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception as exc:  # report, do not crash: this is the diagnostic command
        out["torch"] = None
        out["problem"] = f"torch cannot be imported: {exc}"
    try:
        import gsplat

        out["gsplat"] = gsplat.__version__
    except Exception:
        out["gsplat"] = None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        print(json.dumps(info()))
        return 0

    from backend.infra.progress_display import make_sink, plan_job

    events = make_sink(args.events)  # JSON lines, or a live display when a person watches
    cancel.install()  # a second signal must not interrupt the cleanup of the first
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past ulimit -f a write must fail (EFBIG), not kill us
    try:
        try:
            _check_requested_device(args, events)  # before anything is written: a wrong device is bad input
            out = check_out_dir(args.out)  # before --demo writes its inputs there
            with out_lock(out):
                job = job_from_args(args)
                plan_job(events, job)
                from backend.pipeline import run_job

                result_path = run_job(job, out, events)
        finally:
            cancel.settle()  # from here on we only report; signals change nothing
    except LoopscapeError as exc:
        return _input_error(events, exc)
    except Cancelled as exc:
        events.emit(protocol.ERROR, message="Cancelled; no result was written.", hint="", kind="cancelled")
        print(f"cancelled: {exc}", file=sys.stderr)
        return 130
    except Exception as exc:
        if _is_out_of_memory(exc):  # raised outside run_job (which words it itself): still not a bug
            return _input_error(events, LoopscapeError(
                f"The GPU ran out of memory ({str(exc).splitlines()[0][:160]}).", OOM_HINT))
        cause = disk_full_cause(exc)
        if cause is not None:  # e.g. while --demo writes its inputs, before run_job can say more
            needed = estimate_run_bytes(args.max_side or 512, args.frames or 60, True, 13)
            return _input_error(events, disk_full_error(cause, Path(args.out).resolve(), needed))
        traceback.print_exc()  # an internal bug: say so, keep the traceback on stderr for the log
        events.emit(protocol.ERROR, message=f"Internal error: {type(exc).__name__}: {exc}.",
                    hint="See the log for the traceback, and report it with the job file.", kind="internal")
        return 1
    events.emit(protocol.DONE, result=str(result_path))
    return 0


OOM_HINT = "Use a smaller --max-side (e.g. 720 or 512), --quality preview, or --device cpu; no result was written."


def _is_out_of_memory(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")  # never imported just to ask: without torch there was no GPU
    if torch is None:
        return False
    from backend.infra.device import is_out_of_memory

    return is_out_of_memory(exc)


def _check_requested_device(args: argparse.Namespace, events: EventSink) -> None:
    """Refuse --device cuda without a usable CUDA and gsplat before the output folder is touched.

    The device comes from the flag, else the job file. gsplat compiles its kernels here on first
    use (about a minute, once per machine), so say so."""
    requested = args.device or (JobSpec.from_file(args.job).device if args.job else "auto")
    if requested == "cpu":
        return
    from backend.infra.device import check_device

    import torch

    if requested == "cuda" and torch.cuda.is_available():
        events.log("checking gsplat's CUDA kernels (the first use on a machine compiles them, about a minute)",
                   stage=protocol.SETUP)
    check_device(requested)


def _input_error(events: EventSink, exc: LoopscapeError) -> int:
    events.emit(protocol.ERROR, message=exc.message, hint=exc.hint, kind="input")
    print(f"error: {exc}", file=sys.stderr)
    return 2
