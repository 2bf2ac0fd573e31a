"""Import a compact loop result, render loop frames from the hero camera; save, reload, render again;
then import the same loop as a full one-set PLY sequence (the old way) and render the same frames."""
from __future__ import annotations

import bpy
from kit import Context, cycles_match_setup


def render_frames(scene, frames: list[int], prefix: str) -> None:
    scene.camera = scene.loopscape.hero_camera
    for f in frames:
        scene.frame_set(f)
        scene.render.filepath = f"{prefix}_{f:04d}.png"
        bpy.ops.render.render(write_still=True)


def blend_state(ctx: Context, frames: list[int]) -> dict:
    from importlib import import_module

    loop_layers = import_module(ctx.pkg + ".blender_addon.loop_layers")
    scene = bpy.context.scene  # a reloaded .blend brings a new Scene
    factors = {}
    for f in frames:
        scene.frame_set(f)
        factors[f] = loop_layers.blend_factor(scene)
    objs = [o for o in scene.objects if o.get("loopscape_result")]
    return {"view_layers": [vl.name for vl in scene.view_layers], "factors": factors,
            "objects": sorted((o.name, o.type, [m.type for m in o.modifiers],
                               [c.name for c in o.users_collection]) for o in objs),
            "cache_files": len(bpy.data.cache_files), "collections": sorted(c.name for c in bpy.data.collections),
            "loop_frames": scene.loopscape.frames}


def main(ctx: Context) -> None:
    scene, args, out = ctx.scene, ctx.args, ctx.out
    cycles_match_setup(scene)
    scene.view_settings.look = "None"
    scene.cycles.samples = args.get("samples", 16)
    frames = args["render_frames"]
    out["import"] = ctx.call(bpy.ops.loopscape.import_result, directory=args["result"])
    out["compact"] = blend_state(ctx, list(range(1, args["frames"] + 1)))
    render_frames(scene, frames, args["dir"] + "/compact")
    # What a farm gets: the saved .blend (compositor, keyframes, view layers) and the USD cache.
    bpy.ops.wm.save_as_mainfile(filepath=args["dir"] + "/shot.blend")
    bpy.ops.wm.open_mainfile(filepath=args["dir"] + "/shot.blend")
    scene = bpy.context.scene
    out["reloaded"] = blend_state(ctx, frames)
    render_frames(scene, frames[-1:], args["dir"] + "/reloaded")
    # Each layer alone at mid-loop (the mix factor pinned to 0, then 1): the blend must be their mix.
    tree = scene.compositing_node_group if hasattr(scene, "compositing_node_group") else scene.node_tree
    factor = tree.nodes["Loopscape Mix"].inputs[0]
    tree.animation_data_clear()
    for value in (0, 1):
        factor.default_value = float(value)
        render_frames(scene, frames[-1:], args["dir"] + f"/layer{value}")
    ctx.scene = scene
    out["legacy_import"] = ctx.call(bpy.ops.loopscape.import_result, directory=args["legacy"])
    out["legacy"] = blend_state(ctx, frames)
    render_frames(scene, frames, args["dir"] + "/legacy")
