"""The orchestrator: runs the stages of a job, caches their artifacts, writes the result atomically.

Every output is first written into a private staging folder inside OUT. Only when every stage
has succeeded are the files swapped into OUT (backend/publish.py), ``result.json`` last; a failed
or cancelled run removes its staging folder and leaves an earlier result byte for byte. Inputs
are checked before any heavy stage (backend/validate_inputs.py).
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from backend import __version__
from backend.camera import DEFAULT_FOV_DEG, Camera, intrinsics_from_fov
from backend.errors import LoopscapeError
from backend.events import EventSink
from backend.job import JobSpec
from backend.publish import RESULT_NAME  # noqa: F401  (re-exported: it used to live here)
from backend.publish import (disk_full_cause, disk_full_error, estimate_run_bytes, out_lock, publish, recover,
                             staging_dir)
from backend.stage_cache import StageCache, file_digest, make_key
from backend.validate_inputs import check_out_dir, preflight

USD_FRAME_START = 1  # Blender's first frame; the importer reads it from result.json
TRAIN3D_RECIPE = "random-bg-1"  # bump when training changes, so cached 3D Gaussians are not reused


@dataclass(frozen=True)
class QualityPreset:
    n_views: int
    iters_4d: int  # 0 = explicit (preview) motion, no network training
    mom3d_iters: int


QUALITY_PRESETS = {
    "preview": QualityPreset(n_views=9, iters_4d=0, mom3d_iters=1500),
    "draft": QualityPreset(n_views=13, iters_4d=150, mom3d_iters=3000),
    "final": QualityPreset(n_views=25, iters_4d=3000, mom3d_iters=5000),
}


class StageTimer:
    def __init__(self, events: EventSink) -> None:
        self.events = events
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.events.progress(name, 0.0)
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)
        self.events.progress(name, 1.0, seconds=self.timings[name])


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise LoopscapeError("CUDA was requested but torch sees no CUDA device.",
                                 "Use --device cpu (or auto), or install a CUDA build of torch on a machine with an NVIDIA GPU.")
        return torch.device("cuda")
    if requested == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def configure_threads() -> int:
    """Use half the cores (at least one) for torch's CPU kernels unless LOOPSCAPE_THREADS says otherwise.

    torch's OpenMP workers spin while they wait; when other processes (Blender itself, a second
    job) share the cores, using all of them made training up to ten times slower here.
    """
    env = os.environ.get("LOOPSCAPE_THREADS")
    n = int(env) if env and env.isdigit() and int(env) > 0 else max(1, min(8, (os.cpu_count() or 2) // 2))
    torch.set_num_threads(n)
    return n


def prepare_out_dir(out: Path) -> Path:
    return check_out_dir(out)


def input_camera(job: JobSpec, original_size: tuple[int, int], working_size: tuple[int, int]) -> Camera:
    """The photo's camera at the working resolution, from the job's K (input pixels) or a field of view."""
    W, H = working_size
    cam = job.camera or {}
    if "K" in cam:
        cw, ch = int(cam["width"]), int(cam["height"])
        ow, oh = original_size
        if abs(cw / ch - ow / oh) > 0.01 * ow / oh:
            raise LoopscapeError(f"The job's camera is {cw}x{ch} but the photo is {ow}x{oh}; their aspect ratios differ.",
                                 "Match the render resolution to the photo (the Blender add-on's Photo panel does this).")
        return Camera(np.array(cam["K"], dtype=np.float64), cw, ch).scaled(W, H)
    return Camera(intrinsics_from_fov(W, H, float(cam.get("fov_deg", DEFAULT_FOV_DEG))), W, H)


def run_job(job: JobSpec, out: Path, events: EventSink, use_cache: bool = True) -> Path:
    """Run every stage of ``job`` and return the path of the finished ``result.json``."""
    out = prepare_out_dir(Path(out).resolve())
    with out_lock(out):  # one writer per OUT; the swap in publish() keeps the old result until the end
        recover(out, events)
        device = resolve_device(job.device)
        threads = configure_threads()
        events.log(f"torch uses {threads} CPU thread(s); set LOOPSCAPE_THREADS to change", stage="setup")
        torch.manual_seed(job.seed)
        np.random.seed(job.seed)
        try:
            with staging_dir(out) as staging:
                result = _run_stages(job, out, staging, device, events, StageCache(out / "work" / "cache", use_cache))
                return publish(staging, out, result, events)
        except Exception as exc:
            cause = None if isinstance(exc, LoopscapeError) else disk_full_cause(exc)
            if cause is None:
                raise
            needed = estimate_run_bytes(job.max_side, job.frames, job.has_motion, QUALITY_PRESETS[job.quality].n_views)
            raise disk_full_error(cause, out, needed) from None


def _run_stages(job: JobSpec, out: Path, staging: Path, device: torch.device, events: EventSink,
                cache: StageCache) -> dict:
    from backend.depth import DepthSpec, estimate_depth
    from backend.gaussians import from_points
    from backend.image_input import load_image, save_png
    from backend.lift import lift_to_points
    from backend.multiview import synthesize_views, training_cameras
    from backend.train3d import TrainViews, preset_config, train_gaussians

    timer = StageTimer(events)
    preset = QUALITY_PRESETS[job.quality]
    metrics: dict = {}
    events.log(f"device {device}, quality {job.quality}, {job.frames} frames", stage="setup")

    with timer.stage("load"):
        image_path = job.resolve(job.image)
        img = load_image(image_path, job.max_side)
        W, H = img.size
        save_png(staging / "input.png", img.rgb)
        cam = input_camera(job, img.original_size, (W, H))
        motion_inputs = None
        if job.has_motion:
            from backend.motion_inputs import load_motion_inputs

            motion_inputs = load_motion_inputs(
                (W, H), img.original_size, mask_path=job.resolve(job.mask), labelme_path=job.resolve(job.labelme),
                flow_path=job.resolve(job.flow), hints=job.hints, anchors=job.anchors, speed=job.speed, events=events)
        checked = preflight(job, cam, motion_inputs)  # the rest of the input checks, before any heavy stage
    image_key = make_key(file_digest(image_path), W, H)

    with timer.stage("depth"):
        depth_source = job.depth
        depth_file = None
        if depth_source not in ("auto", "model", "prior"):
            depth_file = job.resolve(depth_source)
            depth_source = str(depth_file)
        spec = DepthSpec(source=depth_source, kind=job.depth_kind, model=job.depth_model, device=str(device))
        depth_key = make_key(image_key, job.depth, job.depth_kind, job.depth_model, file_digest(depth_file))
        depth = cache.get_or_compute("depth", depth_key, lambda: estimate_depth(img.rgb, spec, events))
        metrics["depth_source"] = depth.source

    with timer.stage("lift"):
        points = lift_to_points(img.rgb, depth.depth, cam)
        moving_pts = motion_inputs.mask.reshape(-1)[points.pixel] if motion_inputs is not None else None

    with timer.stage("multiview"):
        cameras = training_cameras(cam, scene_scale=1.0, n_views=preset.n_views)
        mv_key = make_key(depth_key, cam.to_dict(), preset.n_views)
        views = cache.get_or_compute(
            "multiview", mv_key, lambda: synthesize_views(points.xyz, points.rgb, points.pixel_size, cameras, events))
        metrics["hole_fraction_mean"] = round(float(views.hole_fractions()[1:].mean()) if len(views) > 1 else 0.0, 4)

    with timer.stage("gaussians3d"):
        init = from_points(points.xyz, points.rgb, points.pixel_size * 0.3, opacity=0.9, moving=moving_pts)
        cfg = preset_config(job.quality, len(points))
        cfg.seed = job.seed
        tv = TrainViews(views.cameras, torch.as_tensor(views.images, device=device),
                        torch.as_tensor(views.valid, device=device))
        g_key = make_key(mv_key, TRAIN3D_RECIPE, job.quality, job.seed, None if moving_pts is None else int(moving_pts.sum()),
                         file_digest(job.resolve(job.mask)), file_digest(job.resolve(job.labelme)), str(device))

        def train():
            g, rep = train_gaussians(init, tv, cfg, scene_scale=1.0, events=events)
            return g.to("cpu"), rep

        gaussians, report = cache.get_or_compute("gaussians3d", g_key, train)
        gaussians = gaussians.to(device)
        metrics["train_psnr_input_view"] = round(report.psnr_input_view, 3)
        metrics["train_psnr_synth_mean"] = round(report.psnr_synth_mean, 3)
        metrics["train_psnr_per_view"] = [round(p, 3) for p in report.psnr_per_view]
        metrics["n_gaussians"] = report.n_gaussians

    loop = input_frames = None
    if motion_inputs is not None:
        from backend.motion_stage import run_motion

        loop, input_frames = run_motion(job, img, cam, points, views, gaussians, motion_inputs, preset, device, events, timer,
                          metrics, cache, g_key)

    with timer.stage("render"):
        path_cams = checked.path_cams
        frames_rgb, uncovered = _render_path(gaussians, loop, path_cams, job.frames, device, events)
        metrics["path_uncovered_fraction_mean"] = round(float(np.mean(uncovered)), 5)
        metrics["path_uncovered_fraction_max"] = round(float(np.max(uncovered)), 5)

    with timer.stage("export"):
        result = _export(job, staging, gaussians, loop, frames_rgb, cam, events)
        if input_frames is not None:
            from backend.video import write_mp4

            write_mp4(input_frames[:-1], staging / "input_view.mp4", job.fps)
            result["input_view_video"] = "input_view.mp4"

    result.update({
        "backend_version": __version__,
        "input_image": "input.png",
        "camera": {"K": cam.K.tolist(), "width": cam.width, "height": cam.height},
        "frames": job.frames if loop is not None else len(result["ply_frames"]),
        "fps": job.fps,
        "quality": job.quality,
        "device": str(device),
        "timings": timer.timings,
        "metrics": metrics,
        "warnings": list(events.warnings),
        "cache_hits": cache.hits,
        "job": job.to_dict(),
    })
    return result


def _render_path(gaussians, loop, cams: list[Camera], n_frames: int, device,
                 events: EventSink) -> tuple[list[np.ndarray], list[float]]:
    """Frame i of the video uses camera i of the path and loop time i mod N. Pixels no Gaussian
    covers are filled from the background side; returns the frames and each one's uncovered share."""
    from backend.render_fill import composite_over_fill

    bg = torch.zeros(3, device=device)
    out, uncovered = [], []
    with torch.no_grad():
        for i, c in enumerate(cams):
            r = loop.render(i, c, background=bg) if loop is not None else gaussians.render(c, background=bg)
            rgb, u = composite_over_fill(r.rgb.cpu().numpy(), r.alpha.cpu().numpy(), r.depth.cpu().numpy())
            out.append((rgb * 255 + 0.5).astype(np.uint8))
            uncovered.append(u)
            events.progress("render", (i + 1) / len(cams))
    return out, uncovered


def _export(job: JobSpec, staging: Path, gaussians, loop, frames_rgb: list[np.ndarray], cam: Camera,
            events: EventSink) -> dict:
    from backend.ply_io import write_gaussians_ply
    from backend.video import write_mp4, write_png_frames

    ply_dir = staging / "ply"
    ply_dir.mkdir()
    frame_sets = loop.frames()[: loop.n_frames] if loop is not None else [gaussians]
    ply_paths = []
    for i, g in enumerate(frame_sets):
        p = ply_dir / f"frame_{i:04d}.ply"
        write_gaussians_ply(p, g.to("cpu"))
        ply_paths.append(f"ply/{p.name}")
        events.progress("export", 0.8 * (i + 1) / len(frame_sets))
    result: dict = {"ply_frames": ply_paths}
    if loop is not None:
        # Frame N is not part of the sequence (it equals frame 0); it is exported so anyone can
        # check the loop closure with their own renderer.
        from backend.motion_stage import loop_end_frame

        write_gaussians_ply(ply_dir / "loop_end.ply", loop_end_frame(loop).to("cpu"))
        result["ply_loop_end"] = "ply/loop_end.ply"
    write_mp4(frames_rgb, staging / "video.mp4", job.fps)
    result["video"] = "video.mp4"
    if job.png_frames:
        paths = write_png_frames(frames_rgb, staging / "frames")
        result["png_frames"] = [Path(p).relative_to(staging).as_posix() for p in paths]
    result["usd"] = None
    try:
        from backend.usd_export import gaussians_to_frame, write_usd_points
    except ImportError:  # usd-core missing: PLY frames remain the exchange format
        events.warning("usd-core is not installed, so no USD was written; Blender will import the PLY frames.")
    else:
        write_usd_points(staging / "scene.usdc", [gaussians_to_frame(g.to("cpu")) for g in frame_sets], job.fps,
                         frame_start=USD_FRAME_START)
        result["usd"] = "scene.usdc"
        result["usd_frame_start"] = USD_FRAME_START
    return result
