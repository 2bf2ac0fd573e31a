"""What the viewport shows: Solid mode by attribute shows the splats' colours; frame time of playback.

``look``: import a result, check the viewport mesh (one quad per splat, active colour attribute =
the splat colour, linear), then render that same viewport geometry with Workbench as Solid mode
draws it (Blender's viewport depsgraph is not reachable from a background process, so the splat
group's Is Viewport switch is pinned to True for the Workbench renders).
``bench``: import a large USD result and time viewport-depsgraph evaluation of each frame.
"""
from __future__ import annotations

import time

import bpy
import numpy as np
from kit import Context, modifier_input, splat_count


def viewport_mesh(obj):
    dg = bpy.context.evaluated_depsgraph_get()
    for inst in dg.object_instances:
        if inst.is_instance and inst.parent and inst.parent.original == obj and isinstance(inst.object.data, bpy.types.Mesh):
            return inst.object.data
    data = obj.evaluated_get(dg).data
    return data if isinstance(data, bpy.types.Mesh) else None


def pin_viewport_branch(group) -> None:
    for node in list(group.nodes):
        if node.bl_idname == "GeometryNodeIsViewport":
            for link in list(node.outputs[0].links):
                link.to_socket.default_value = True
            group.nodes.remove(node)


def render(scene, path: str) -> float:
    scene.render.filepath = path
    t = time.time()
    bpy.ops.render.render(write_still=True)
    return time.time() - t


def look(ctx: Context) -> None:
    scene, args, out = ctx.scene, ctx.args, ctx.out
    out["import"] = ctx.call(bpy.ops.loopscape.import_result, directory=args["result"])
    obj = scene.loopscape.result_object
    scene.frame_set(1)
    mesh = viewport_mesh(obj)
    out["color_type"] = scene.display.shading.color_type
    out["quads"] = len(mesh.polygons)
    out["active_color"] = mesh.color_attributes.active_color_name
    n = len(mesh.vertices)
    col = np.empty(n * 4, np.float32)
    mesh.attributes[out["active_color"]].data.foreach_get("color", col)
    src = np.empty(n * 4, np.float32)
    mesh.attributes["displayColor"].data.foreach_get("color", src)
    want = np.maximum((src.reshape(-1, 4)[:, :3] + 0.055) / 1.055, 0) ** 2.4
    out["color_err"] = float(np.abs(col.reshape(-1, 4)[:, :3] - want).max())
    mod = obj.modifiers["Loopscape Splats"]
    modifier_input(mod, "Viewport Preview", False)  # the exact splats in the viewport too
    dg = bpy.context.evaluated_depsgraph_get()
    out["exact_instances"] = sum(1 for i in dg.object_instances if i.is_instance and i.parent and i.parent.original == obj)
    out["exact_quads"] = splat_count(obj)
    modifier_input(mod, "Viewport Preview", True)

    scene.camera = scene.loopscape.hero_camera
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.view_settings.view_transform = "Standard"
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    pin_viewport_branch(obj.modifiers["Loopscape Splats"].node_group)
    shading = scene.display.shading
    for light in ("FLAT", "STUDIO"):
        shading.light = light
        render(scene, f"{args['dir']}/solid_{light.lower()}.png")
    shading.light = "FLAT"
    shading.color_type = "MATERIAL"  # what Solid mode showed before: the material's flat colour
    render(scene, f"{args['dir']}/solid_material.png")


def frame_times(scene, frames=(1, 2, 3, 4, 1, 2)) -> list[float]:
    """Seconds per frame change; bpy's depsgraph is a viewport one (Is Viewport is True, as in playback)."""
    times = []
    for f in frames:
        t = time.time()
        scene.frame_set(f)
        times.append(time.time() - t)
    return times


def bench(ctx: Context) -> None:
    scene, args, out = ctx.scene, ctx.args, ctx.out
    t = time.time()
    out["import"] = ctx.call(bpy.ops.loopscape.import_result, directory=args["result"])
    out["import_s"] = time.time() - t
    obj = scene.loopscape.result_object
    out["frame_s"] = frame_times(scene)
    out["quads"] = len(viewport_mesh(obj).polygons)
    mod = obj.modifiers["Loopscape Splats"]
    modifier_input(mod, "Viewport Splats", 10**9)  # every splat in the preview
    out["frame_s_all"] = frame_times(scene)
    out["quads_all"] = len(viewport_mesh(obj).polygons)
    mod.show_viewport = False  # the point stream alone (USD read)
    out["frame_s_cache"] = frame_times(scene)
    mod.show_viewport = True
    # The same frames with the render-side evaluation the viewport used before (instances, no realise).
    group = obj.modifiers["Loopscape Splats"].node_group
    for node in list(group.nodes):
        if node.bl_idname == "GeometryNodeIsViewport":
            for link in list(node.outputs[0].links):
                link.to_socket.default_value = False
            group.nodes.remove(node)
    out["frame_s_instances"] = frame_times(scene)


def main(ctx: Context) -> None:
    (bench if ctx.args.get("mode") == "bench" else look)(ctx)
