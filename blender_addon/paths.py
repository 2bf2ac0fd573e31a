"""Keep Loopscape's file references relative to the .blend, so a saved file renders on a farm."""
from __future__ import annotations

import os

import bpy
from bpy.app.handlers import persistent


def _relative(path: str, blend_dir: str) -> str:
    if not path or path.startswith("//"):
        return path
    try:
        return "//" + os.path.relpath(bpy.path.abspath(path), blend_dir).replace(os.sep, "/")
    except ValueError:  # another drive (Windows): keep it absolute
        return path


def make_relative(blend_path: str) -> None:
    blend_dir = os.path.dirname(os.path.abspath(blend_path))
    for scene in bpy.data.scenes:
        props = getattr(scene, "loopscape", None)
        if props is None:
            continue
        props.result_dir = _relative(props.result_dir, blend_dir)
        for image in (props.photo,):
            if image is not None and image.source == "FILE" and image.packed_file is None:
                image.filepath = _relative(image.filepath, blend_dir)
    for obj in bpy.data.objects:
        if obj.get("loopscape_result"):
            obj["loopscape_result_dir"] = _relative(obj["loopscape_result_dir"], blend_dir)
            for mod in obj.modifiers:
                if mod.type == "MESH_SEQUENCE_CACHE" and mod.cache_file is not None:
                    mod.cache_file.filepath = _relative(mod.cache_file.filepath, blend_dir)


@persistent
def _on_save_pre(*args) -> None:
    target = args[0] if args and isinstance(args[0], str) and args[0] else bpy.data.filepath
    if target:
        make_relative(target)


def register() -> None:
    if _on_save_pre not in bpy.app.handlers.save_pre:
        bpy.app.handlers.save_pre.append(_on_save_pre)


def unregister() -> None:
    if _on_save_pre in bpy.app.handlers.save_pre:
        bpy.app.handlers.save_pre.remove(_on_save_pre)
