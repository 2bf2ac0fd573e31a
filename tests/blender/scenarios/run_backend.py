"""Refusals, labelme import, camera preset, interpreter checks, and runs against the fake backend."""
from __future__ import annotations

import json
import time

import bpy
from kit import Context


def result_state(scene) -> dict:
    objs = sorted(o.name for o in scene.objects if o.get("loopscape_result") or o.get("loopscape_result_parent"))
    return {"objects": objs, "pointclouds": len(bpy.data.pointclouds), "meshes": len(bpy.data.meshes)}


def main(ctx: Context) -> None:
    scene, args, prefs, call = ctx.scene, ctx.args, ctx.prefs, ctx.call
    r = ctx.out
    # Refusals, in the order an artist meets them.
    r["no_photo"] = call(bpy.ops.loopscape.run)
    r["setup"] = call(bpy.ops.loopscape.setup_photo, filepath=args["photo"])
    r["no_mask"] = call(bpy.ops.loopscape.run)
    r["mask_create"] = call(bpy.ops.loopscape.mask_create)
    r["empty_mask"] = call(bpy.ops.loopscape.run)
    r["mask_import"] = call(bpy.ops.loopscape.mask_import, filepath=args["labelme"])
    props = scene.loopscape
    r["hints"] = [[list(h.start), list(h.end)] for h in props.hints]
    r["anchors"] = [list(a.co) for a in props.anchors]
    r["hint_add"] = call(bpy.ops.loopscape.hint_add, start=(10.0, 40.0), end=(20.0, 38.0), speed=0.5)
    r["anchor_add"] = call(bpy.ops.loopscape.anchor_add, co=(50.0, 10.0))
    props.frames = args["frames"]
    props.speed = 1.5
    r["preset"] = call(bpy.ops.loopscape.camera_preset, preset="side")
    hero = props.hero_camera
    hero.location = (1.0, 2.0, 3.0)
    hero.rotation_euler = (1.2, 0.1, -0.4)
    r["preset2"] = call(bpy.ops.loopscape.camera_preset, preset="side")  # re-keyed relative to the moved hero

    # Interpreter problems.
    prefs.backend_python = "/nonexistent/python"
    r["missing_py"] = call(bpy.ops.loopscape.run)
    r["check_missing"] = call(bpy.ops.loopscape.check_backend)
    prefs.backend_python = args["broken_py"]
    r["check_broken"] = call(bpy.ops.loopscape.check_backend)
    r["check_broken_report"] = prefs.check_report
    prefs.backend_python = args["real_py"]
    r["check_real"] = call(bpy.ops.loopscape.check_backend)
    r["check_real_report"] = prefs.check_report

    # A successful fake run imports; then crash / error / cancel must leave that import untouched.
    prefs.backend_python = args["fake_py"]

    def set_mode(mode: str) -> None:
        with open(args["mode_file"], "w") as f:
            f.write(mode)

    set_mode("ok")
    r["ok"] = call(bpy.ops.loopscape.run)
    r["after_ok"] = result_state(scene)
    r["stage_ok"] = props.stage
    with open(args["job_seen"]) as f:
        r["job"] = json.load(f)
    for mode in ("crash", "error"):
        set_mode(mode)
        r[mode] = call(bpy.ops.loopscape.run)
        r["after_" + mode] = result_state(scene)
        r["last_error_" + mode] = props.last_error
    set_mode("hang")
    t = time.time()
    r["hang"] = call(bpy.ops.loopscape.run, timeout=2.0)
    r["hang_s"] = time.time() - t
    r["after_hang"] = result_state(scene)
    r["last_error_hang"] = props.last_error
    r["running_after"] = props.running
    # A deleted hero camera is refused.
    bpy.data.objects.remove(hero, do_unlink=True)
    r["no_hero"] = call(bpy.ops.loopscape.run)
