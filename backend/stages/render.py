"""Stage ``render``: the path video. Frame i uses camera i of the path and loop time i mod N.

Pixels no Gaussian covers are filled from the background side (``render.fill``); pixels partly
covered show their own colour. The report counts both: Blender composites over its world instead,
so there the first show the world and the second let part of it through.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

INPUTS = ("path", "gaussians3d", "gaussians4d")


SEE_THROUGH_ALPHA = 0.9  # below this a covered pixel lets a tenth or more of Blender's world through


@dataclass
class PathVideo:
    frames: list[np.ndarray]  # (H, W, 3) uint8 per path camera
    uncovered: list[float]  # each frame's share of pixels no Gaussian covers (filled)
    see_through: list[float]  # each frame's share of covered pixels below SEE_THROUGH_ALPHA


def run(ctx, path, gaussians3d, gaussians4d) -> PathVideo:
    from backend.io.video import to_uint8  # the one clipping float->uint8 conversion of every frame writer
    from backend.render.fill import COVERED_ALPHA, composite_over_fill

    cams = path
    loop = None if gaussians4d is None else gaussians4d.loop.to(ctx.device)
    still = gaussians3d.gaussians.to(ctx.device) if loop is None else None
    bg = torch.zeros(3, device=ctx.device)
    frames, uncovered, see_through = [], [], []
    with torch.no_grad():
        for i, c in enumerate(cams):
            r = loop.render(i, c, background=bg) if loop is not None else still.render(c, background=bg)
            alpha = r.alpha.cpu().numpy()
            rgb, u = composite_over_fill(r.rgb.cpu().numpy(), alpha, r.depth.cpu().numpy())
            frames.append(to_uint8(rgb))
            uncovered.append(u)
            see_through.append(float(((alpha >= COVERED_ALPHA) & (alpha < SEE_THROUGH_ALPHA)).mean()))
            ctx.events.progress("render", (i + 1) / len(cams))
    return PathVideo(frames, uncovered, see_through)


def report(video: PathVideo) -> dict:
    return {"path_uncovered_fraction_mean": round(float(np.mean(video.uncovered)), 5),
            "path_uncovered_fraction_max": round(float(np.max(video.uncovered)), 5),
            "path_see_through_fraction_mean": round(float(np.mean(video.see_through)), 5),
            "path_see_through_fraction_max": round(float(np.max(video.see_through)), 5)}
