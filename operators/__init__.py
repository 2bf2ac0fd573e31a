"""Operators under bpy.ops.loopscape.*"""
from . import camera_path, motion, photo, result, run

classes = (*photo.classes, *motion.classes, *camera_path.classes, *run.classes, *result.classes)


def unregister_hook() -> None:
    run.shutdown()
