"""Stage ``validate``: render the loop at the input camera and measure how it follows the request.

It checks the motion (DIS flow inside the eroded mask against the requested flow), the stillness
outside the dilated mask, and the loop closure (frame N rendered from its own state against
frame 0). The frames are also the result's ``input_view.mp4``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backend.infra.events import EventSink
from backend.model.camera import Camera

INPUTS = ("image", "gaussians4d", "flows", "mask")
PSNR_CAP = 100.0  # identical images report 100 dB instead of infinity (JSON has no inf)


@dataclass
class InputViewCheck:
    frames: np.ndarray  # (N + 1, H, W, 3) float in [0, 1]: frames 0..N at the input camera
    metrics: dict


def run(ctx, image, gaussians4d, flows, mask) -> InputViewCheck:
    frames = input_view_loop(gaussians4d.loop, image.camera, ctx.device, ctx.events)
    return InputViewCheck(frames, motion_report(frames, mask, flows.input_view))


def report(check: InputViewCheck) -> dict:
    return {"input_view": check.metrics}


def input_view_loop(loop, cam: Camera, device: torch.device, events: EventSink) -> np.ndarray:
    """Render frames 0..N at the input camera (frame N from its own state, not wrapped to frame 0)."""
    frames = []
    with torch.no_grad():
        for t in range(loop.n_frames + 1):
            r = loop.render(t, cam, background=torch.zeros(3, device=device), wrap=False)
            frames.append(r.rgb.clamp(0, 1).cpu().numpy())
            events.progress("validate", (t + 1) / (loop.n_frames + 1))
    return np.stack(frames)


def motion_report(frames: np.ndarray, mask: np.ndarray, flow0: np.ndarray) -> dict:
    """How the input-view video follows the requested flow, stays still outside the mask, and closes its loop."""
    from backend.tools.metrics.image import psnr
    from backend.tools.metrics.motion import video_metrics

    m = video_metrics(frames[:-1], mask, target_flow=flow0)
    speed = float(np.linalg.norm(flow0[mask], axis=-1).mean())
    m["requested_speed_px"] = speed
    m["motion_epe_over_speed"] = m["motion_epe"] / max(speed, 1e-9) if "motion_epe" in m else float("nan")
    m["loop_closure_psnr_frameN"] = min(psnr(frames[-1], frames[0]), PSNR_CAP)
    return {k: (round(min(float(v), PSNR_CAP), 5) if np.isfinite(v) else None) for k, v in m.items()}
