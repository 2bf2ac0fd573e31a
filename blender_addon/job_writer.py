"""Turn the scene's Loopscape settings into a backend job file (docs/DESIGN.md "Job file")."""
from __future__ import annotations

import json
import os
from pathlib import Path

import bpy
import numpy as np

from ..contract import LoopscapeError
from . import camera_math, mask_io

PARENT_TAG = "loopscape_result_parent"  # custom property marking the result's parent Empty


def result_parent(scene):
    for obj in scene.objects:
        if obj.get(PARENT_TAG):
            return obj
    return None


def hero_matrix(scene, hero) -> np.ndarray:
    """The hero camera's matrix at the first frame of the loop (the photo's viewpoint)."""
    keep = scene.frame_current
    scene.frame_set(scene.frame_start)
    m = np.array(hero.matrix_world)
    scene.frame_set(keep)
    return m


def scene_matrix(scene) -> np.ndarray:
    """Backend world -> Blender world: the result parent's matrix, else hero @ CV_FLIP @ scale."""
    parent = result_parent(scene)
    if parent is not None:
        return np.array(parent.matrix_world)
    props = scene.loopscape
    hero = props.hero_camera
    if hero is None:
        raise LoopscapeError("There is no hero camera.", "Use Photo > Set Up From Photo to create it.")
    return camera_math.scene_matrix_from_hero(hero_matrix(scene, hero), props.scene_scale)


def render_size(scene) -> tuple[int, int]:
    r = scene.render
    return (max(1, round(r.resolution_x * r.resolution_percentage / 100)),
            max(1, round(r.resolution_y * r.resolution_percentage / 100)))


def mask_array(image) -> np.ndarray:
    """The mask image as a bool array (H, W), row 0 at the top of the photo."""
    w, h = image.size
    px = np.empty(w * h * image.channels, dtype=np.float32)
    image.pixels.foreach_get(px)
    return mask_io.pixels_to_mask(px, w, h, image.channels)


def validate(scene) -> None:
    """Refuse a run that cannot work, with a message saying what to do."""
    props = scene.loopscape
    photo = props.photo
    if photo is None:
        raise LoopscapeError("No photo is set.", "Choose one in Loopscape > Photo > Set Up From Photo.")
    path = bpy.path.abspath(photo.filepath)
    if not path or not os.path.isfile(path):
        raise LoopscapeError(f"The photo file '{path or photo.name}' is missing on disk.", "Choose the photo again.")
    if props.hero_camera is None or props.hero_camera.name not in scene.objects:
        raise LoopscapeError("The hero camera was deleted.", "Use Photo > Set Up From Photo to create it again.")
    if props.mask is None:
        raise LoopscapeError("No motion mask.", "Create one in Loopscape > Motion and paint where the photo moves, "
                             "or import a mask or labelme file.")
    if props.mask.size[0] == 0 or not mask_array(props.mask).any():
        raise LoopscapeError("The motion mask is empty.", "Paint white where the photo moves (water, clouds, smoke).")


def build_job(scene, work_dir: Path, device_default: str = "auto") -> dict:
    """The job dict; also writes the mask PNG into ``work_dir``."""
    validate(scene)
    props = scene.loopscape
    photo = props.photo
    pw, ph = photo.size
    work_dir.mkdir(parents=True, exist_ok=True)
    mask = mask_array(props.mask)
    if mask.shape != (ph, pw):
        raise LoopscapeError(f"The mask is {mask.shape[1]}x{mask.shape[0]} but the photo is {pw}x{ph}.",
                             "Create the mask again at the photo's size.")
    mask_path = work_dir / "mask.png"
    mask_io.write_png_gray(mask_path, mask)

    hero = props.hero_camera
    rx, ry = scene.render.pixel_aspect_x, scene.render.pixel_aspect_y
    camera = {"K": camera_math.intrinsics(hero.data, pw, ph, rx, ry), "width": pw, "height": ph}

    world = scene_matrix(scene)
    shot = scene.camera if scene.camera is not None and scene.camera.type == "CAMERA" else hero
    W, H = render_size(scene)
    frames = []
    keep = scene.frame_current
    try:
        for i in range(props.frames):
            scene.frame_set(scene.frame_start + i)
            K = camera_math.intrinsics(shot.data, W, H, rx, ry)
            w2c = camera_math.world_to_camera(np.array(shot.matrix_world), world)
            frames.append({"K": K, "w2c": w2c.tolist()})
    finally:
        scene.frame_set(keep)

    device = props.device if props.device != "default" else device_default
    job = {
        "image": bpy.path.abspath(photo.filepath),
        "mask": str(mask_path),
        "hints": [{"start": [h.start[0], h.start[1]], "end": [h.end[0], h.end[1]],
                   "speed": (h.speed if h.speed > 0 else None)} for h in props.hints],
        "anchors": [[a.co[0], a.co[1]] for a in props.anchors],
        "speed": props.speed,
        "snap_mask": props.snap_mask,
        "camera": camera,
        "path": {"width": W, "height": H, "frames": frames},
        "frames": props.frames,
        "fps": scene.render.fps / scene.render.fps_base,
        "quality": props.quality,
        "device": device,
        "max_side": props.max_side,
    }
    if props.extra_json.strip():
        try:
            extra = json.loads(props.extra_json)
        except json.JSONDecodeError as exc:
            raise LoopscapeError(f"Extra Job Fields is not valid JSON ({exc}).", "Fix or clear it in the Run panel.")
        if not isinstance(extra, dict):
            raise LoopscapeError("Extra Job Fields must be a JSON object like {\"seed\": 1}.")
        job.update(extra)
    return job


def write_job(job: dict, path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(job, indent=1))
    os.replace(tmp, path)
    return path
