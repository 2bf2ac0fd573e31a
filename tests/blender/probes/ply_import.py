"""Blender's own PLY importer on one of our PLY files: ``python ply_import.py FILE.ply``; prints ``RESULT {json}``.

bpy runs in its own process: it must not share one with torch, and Blender-side code never does.
"""
from __future__ import annotations

import json
import sys

import bpy


def main(path: str) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.ply_import(filepath=path)
    obj = bpy.context.selected_objects[0]
    mesh = obj.data
    att = mesh.attributes.get("opacity")
    vals = [0.0] * len(mesh.vertices)
    if att is not None:
        att.data.foreach_get("value", vals)
    co = [0.0] * (3 * len(mesh.vertices))
    mesh.vertices.foreach_get("co", co)
    print("RESULT" + json.dumps({"n": len(mesh.vertices), "type": obj.type,
                                 "attrs": sorted(a.name for a in mesh.attributes), "opacity": vals[:5], "co": co[:6]}))


if __name__ == "__main__":
    main(sys.argv[1])
