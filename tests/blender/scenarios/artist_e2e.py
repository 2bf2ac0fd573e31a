"""The artist's path with the real backend: photo, mask, arrow, side preset, Run, then Cycles renders."""
from __future__ import annotations

import json
import time

import bpy
import numpy as np
from kit import Context, cycles_match_setup, evaluated_positions


def main(ctx: Context) -> None:
    scene, args, out, call = ctx.scene, ctx.args, ctx.out, ctx.call
    cycles_match_setup(scene)
    props = scene.loopscape
    out["setup"] = call(bpy.ops.loopscape.setup_photo, filepath=args["photo"])
    out["mask"] = call(bpy.ops.loopscape.mask_import, filepath=args["mask"])
    out["hint"] = call(bpy.ops.loopscape.hint_add, start=(4.0, 40.0), end=(28.0, 40.0), speed=0.6)
    props.frames = args["frames"]
    props.quality = "preview"
    props.device = "cpu"
    props.max_side = 64
    props.extra_json = json.dumps({"png_frames": True, "depth": "prior"})
    out["preset"] = call(bpy.ops.loopscape.camera_preset, preset="side")
    t = time.time()
    out["run"] = call(bpy.ops.loopscape.run)
    out["run_s"] = time.time() - t
    out["last_error"] = props.last_error
    out["log"] = props.log_path
    out["result_dir"] = bpy.path.abspath(props.result_dir)
    obj = props.result_object
    if obj is None:
        return
    out["type"] = obj.type
    out["modifiers"] = [m.type for m in obj.modifiers]
    # The result's clouds: one, or a layered loop's static cloud plus its forward layer (the backward
    # layer holds the same Gaussians advected back from frame N).
    fwd = bpy.data.collections.get("Loopscape Forward")
    clouds = [obj, *(o for o in (fwd.objects if fwd is not None else ()) if o.get("loopscape_result"))]
    for o in clouds:
        o.modifiers["Loopscape Splats"].show_viewport = False
    per_cloud = [[evaluated_positions(scene, o, scene.frame_start + i) for o in clouds] for i in range(args["frames"])]
    out["positions"] = [np.concatenate(f).tolist() for f in per_cloud]
    out["layer_positions"] = [np.concatenate(f[1:]).tolist() for f in per_cloud] if len(clouds) > 1 else None
    for o in clouds:
        o.modifiers["Loopscape Splats"].show_viewport = True
    r = scene.render
    r.film_transparent = True  # alpha tells which pixels see a splat at all
    r.image_settings.color_mode = "RGBA"
    for i in args["render_frames"]:
        scene.frame_set(scene.frame_start + i)
        r.filepath = args["render_dir"] + f"/cycles_{i:04d}.png"
        bpy.ops.render.render(write_still=True)
