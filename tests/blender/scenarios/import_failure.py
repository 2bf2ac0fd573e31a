"""Failed imports leave the scene exactly as it was and report one readable line (issue 13).

Three failures, each checked against a snapshot of the whole scene taken just before it:
- ``fresh``: a result whose USD is corrupt, into a scene with no hero camera and no result yet
  (the import would create the hero camera, a material, node groups and a CacheFile);
- ``replace``: the same corrupt result over a good earlier import, which must survive intact;
- ``late``: a failure after every datablock is built (Blender 5.2's TypeError from an ID-property
  write, injected into the splat-group builder), over the good import.
Also one unexpected error inside another operator (Open Output Folder): one line, no traceback.
"""
from __future__ import annotations

import sys

import bpy
from kit import Context

_ID_KINDS = ("objects", "meshes", "pointclouds", "materials", "node_groups", "cache_files", "cameras",
             "collections", "images", "actions")


def snapshot(scene) -> dict:
    r = scene.render
    props = scene.loopscape
    shot = {kind: sorted(b.name for b in getattr(bpy.data, kind)) for kind in _ID_KINDS}
    shot["settings"] = [scene.frame_start, scene.frame_end, r.fps, r.fps_base, r.resolution_x, r.resolution_y,
                        r.resolution_percentage, scene.camera.name if scene.camera else None,
                        props.hero_camera.name if props.hero_camera else None,
                        props.result_object.name if props.result_object else None, props.result_dir,
                        scene.cycles.transparent_max_bounces, scene.cycles.min_transparent_bounces,
                        scene.display.shading.color_type, props.frames]
    shot["objects"] = {o.name: [o.type, o.parent.name if o.parent else None, o.data.name if o.data else None,
                                [(m.name, m.node_group.name if m.type == "NODES" and m.node_group else None)
                                 for m in o.modifiers],
                                [round(v, 6) for row in o.matrix_world for v in row], o.select_get()]
                       for o in scene.objects}
    shot["active"] = bpy.context.view_layer.objects.active.name if bpy.context.view_layer.objects.active else None
    return shot


def diff(a: dict, b: dict) -> list[str]:
    return [f"{k}: {a[k]} -> {b.get(k)}" for k in a if a[k] != b.get(k)]


def attempt(ctx: Context, label: str, directory: str) -> None:
    scene = ctx.scene
    before = snapshot(scene)
    ctx.out[label] = ctx.call(bpy.ops.loopscape.import_result, directory=directory)
    ctx.out[label + "_diff"] = diff(before, snapshot(scene))


def main(ctx: Context) -> None:
    scene, args, out = ctx.scene, ctx.args, ctx.out
    scene.frame_start, scene.frame_end = 1, 77
    scene.render.resolution_x, scene.render.resolution_y = 320, 200
    keep = bpy.data.objects.new("Artist Empty", None)
    scene.collection.objects.link(keep)
    bpy.context.view_layer.objects.active = keep
    keep.select_set(True)

    attempt(ctx, "fresh", args["corrupt"])
    out["good"] = ctx.call(bpy.ops.loopscape.import_result, directory=args["good"])
    out["good_points"] = len(scene.loopscape.result_object.modifiers)
    attempt(ctx, "replace", args["corrupt"])

    splat_nodes = sys.modules[ctx.pkg + ".blender_addon.splat_nodes"]
    real = splat_nodes.build_splat_group

    def broken(*a, **kw):
        real(*a, **kw)  # build it all, then fail as 5.2 did on an ID-property write
        raise TypeError("bpy_struct[key] = val: id properties not supported for this type")

    splat_nodes.build_splat_group = broken
    try:
        attempt(ctx, "late", args["good"])
    finally:
        splat_nodes.build_splat_group = real
    out["again"] = ctx.call(bpy.ops.loopscape.import_result, directory=args["good"])

    importer = sys.modules[ctx.pkg + ".blender_addon.importer"]
    real_paths = importer.result_paths
    importer.result_paths = lambda _scene: {}["no such key"]
    try:
        out["open_output"] = ctx.call(bpy.ops.loopscape.open_output)
    finally:
        importer.result_paths = real_paths
