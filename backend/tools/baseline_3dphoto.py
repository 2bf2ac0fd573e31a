"""The "3D photo + 2D cinemagraph" baseline (the 3D-Cinemagraphy / Make-It-4D family, simplified).

The input photo is animated in 2D by the same looping Eulerian flow our pipeline uses
(``loop2d.render_loop_2d``); each animated frame is then lifted with one depth map (the photo's)
and splatted into the camera of that video frame with a z-buffer, holes filled from the nearest
background (``multiview.render_view``). No 3D motion, no Gaussians, no optimisation: the motion
lives in image space, so parallax moves the texture but the flow itself is never re-projected,
and disocclusions are filled, not learned.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.model.camera import Camera
from backend.stages.lift import lift_to_points
from backend.stages.loop2d import render_loop_2d
from backend.stages.multiview import render_view


@dataclass
class BaselineVideo:
    frames: np.ndarray      # (T, H, W, 3) float32 in [0, 1], frame i seen from camera i at loop time i mod N
    hole_fraction: float    # mean share of pixels that no point covered (filled)


def render_3dphoto_baseline(rgb: np.ndarray, depth: np.ndarray, camera: Camera, flow: np.ndarray,
                            path: list[Camera], n_frames: int, mask: np.ndarray | None = None) -> BaselineVideo:
    """Animate ``rgb`` (H, W, 3) by ``flow`` (H, W, 2, px/frame) in a loop of ``n_frames`` and warp
    frame ``i mod n_frames`` into ``path[i]`` by ``depth`` (camera z, the photo's camera)."""
    loop = render_loop_2d(rgb, flow, n_frames, mask=mask).frames
    # geometry is the same for every frame: lift once, swap the colours per frame
    points = lift_to_points(loop[0], depth, camera)
    out = np.empty((len(path), camera.height, camera.width, 3), np.float32)
    holes = []
    for i, cam in enumerate(path):
        colours = loop[i % n_frames].reshape(-1, 3)[points.pixel]
        img, _z, valid = render_view(points.xyz, colours, cam, points.pixel_size, fill=True, inpaint=True)
        out[i] = np.clip(img, 0.0, 1.0)
        holes.append(1.0 - float(valid.mean()))
    return BaselineVideo(frames=out, hole_fraction=float(np.mean(holes)))
