"""Stage ``load``: the photo at the working size, its camera, and the motion inputs.

Produces four artifacts so that later stages depend on exactly what they read: ``image`` (the
photo and its camera), ``mask`` (where things move; None for a still scene), ``motion`` (the
mask with the arrows, anchors and dense flow that say how) and ``path`` (the render cameras).
Every input is checked here, before any heavy stage (``io/input_checks.preflight``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from backend.infra.errors import LoopscapeError
from backend.io.image import InputImage, load_image, save_png
from backend.io.input_checks import preflight
from backend.io.motion_inputs import MotionInputs, load_motion_inputs
from backend.infra.events import EventSink
from backend.job import JobSpec
from backend.model.camera import Camera, intrinsics_from_fov
from backend.model.mask_edges import snap_mask_edges
from contract.camera import DEFAULT_FOV_DEG

if TYPE_CHECKING:
    from backend.pipeline import StageContext

INPUTS: tuple[str, ...] = ()
OUTPUTS = ("image", "mask", "motion", "path")


@dataclass
class Photo:
    image: InputImage
    camera: Camera  # the photo's camera at the working size

    @property
    def rgb(self) -> np.ndarray:
        return self.image.rgb

    def cache_identity(self) -> tuple:
        """Pixels and camera decide everything downstream; the file's name does not."""
        return self.image.rgb, self.camera.K, self.camera.width, self.camera.height


def run(ctx: StageContext) -> dict[str, object]:
    job = ctx.job
    img = load_image(job.resolve(job.image), job.max_side)
    W, H = img.size
    save_png(ctx.staging / "input.png", img.rgb)
    cam = input_camera(job, img.original_size, (W, H))
    motion: MotionInputs | None = None
    if job.has_motion:
        motion = load_motion_inputs(
            (W, H), img.original_size, mask_path=job.resolve(job.mask), labelme_path=job.resolve(job.labelme),
            flow_path=job.resolve(job.flow), hints=job.hints, anchors=job.anchors, speed=job.speed, events=ctx.events)
        if job.snap_mask:
            motion = snap_motion_mask(motion, img.rgb, ctx.events)
    checked = preflight(job, cam, motion)
    return {"image": Photo(img, cam), "mask": None if motion is None else motion.mask, "motion": motion,
            "path": checked.path_cams}


def snap_motion_mask(motion: MotionInputs, rgb: np.ndarray, events: EventSink) -> MotionInputs:
    """``motion`` with its mask's edge snapped to the photo (``mask_edges``): the static pixels a
    brush took along are released, and a dense flow is zeroed there with them."""
    snapped = snap_mask_edges(rgb, motion.mask)
    if snapped.released == 0:
        return motion
    events.log(f"motion mask: {snapped.released} px of static edge left out of the moving region "
               f"({100.0 * snapped.released / motion.mask.sum():.1f}% of the mask; snap_mask: false keeps it as painted)")
    flow = None if motion.flow is None else motion.flow * snapped.mask[..., None]
    return replace(motion, mask=snapped.mask, flow=flow, edge_released_px=snapped.released, painted_mask=motion.mask)


def report(out: dict[str, object]) -> dict:
    motion = out["motion"]
    return {} if motion is None else {"mask_edge_released_px": motion.edge_released_px}


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
