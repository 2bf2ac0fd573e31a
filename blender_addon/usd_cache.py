"""Bringing a result's USD point stream into Blender: one import call and the cache rules both
the one-cloud and the layered import follow."""
from __future__ import annotations

from pathlib import Path

import bpy

from ..contract import LoopscapeError
from . import compat


def readable(exc: BaseException) -> str:
    """One line for an unexpected exception: its type and the first line of its message."""
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def import_objects(path: Path) -> list:
    """Run Blender's USD importer on ``path`` (points only); returns the objects it created."""
    before = {o.as_pointer() for o in bpy.data.objects}
    try:
        ret = bpy.ops.wm.usd_import(filepath=str(path), relative_path=bool(bpy.data.filepath), set_frame_range=False,
                                    import_cameras=False, import_lights=False, import_materials=False,
                                    import_points=True, import_meshes=False, create_collection=False)
    except RuntimeError as exc:  # a corrupt or truncated file: the operator raises with Blender's report
        said = readable(exc).removeprefix("RuntimeError: ").removeprefix("Error: ")
        detail = f" ({said})" if said and str(path) not in said else ""
        raise LoopscapeError(f"Blender could not read the USD file {path}: it is damaged or not USD{detail}.",
                             "Run the job again, or import the PLY frames (Source: PLY).") from exc
    if "FINISHED" not in ret:
        raise LoopscapeError(f"Blender could not import {path}.", "Run the job again, or import the PLY frames.")
    return [o for o in bpy.data.objects if o.as_pointer() not in before]


def drop_baked_points(obj, name: str) -> None:
    """Replace the points the USD importer baked into ``obj`` with none: with them, a shot whose cache
    is missing (a farm without the result folder) would render that first frame, frozen; without
    them the splat group shows its 'missing cache' card instead."""
    baked = obj.data
    empty = compat.new_empty_pointcloud(name)
    if empty is not None:
        obj.data = empty
        if baked.users == 0:
            bpy.data.batch_remove([baked])
