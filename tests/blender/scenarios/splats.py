"""Import trained-like splats and render them from the hero camera with and without the dilation."""
from __future__ import annotations

import bpy
from kit import Context, cycles_match_setup


def main(ctx: Context) -> None:
    scene, out = ctx.scene, ctx.out
    cycles_match_setup(scene)
    out["import"] = ctx.call(bpy.ops.loopscape.import_result, directory=ctx.args["result"])
    obj = scene.loopscape.result_object
    mod = obj.modifiers["Loopscape Splats"]
    ids = {i.name: i.identifier for i in mod.node_group.interface.items_tree if getattr(i, "in_out", "") == "INPUT"}
    out["focal"] = mod[ids["Hero Focal"]]
    out["dilation"] = mod[ids["Dilation"]]
    out["min_transparent"] = scene.cycles.min_transparent_bounces
    out["max_transparent"] = scene.cycles.transparent_max_bounces
    scene.camera = scene.loopscape.hero_camera
    scene.frame_set(1)
    scene.render.filepath = ctx.args["dir"] + "/dilated.png"
    bpy.ops.render.render(write_still=True)
    mod[ids["Dilation"]] = 0.0
    obj.update_tag()
    scene.render.filepath = ctx.args["dir"] + "/undilated.png"
    bpy.ops.render.render(write_still=True)
