"""Result: import (the contract: bpy.ops.loopscape.import_result(directory=OUT)), video, folder."""
from __future__ import annotations

import bpy
from bpy.props import EnumProperty, FloatProperty, StringProperty

from ..blender_addon import importer
from ..blender_addon.compat import path_options
from ..contract import LoopscapeError
from ..contract.protocol import RESULT_NAME


class LOOPSCAPE_OT_import_result(bpy.types.Operator):
    """Import a backend result folder as an animated splat point cloud (replaces an earlier import)"""

    bl_idname = "loopscape.import_result"
    bl_label = "Import Result"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(subtype="DIR_PATH", options=path_options())
    source: EnumProperty(name="Source", items=[("auto", "Auto", "USD when present, else PLY frames"),
                                               ("usd", "USD", ""), ("ply", "PLY", "")], default="auto")
    size: FloatProperty(name="Splat Size", default=1.0, min=0.0, soft_max=3.0)

    def invoke(self, context, _event):
        if not self.directory and context.scene.loopscape.result_dir:
            self.directory = context.scene.loopscape.result_dir
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        if not self.directory:
            self.report({"ERROR"}, f"No folder given. Choose the backend's output folder (it holds {RESULT_NAME}).")
            return {"CANCELLED"}
        try:
            rep = importer.import_result(context, self.directory, source=self.source, size=self.size)
        except LoopscapeError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Imported {rep.frames} frames ({rep.source.upper()}) as '{rep.obj.name}'")
        return {"FINISHED"}


class LOOPSCAPE_OT_open_output(bpy.types.Operator):
    """Open the result folder in the file manager"""

    bl_idname = "loopscape.open_output"
    bl_label = "Open Output Folder"

    def execute(self, context):
        d, _res = importer.result_paths(context.scene)
        if d is None or not d.is_dir():
            self.report({"ERROR"}, "There is no result folder yet. Run a job or import a result.")
            return {"CANCELLED"}
        importer.open_path(d)
        return {"FINISHED"}


class LOOPSCAPE_OT_play_video(bpy.types.Operator):
    """Show the backend's own video of the loop (Image Editor when one is open, else the system player)"""

    bl_idname = "loopscape.play_video"
    bl_label = "Play Backend Video"

    def execute(self, context):
        video = importer.video_path(context.scene)
        if video is None:
            self.report({"ERROR"}, "The result has no video. Run a job or import a result first.")
            return {"CANCELLED"}
        img = bpy.data.images.load(str(video), check_existing=True)
        img.source = "MOVIE"
        shown = False
        if not bpy.app.background and context.screen is not None:
            for area in context.screen.areas:
                if area.type == "IMAGE_EDITOR":
                    space = area.spaces.active
                    space.image = img
                    space.image_user.frame_duration = img.frame_duration
                    space.image_user.use_auto_refresh = True
                    shown = True
        if not shown and not bpy.app.background:
            importer.open_path(video)
        self.report({"INFO"}, f"Video: {video}")
        return {"FINISHED"}


classes = (LOOPSCAPE_OT_import_result, LOOPSCAPE_OT_open_output, LOOPSCAPE_OT_play_video)
