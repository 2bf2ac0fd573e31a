"""Import a result twice (replaces), render from the hero and along the side path, save, re-import placed."""
from __future__ import annotations

import math
import time

import bpy
from kit import Context, cycles_match_setup, evaluated_positions, splat_count
from mathutils import Matrix


def render(scene, path: str, camera) -> None:
    scene.camera = camera
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)


def main(ctx: Context) -> None:
    scene, args, out, call = ctx.scene, ctx.args, ctx.out, ctx.call
    cycles_match_setup(scene)
    scene.view_settings.look = "None"

    out["bad_folder"] = call(bpy.ops.loopscape.import_result, directory=args["bad_dir"])
    out["setup"] = call(bpy.ops.loopscape.setup_photo, filepath=args["photo"])
    hero = scene.loopscape.hero_camera
    hero.location = (3.0, -2.0, 1.5)
    hero.rotation_euler = (math.radians(80), math.radians(5), math.radians(30))
    scene.loopscape.frames = args["frames"]
    t = time.time()
    out["import1"] = call(bpy.ops.loopscape.import_result, directory=args["result"])
    out["import2"] = call(bpy.ops.loopscape.import_result, directory=args["result"])  # replaces, no stacking
    out["import_s"] = time.time() - t
    objs = [o for o in scene.objects if o.get("loopscape_result")]
    parents = [o for o in scene.objects if o.get("loopscape_result_parent")]
    out["n_results"], out["n_parents"] = len(objs), len(parents)
    obj = objs[0]
    out["type"] = obj.type
    out["modifiers"] = [m.name for m in obj.modifiers]
    want = hero.matrix_world @ Matrix.Diagonal((1, -1, -1, 1))
    out["parent_err"] = max(abs(parents[0].matrix_world[i][j] - want[i][j]) for i in range(4) for j in range(4))
    out["parent_is_parent"] = obj.parent == parents[0]
    splats = obj.modifiers["Loopscape Splats"]
    splats.show_viewport = False
    out["positions"] = [evaluated_positions(scene, obj, scene.frame_start + i).tolist() for i in range(args["frames"])]
    splats.show_viewport = True
    scene.frame_set(1)
    out["instances"] = splat_count(obj)
    t = time.time()
    render(scene, args["render_hero"], hero)
    out["render_s"] = time.time() - t
    out["preset"] = call(bpy.ops.loopscape.camera_preset, preset="side")
    scene.frame_set(scene.frame_start + args["frames"] - 1)
    render(scene, args["render_side"], scene.camera)
    out["shot"] = scene.camera.name
    # A saved .blend stores the result's paths relative to it.
    bpy.ops.wm.save_as_mainfile(filepath=args["blend"])
    out["result_dir_prop"] = scene.loopscape.result_dir
    caches = [m.cache_file.filepath for m in obj.modifiers if m.type == "MESH_SEQUENCE_CACHE"]
    out["cache_path"] = caches[0] if caches else None
    # The artist places the scene; a re-import keeps that placement and still replaces the object.
    p = [o for o in scene.objects if o.get("loopscape_result_parent")][0]
    p.location.x += 1.0
    p.scale = (2.0, 2.0, 2.0)
    bpy.context.view_layer.update()
    placed = [list(r) for r in p.matrix_world]
    out["import3"] = call(bpy.ops.loopscape.import_result, directory=args["result"])
    p = [o for o in scene.objects if o.get("loopscape_result_parent")]
    out["placement_kept"] = len(p) == 1 and all(abs(a - b) < 1e-5 for ra, rb in zip(placed, p[0].matrix_world)
                                                for a, b in zip(ra, rb))
    out["n_results3"] = len([o for o in scene.objects if o.get("loopscape_result")])
