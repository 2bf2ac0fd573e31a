"""Import trained-like splats and render them from the hero camera with and without the dilation."""
from __future__ import annotations

import bpy
from kit import Context, cycles_match_setup, modifier_input


def main(ctx: Context) -> None:
    scene, out = ctx.scene, ctx.out
    cycles_match_setup(scene)
    out["import"] = ctx.call(bpy.ops.loopscape.import_result, directory=ctx.args["result"])
    obj = scene.loopscape.result_object
    mod = obj.modifiers["Loopscape Splats"]
    out["focal"] = modifier_input(mod, "Hero Focal")
    out["dilation"] = modifier_input(mod, "Dilation")
    out["min_transparent"] = scene.cycles.min_transparent_bounces
    out["max_transparent"] = scene.cycles.transparent_max_bounces
    scene.camera = scene.loopscape.hero_camera
    scene.frame_set(1)
    scene.render.filepath = ctx.args["dir"] + "/dilated.png"
    bpy.ops.render.render(write_still=True)
    modifier_input(mod, "Dilation", 0.0)
    obj.update_tag()
    scene.render.filepath = ctx.args["dir"] + "/undilated.png"
    bpy.ops.render.render(write_still=True)
