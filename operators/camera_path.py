"""Camera path presets as ordinary keyframes on a shot camera (the hero camera never moves)."""
from __future__ import annotations

import bpy
from bpy.props import EnumProperty

from .. import camera_math
from ..job_writer import JobError, scene_matrix

SHOT_NAME = "Loopscape Shot"
PRESET_ITEMS = [
    ("zoom-in", "Zoom In", "Dolly forward 0.24 scene units"),
    ("side", "Side", "Truck sideways, +0.09 to -0.09"),
    ("up-down", "Up-Down", "Pedestal, +0.08 to -0.08"),
    ("circle", "Circle", "Small circle with a forward sway"),
]


def shot_camera(scene, hero):
    """The keyframed shot camera, created from the hero camera's lens when missing."""
    shot = bpy.data.objects.get(SHOT_NAME)
    if shot is None or shot.type != "CAMERA" or shot.name not in scene.objects:
        shot = bpy.data.objects.new(SHOT_NAME, hero.data.copy())
        shot.data.name = SHOT_NAME
        scene.collection.objects.link(shot)
    return shot


def insert_preset(scene, name: str) -> object:
    props = scene.loopscape
    hero = props.hero_camera
    if hero is None or hero.name not in scene.objects:
        raise JobError("There is no hero camera. Use Photo > Set Up From Photo first.")
    world = scene_matrix(scene)
    shot = shot_camera(scene, hero)
    shot.animation_data_clear()
    shot.rotation_mode = "QUATERNION"
    n = props.frames
    for i, t in enumerate(camera_math.preset_translations(name, n)):
        m = camera_math.camera_matrix_from_w2c(camera_math.translation_w2c(t), world)
        shot.matrix_world = m
        f = scene.frame_start + i
        shot.keyframe_insert("location", frame=f)
        shot.keyframe_insert("rotation_quaternion", frame=f)
    scene.frame_end = scene.frame_start + n - 1
    scene.camera = shot
    return shot


class LOOPSCAPE_OT_camera_preset(bpy.types.Operator):
    """Keyframe a preset camera path on the shot camera, scaled to the scene (editable afterwards)"""

    bl_idname = "loopscape.camera_preset"
    bl_label = "Insert Camera Path"
    bl_options = {"REGISTER", "UNDO"}

    preset: EnumProperty(name="Preset", items=PRESET_ITEMS, default="zoom-in")

    def execute(self, context):
        try:
            insert_preset(context.scene, self.preset)
        except JobError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Keyframed '{self.preset}' on {SHOT_NAME} over {context.scene.loopscape.frames} frames")
        return {"FINISHED"}


classes = (LOOPSCAPE_OT_camera_preset,)
