"""What every Blender scenario gets (imported inside the scenario's Blender process, after bpy)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import bpy
import numpy as np

PKG = "bl_ext.user_default.loopscape"  # the extension's package once installed into user_default


@dataclass
class Context:
    """A scenario's inputs (``args``), its results (``out``, printed as JSON) and the installed add-on."""

    args: dict[str, Any]
    out: dict[str, Any]
    scene: Any
    prefs: Any
    pkg: str = PKG

    @staticmethod
    def call(op: Callable[..., set[str]], **kw: Any) -> str:
        """Run an operator; return "FINISHED"/"CANCELLED" or "ERROR: " and the error it reported."""
        try:
            return sorted(op(**kw))[0]
        except RuntimeError as exc:
            return "ERROR: " + str(exc)


def cycles_match_setup(scene) -> None:
    """Renders compared with the backend: Cycles on the CPU, 16 samples, a 1-px box filter (the
    narrowest: each pixel averages its own area, where the backend samples its centre), the
    Standard view transform and a black world."""
    r = scene.render
    r.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    scene.cycles.use_denoising = False
    scene.cycles.pixel_filter_type = "BOX"
    scene.cycles.filter_width = 1.0
    scene.view_settings.view_transform = "Standard"
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGB"
    world = bpy.data.worlds.new("black")
    world.color = (0, 0, 0)  # Blender 4.2: a new world has no node tree
    scene.world = world
    if world.node_tree is not None:
        for node in world.node_tree.nodes:
            if node.type == "BACKGROUND":
                node.inputs["Color"].default_value = (0, 0, 0, 1)
    scene.frame_start = 1


def evaluated_positions(scene, obj, frame: int) -> np.ndarray:
    """Point positions (N, 3) of ``obj`` as evaluated at ``frame`` (its modifiers applied)."""
    scene.frame_set(frame)
    data = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
    n = len(data.points) if obj.type == "POINTCLOUD" else len(data.vertices)  # 4.2 PLY import: a mesh
    pos = np.empty(n * 3, np.float32)
    data.attributes["position"].data.foreach_get("vector", pos)
    return pos.reshape(-1, 3)


def splat_count(obj) -> int:
    """Splats (quads) the result object draws now, wherever they sit: the viewport depsgraph (bpy's)
    realises one quad per splat into a mesh, a render depsgraph keeps one quad instance per splat."""
    dg = bpy.context.evaluated_depsgraph_get()
    own = obj.evaluated_get(dg).data
    total = len(own.polygons) if isinstance(own, bpy.types.Mesh) else 0
    for inst in dg.object_instances:
        if inst.is_instance and inst.parent and inst.parent.original == obj:
            data = inst.object.data
            total += len(data.polygons) if isinstance(data, bpy.types.Mesh) else 0
    return total


def modifier_input(mod, name: str, value=None):
    """Read (or set, when value is given) a Geometry Nodes modifier input through the add-on's helper."""
    import sys

    compat = sys.modules[PKG + ".blender_addon.compat"]
    if value is not None:
        compat.set_modifier_input(mod, name, value)
    return compat.get_modifier_input(mod, name)
