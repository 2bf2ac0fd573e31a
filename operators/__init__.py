"""Operators under bpy.ops.loopscape.*; each reports any failure as one readable line (op_guard)."""
from ..blender_addon.op_guard import guard
from . import camera_path, motion, photo, result, run

classes = tuple(guard(cls) for cls in (*photo.classes, *motion.classes, *camera_path.classes, *run.classes,
                                       *result.classes))


def unregister_hook() -> None:
    run.shutdown()
