"""Stage ``render``: the path video. Frame i uses camera i of the path and loop time i mod N.

Pixels no Gaussian covers are filled from the background side (``render.fill``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

INPUTS = ("path", "gaussians3d", "gaussians4d")


@dataclass
class PathVideo:
    frames: list[np.ndarray]  # (H, W, 3) uint8 per path camera
    uncovered: list[float]  # each frame's share of pixels no Gaussian covers (filled)


def run(ctx, path, gaussians3d, gaussians4d) -> PathVideo:
    from backend.io.video import to_uint8  # the one clipping float->uint8 conversion of every frame writer
    from backend.render.fill import composite_over_fill

    cams = path
    loop = None if gaussians4d is None else gaussians4d.loop.to(ctx.device)
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
