"""Stage ``render``: the path video. Frame i uses camera i of the path and loop time i mod N.

Pixels no Gaussian covers are filled from the background side (``render.fill``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backend.infra.errors import LoopscapeError
from backend.job import JobSpec
from backend.model.camera import Camera

INPUTS = ("image", "gaussians3d", "gaussians4d")


@dataclass
class PathVideo:
    frames: list[np.ndarray]  # (H, W, 3) uint8 per path camera
    uncovered: list[float]  # each frame's share of pixels no Gaussian covers (filled)


def params(ctx) -> dict:
    return {"path": ctx.job.path, "frames": ctx.job.frames}


def run(ctx, image, gaussians3d, gaussians4d) -> PathVideo:
    from backend.io.video import to_uint8  # the one clipping float->uint8 conversion of every frame writer
    from backend.render.fill import composite_over_fill

    cams = camera_path(ctx.job, image.camera)
    loop = None if gaussians4d is None else gaussians4d.loop
    still = gaussians3d.gaussians.to(ctx.device) if loop is None else None
    bg = torch.zeros(3, device=ctx.device)
    frames, uncovered = [], []
    with torch.no_grad():
        for i, c in enumerate(cams):
            r = loop.render(i, c, background=bg) if loop is not None else still.render(c, background=bg)
            rgb, u = composite_over_fill(r.rgb.cpu().numpy(), r.alpha.cpu().numpy(), r.depth.cpu().numpy())
            frames.append(to_uint8(rgb))
            uncovered.append(u)
            ctx.events.progress("render", (i + 1) / len(cams))
    return PathVideo(frames, uncovered)


def report(video: PathVideo) -> dict:
    return {"path_uncovered_fraction_mean": round(float(np.mean(video.uncovered)), 5),
            "path_uncovered_fraction_max": round(float(np.max(video.uncovered)), 5)}


def camera_path(job: JobSpec, cam: Camera) -> list[Camera]:
    from backend.model.camera_paths import PRESETS, load_path_json, preset_path

    if isinstance(job.path, str) and job.path in PRESETS:
        return preset_path(job.path, cam, n_frames=job.frames, scale=1.0)
    src = job.resolve(job.path) if isinstance(job.path, str) else job.path
    if not isinstance(src, (dict, list)) and not src.is_file():
        raise LoopscapeError(f"Camera path file not found: {src}.", "Pass a preset name or an existing path JSON.")
    return load_path_json(src, cam.width, cam.height)
