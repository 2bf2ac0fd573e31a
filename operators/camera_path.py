"""Camera path presets as ordinary keyframes on a shot camera (the hero camera never moves)."""
from __future__ import annotations

import bpy
from bpy.props import EnumProperty
from mathutils import Matrix

from ..blender_addon import camera_math
from ..blender_addon.job_writer import scene_matrix
from ..blender_addon.props import PATH_ITEMS
from ..contract import LoopscapeError
from ..contract.camera import DEFAULT_PATH

SHOT_NAME = "Loopscape Shot"


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
        raise LoopscapeError("There is no hero camera.", "Use Photo > Set Up From Photo first.")
    world = scene_matrix(scene)
    shot = shot_camera(scene, hero)
    shot.animation_data_clear()
    shot.rotation_mode = "QUATERNION"
    n = props.frames
    for i, m in enumerate(camera_math.preset_camera_matrices(name, n, world)):
        shot.matrix_world = Matrix(m.tolist())
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

    preset: EnumProperty(name="Preset", items=PATH_ITEMS, default=DEFAULT_PATH)

    def execute(self, context):
        try:
            insert_preset(context.scene, self.preset)
        except LoopscapeError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Keyframed '{self.preset}' on {SHOT_NAME} over {context.scene.loopscape.frames} frames")
        return {"FINISHED"}


classes = (LOOPSCAPE_OT_camera_preset,)
