"""The orchestrator: runs the stages of a job in order, caches their artifacts, publishes the result.

Read it top to bottom: ``STAGES`` is the pipeline. Each stage is one module under
``backend/stages`` named after it (the names are ``contract.protocol.STAGES``), with

- ``INPUTS``: the artifacts its ``run`` takes, by name (a stage's artifact is named after it;
  ``load`` makes ``image``, ``mask``, ``motion`` and ``path``);
- ``run(ctx, **inputs)``: the work, returning the stage's artifact;
- optionally ``params(ctx)``: the job and preset values it reads, ``CACHED = True`` when its
  artifact is worth keeping in the work folder (or ``cached(ctx)`` when that depends on the
  preset), ``report(artifact)``: its result.json metrics, and ``KEY_BY_CONTENT = True`` when
  its dependants should key on what it made rather than on what it read (below).

Cache keys are derived, never written by hand: a stage's key hashes its name, its params and
its inputs' keys, and the ``load`` artifacts are keyed by their content. So are the artifacts of
a ``KEY_BY_CONTENT`` stage: depth reads the motion (the offline prior takes its horizon from
it), and new arrows that leave the depth as it was must not retrain the 3D Gaussians.

Every output is first written into a private staging folder inside OUT. Only when every stage
has succeeded are the files swapped into OUT (``io/publish.py``), ``result.json`` last; a failed
or cancelled run removes its staging folder and leaves an earlier result byte for byte. One run
writes into OUT at a time (a lock). Inputs are checked at the end of ``load``, before any heavy
stage (``io/input_checks.py``).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import numpy as np
import torch

from backend import __version__
from backend.infra.cache import StageCache, content_digest, make_key
from backend.infra.device import configure_threads, is_out_of_memory, resolve_device
from backend.infra.errors import LoopscapeError
from backend.infra.events import EventSink
from backend.io.input_checks import check_out_dir
from backend.io.publish import disk_full_cause, disk_full_error, estimate_run_bytes, out_lock, publish, recover, staging_dir
from backend.job import JobSpec
from backend.stages import (depth, export, flows, gaussians3d, gaussians4d, lift, load, loop2d, mom3d, multiview, render,
                            validate)
from contract import protocol
from contract.quality import PRESETS, QualityPreset

STAGES: tuple[ModuleType, ...] = (load, depth, lift, multiview, gaussians3d, flows, mom3d, loop2d, gaussians4d, validate,
                                  render, export)


def stage_name(stage: ModuleType) -> str:
    return stage.__name__.rsplit(".", 1)[-1]


assert tuple(map(stage_name, STAGES)) == protocol.STAGES, "the pipeline and the contract list the same stages"


@dataclass
class StageContext:
    """What every stage may read besides its input artifacts."""

    job: JobSpec
    device: torch.device
    events: EventSink
    staging: Path  # where files of the result are written before the publish
    preset: QualityPreset
    metrics: dict[str, Any] = field(default_factory=dict)


class StageTimer:
    def __init__(self, events: EventSink) -> None:
        self.events = events
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.events.progress(name, 0.0)
        t0 = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            if not hasattr(exc, "loopscape_stage"):
                try:
                    exc.loopscape_stage = name  # type: ignore[attr-defined]  # which stage failed, for the message
                except (AttributeError, TypeError):
                    pass
            raise
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)
        self.events.progress(name, 1.0, seconds=self.timings[name])


def run_job(job: JobSpec, out: Path, events: EventSink, use_cache: bool = True) -> Path:
    """Run every stage of ``job`` and return the path of the finished ``result.json``."""
    out = check_out_dir(Path(out).resolve())
    with out_lock(out):  # one writer per OUT; the swap in publish() keeps the old result until the end
        recover(out, events)
        device = resolve_device(job.device)
        threads = configure_threads()
        events.log(f"torch uses {threads} CPU thread(s); set LOOPSCAPE_THREADS to change", stage=protocol.SETUP)
        events.log(f"device {device}, quality {job.quality}, {job.frames} frames", stage=protocol.SETUP)
        torch.manual_seed(job.seed)
        np.random.seed(job.seed)
        preset = PRESETS[job.quality]
        try:
            with staging_dir(out) as staging:
                ctx = StageContext(job, device, events, staging, preset)
                cache = StageCache(out / "work" / "cache", use_cache)
                timer = StageTimer(events)
                artifacts = run_stages(ctx, cache, timer)
                return publish(staging, out, _result_index(ctx, artifacts, timer, cache), events)
        except Exception as exc:
            if is_out_of_memory(exc):  # the staging folder is gone by now: no partial result
                raise out_of_memory_error(exc, job, failed_stage(exc)) from None
            cause = None if isinstance(exc, LoopscapeError) else disk_full_cause(exc)
            if cause is None:
                raise
            raise disk_full_error(cause, out, estimate_run_bytes(job.max_side, job.frames, job.has_motion,
                                                                 preset.n_views)) from None


def failed_stage(exc: BaseException) -> str | None:
    """The stage an exception escaped from (set by :meth:`StageTimer.stage`)."""
    return getattr(exc, "loopscape_stage", None)


def out_of_memory_error(exc: BaseException, job: JobSpec, stage: str | None) -> LoopscapeError:
    """One line for a GPU out of memory: where, at what size, and the smaller size to try."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    where = f" in stage {stage}" if stage else ""
    smaller = max(256, (job.max_side * 2 // 3) // 16 * 16)
    return LoopscapeError(
        f"The GPU ran out of memory{where} at --max-side {job.max_side} ({job.frames} frames, quality {job.quality}).",
        f"Try a smaller --max-side such as {smaller}, --quality preview, or --device cpu; no result was written.")


def run_stages(ctx: StageContext, cache: StageCache, timer: StageTimer) -> dict[str, Any]:
    """Run ``STAGES`` in order; returns every artifact by name (None for motion stages of a still scene)."""
    artifacts: dict[str, Any] = {}
    keys: dict[str, str] = {}

    def key_of(name: str) -> str:
        if name not in keys:  # load's artifacts: keyed by content, on first use
            keys[name] = content_digest(artifacts[name])
        return keys[name]

    for stage in STAGES:
        name = stage_name(stage)
        if name in protocol.MOTION_STAGES and artifacts.get("motion") is None:
            artifacts[name] = None
            keys[name] = "none"
            continue
        inputs = {n: artifacts[n] for n in stage.INPUTS}
        with timer.stage(name):
            params = stage.params(ctx) if hasattr(stage, "params") else None
            if stage.INPUTS or params is not None:
                keys[name] = make_key(name, params, [key_of(n) for n in stage.INPUTS])
            if _is_cached(stage, ctx):
                out = cache.get_or_compute(name, keys[name], lambda: stage.run(ctx, **inputs))
            else:
                out = stage.run(ctx, **inputs)
            if getattr(stage, "KEY_BY_CONTENT", False):
                keys[name] = content_digest(out)
            if hasattr(stage, "report"):
                ctx.metrics.update(stage.report(out))
        if hasattr(stage, "OUTPUTS"):
            artifacts.update(out)
        else:
            artifacts[name] = out
    return artifacts


def _is_cached(stage, ctx: StageContext) -> bool:
    return stage.cached(ctx) if hasattr(stage, "cached") else getattr(stage, "CACHED", False)


def _result_index(ctx: StageContext, artifacts: dict[str, Any], timer: StageTimer, cache: StageCache) -> dict:
    """result.json: the export stage's file entries plus what the run was and how it went."""
    job, files, cam = ctx.job, artifacts["export"], artifacts["image"].camera
    return {
        **files,
        "backend_version": __version__,
        protocol.KEY_INPUT_IMAGE: "input.png",
        protocol.KEY_CAMERA: {"K": cam.K.tolist(), "width": cam.width, "height": cam.height},
        protocol.KEY_FRAMES: job.frames if protocol.KEY_LAYOUT in files else len(files[protocol.KEY_PLY_FRAMES]),
        protocol.KEY_FPS: job.fps,
        protocol.KEY_QUALITY: job.quality,
        "device": str(ctx.device),
        protocol.KEY_TIMINGS: timer.timings,
        protocol.KEY_METRICS: ctx.metrics,
        protocol.KEY_WARNINGS: list(ctx.events.warnings),
        "cache_hits": cache.hits,
        protocol.KEY_JOB: job.to_dict(),
    }
