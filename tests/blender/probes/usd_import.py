"""Blender's own USD importer on our point stream: ``python usd_import.py FILE.usdc``; prints ``RESULT {json}``
with every point cloud's attributes at every frame."""
from __future__ import annotations

import json
import sys

import bpy
import numpy as np

ATTRS = (("position", "vector", 3), ("opacity", "value", 1), ("radius", "value", 1), ("orient", "value", 4),
         ("scales", "vector", 3))


def main(path: str) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.usd_import(filepath=path)
    sc = bpy.context.scene
    out: dict = {"frame_range": [sc.frame_start, sc.frame_end], "objects": [], "frames": {}}
    for ob in bpy.data.objects:
        out["objects"].append({"name": ob.name, "type": ob.type, "modifiers": [m.type for m in ob.modifiers],
                               "matrix": [list(r) for r in ob.matrix_world]})
        if ob.type != "POINTCLOUD":
            continue
        for f in range(sc.frame_start, sc.frame_end + 1):
            sc.frame_set(f)
            pc = ob.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
            n = len(pc.points)
            rec = {"attrs": {a.name: [a.data_type, a.domain] for a in pc.attributes}}
            for name, key, width in ATTRS:
                buf = np.zeros(n * width, np.float32)
                pc.attributes[name].data.foreach_get(key, buf)
                rec[name] = buf.reshape(n, width).tolist()
            out["frames"][f] = rec
    print("RESULT" + json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
