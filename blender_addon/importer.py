"""Import a backend result folder as one animated point cloud with splat rendering.

Preferred: the USD point stream (a MeshSequenceCache that streams frames from disk, path stored
relative to the .blend). Fallback: the PLY frames packed into the .blend as one point cloud with a
per-point frame index; points identical in every frame are stored once. Blender 4.2 cannot build a
point cloud from Python, so there the PLY fallback is a mesh of loose vertices (same attributes).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from ..contract import LoopscapeError
from ..contract.protocol import KEY_CAMERA, KEY_FPS, KEY_FRAMES, RESULT_NAME
from . import camera_math, loop_layers, ply_read, result_io, splat_nodes
from .job_writer import PARENT_TAG, hero_matrix

RESULT_TAG = "loopscape_result"


@dataclass
class ImportReport:
    obj: object
    parent: object
    source: str  # "usd" or "ply"
    frames: int
    points: int


def load_result(directory: str | Path) -> dict:
    """result.json of a result folder (a path relative to the .blend is resolved)."""
    return result_io.load_result(bpy.path.abspath(str(directory)))


def remove_previous(scene) -> int:
    """Delete earlier imported results (parent, children and their data)."""
    doomed = [o for o in scene.objects if o.get(PARENT_TAG) or o.get(RESULT_TAG)]
    removed = 0
    for obj in doomed:
        data, cache = obj.data, None
        for mod in getattr(obj, "modifiers", []):
            if mod.type == "MESH_SEQUENCE_CACHE" and mod.cache_file is not None:
                cache = mod.cache_file
        bpy.data.objects.remove(obj, do_unlink=True)
        removed += 1
        if data is not None and data.users == 0:
            for coll in (bpy.data.pointclouds, bpy.data.meshes):
                if data.name in coll and coll[data.name] == data:
                    coll.remove(data)
                    break
        if cache is not None and cache.users == 0:
            bpy.data.batch_remove([cache])  # cache_files has no remove()
    loop_layers.remove(scene)  # the loop blend's view layer, collections and compositor
    return removed


def ensure_hero(scene, res: dict):
    """The scene's hero camera, or a new one built from result.json's camera."""
    props = scene.loopscape
    hero = props.hero_camera
    if hero is not None and hero.name in scene.objects:
        return hero
    cam = res.get(KEY_CAMERA) or {}
    K, W, H = cam.get("K"), int(cam.get("width", 0) or 0), int(cam.get("height", 0) or 0)
    if not K or W <= 0 or H <= 0:
        raise LoopscapeError(f"{RESULT_NAME} has no camera (K, width, height), and the scene has no hero camera.",
                             "Set up the photo first (Loopscape > Photo).")
    data = bpy.data.cameras.new("Loopscape Hero")
    camera_math.set_lens_from_K(data, K, W, H)
    hero = bpy.data.objects.new("Loopscape Hero", data)
    scene.collection.objects.link(hero)
    # Level camera looking along +Y (Blender's "front"), 1 unit above the ground.
    hero.rotation_euler = (math.pi / 2, 0.0, 0.0)
    hero.location = (0.0, 0.0, 1.0)
    scene.render.resolution_x, scene.render.resolution_y = W, H
    scene.render.resolution_percentage = 100
    props.hero_camera = hero
    if scene.camera is None:
        scene.camera = hero
    return hero


def _rel(path: str) -> str:
    if bpy.data.filepath:
        try:
            return bpy.path.relpath(path)
        except ValueError:  # another drive on Windows
            return path
    return path


def _import_usd(context, path: Path, res: dict):
    before = set(bpy.data.objects)
    ret = bpy.ops.wm.usd_import(filepath=str(path), relative_path=bool(bpy.data.filepath), set_frame_range=False,
                                import_cameras=False, import_lights=False, import_materials=False,
                                import_points=True, import_meshes=False, create_collection=False)
    if "FINISHED" not in ret:
        raise LoopscapeError(f"Blender could not import {path}.", "Run the job again, or import the PLY frames.")
    new = [o for o in bpy.data.objects if o not in before]
    clouds = [o for o in new if o.type == "POINTCLOUD"]
    for o in new:
        if o not in clouds[:1]:
            bpy.data.objects.remove(o, do_unlink=True)
    if not clouds:
        raise LoopscapeError(f"{path} holds no point stream (UsdGeomPoints).", result_io.RERUN)
    obj = clouds[0]
    for mod in obj.modifiers:
        if mod.type == "MESH_SEQUENCE_CACHE" and mod.cache_file is not None:
            cf = mod.cache_file
            cf.filepath = _rel(str(path))
            # USD time code t is shown at scene frame t + offset: put code start at frame_start.
            cf.frame_offset = context.scene.frame_start - result_io.usd_start(path, res)
    return obj


def _import_ply(context, paths: list[Path]):
    frames = []
    for p in paths:
        try:
            frames.append(ply_read.read_gaussians(p))
        except LoopscapeError as exc:
            raise LoopscapeError(f"Could not read PLY frame {p}: {exc.message}", exc.hint) from exc
    return build_cloud(context, ply_read.pack_frames(frames))


def build_cloud(context, cat: dict) -> tuple[object, int]:
    """A point cloud (a mesh of loose vertices on 4.2) from packed attributes (``ply_read.pack_frames``)."""
    n = len(cat["position"])

    mesh = bpy.data.meshes.new("Loopscape Splats")
    mesh.vertices.add(n)
    mesh.vertices.foreach_set("co", cat["position"].astype(np.float32).ravel())
    for name, kind, key, value in (("displayColor", "FLOAT_COLOR", "color", "color"),
                                   ("opacity", "FLOAT", "opacity", "value"),
                                   ("scales", "FLOAT_VECTOR", "scales", "vector"),
                                   ("orientations", "QUATERNION", "orientations", "value"),
                                   (splat_nodes.FRAME_ATTR, "INT", "frame", "value")):
        arr = cat[key]
        if key == "color":
            arr = np.concatenate([arr, np.ones((n, 1), np.float32)], 1)
        attr = mesh.attributes.new(name, kind, "POINT")
        attr.data.foreach_set(value, arr.astype(np.int32 if kind == "INT" else np.float32).ravel())
    obj = bpy.data.objects.new("Loopscape Splats", mesh)
    context.scene.collection.objects.link(obj)
    if can_make_pointcloud():
        _convert_to_pointcloud(context, obj)
        if mesh.users == 0:  # the conversion leaves the source mesh behind; free its memory now
            bpy.data.meshes.remove(mesh)
    # else (Blender 4.2): a mesh of loose vertices; the node groups treat its vertices as the points.
    return obj, n


def can_make_pointcloud() -> bool:
    """Whether Python can build a point cloud (Convert to Point Cloud exists from Blender 4.3 on)."""
    prop = bpy.ops.object.convert.get_rna_type().properties["target"]
    return "POINTCLOUD" in {item.identifier for item in prop.enum_items}


def _convert_to_pointcloud(context, obj) -> None:
    view_layer = context.view_layer
    keep_active = view_layer.objects.active
    keep_sel = [o for o in view_layer.objects if o.select_get()]
    for o in keep_sel:
        o.select_set(False)
    view_layer.objects.active = obj
    obj.select_set(True)
    try:
        with context.temp_override(active_object=obj, selected_objects=[obj], selected_editable_objects=[obj],
                                   object=obj):
            bpy.ops.object.convert(target="POINTCLOUD")
    finally:
        obj.select_set(False)
        for o in keep_sel:
            if o.name in view_layer.objects:
                o.select_set(True)
        if keep_active is not None and keep_active.name in view_layer.objects:
            view_layer.objects.active = keep_active


def _attribute_names(context, obj) -> set[str]:
    dg = context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(dg)
    data = ev.data
    return {a.name for a in data.attributes} if hasattr(data, "attributes") else set()


def import_result(context, directory: str | Path, source: str = "auto", size: float = 1.0) -> ImportReport:
    """Replace any earlier result with the one in ``directory``; returns what was built."""
    scene = context.scene
    res = load_result(directory)
    d = Path(res["_dir"])
    usd, plys = result_io.usd_path(res), result_io.ply_paths(res)
    missing = [p for p in plys if not p.is_file()]
    use_usd = usd is not None and usd.is_file() and source in ("auto", "usd")
    # Compact loop layout: static + forward + backward clouds, blended like the backend (loop_layers).
    layered = result_io.is_layered(res)
    if not use_usd and not layered and (not plys or missing):
        what = missing[0] if missing else "any PLY frame"
        raise LoopscapeError(f"The result in {d} is incomplete: {what} is missing.", result_io.RERUN)
    n_frames = int(res.get(KEY_FRAMES) or len(plys) or 1)

    hero = ensure_hero(scene, res)
    # Re-import keeps where the artist placed (moved/scaled) the previous result.
    context.view_layer.update()  # matrix_world is stale right after the artist edits location/scale
    old_parent = next((o for o in scene.objects if o.get(PARENT_TAG)), None)
    placement = old_parent.matrix_world.copy() if old_parent is not None else None
    remove_previous(scene)
    obj, layers = None, None
    try:
        if layered:
            layers, points = ((loop_layers.import_usd(context, usd, res, _rel), -1) if use_usd
                              else loop_layers.import_ply(context, res, build_cloud))
            obj = layers.static
        elif use_usd:
            obj = _import_usd(context, usd, res)
            points = -1
        else:
            obj, points = _import_ply(context, plys)
        obj.name = "Loopscape Splats"
        obj[RESULT_TAG] = True
        obj["loopscape_result_dir"] = _rel(str(d))
        parent = bpy.data.objects.new("Loopscape Result", None)
        parent.empty_display_type = "ARROWS"
        parent[PARENT_TAG] = True
        scene.collection.objects.link(parent)
        s = scene.loopscape.scene_scale
        parent.matrix_world = placement if placement is not None else Matrix(
            camera_math.scene_matrix_from_hero(hero_matrix(scene, hero), s).tolist())
        obj.parent = parent
        obj.matrix_parent_inverse = Matrix.Identity(4)
        obj.matrix_basis = Matrix.Identity(4)  # the USD importer's up-axis/unit fix does not apply here

        names = splat_nodes.pick_names(_attribute_names(context, obj))
        mat = splat_nodes.build_material(names)
        if not use_usd:
            frame_mod = obj.modifiers.new("Loopscape Frame", "NODES")
            frame_mod.node_group = splat_nodes.build_frame_group()
            _set_input(frame_mod, "Start Frame", scene.frame_start)
            _set_input(frame_mod, "Frame Count", n_frames)
        splat_mod = obj.modifiers.new("Loopscape Splats", "NODES")
        splat_mod.node_group = splat_nodes.build_splat_group(names, mat)
        _set_input(splat_mod, "Size", size)
        _set_input(splat_mod, "Hero Focal", _hero_focal(scene, hero, res))
        obj.data.materials.clear()
        obj.data.materials.append(mat)
        if layers is not None:  # dress the two moving layers like obj; view layers + compositor blend
            warning = loop_layers.attach(context, layers, parent, n_frames)
            if warning:
                print(f"Loopscape: {warning}")
    except Exception:
        # Never leave a half-built result behind.
        mine = (obj, *(layers.moving if layers is not None else ()))
        for o in (*mine, bpy.data.objects.get("Loopscape Result")):
            if o is not None and o.name in bpy.data.objects and (o.get(RESULT_TAG) or o.get(PARENT_TAG) or o in mine):
                bpy.data.objects.remove(o, do_unlink=True)
        raise

    fps = res.get(KEY_FPS)
    if fps:
        scene.render.fps = int(round(float(fps)))
        scene.render.fps_base = scene.render.fps / float(fps)
    scene.frame_end = scene.frame_start + n_frames - 1
    if hasattr(scene, "cycles"):
        # Splats stack many transparent layers; Cycles' default of 8 would show holes. Russian
        # roulette past min_transparent_bounces ends paths at random behind faint splats: that is
        # heavy noise (a 1-sample render is ~16 dB from the backend's), so keep every layer.
        cyc = scene.cycles
        cyc.transparent_max_bounces = max(cyc.transparent_max_bounces, 128)
        cyc.min_transparent_bounces = max(cyc.min_transparent_bounces, cyc.transparent_max_bounces)
    props = scene.loopscape
    props.result_dir = _rel(str(d))
    props.result_object = obj
    return ImportReport(obj, parent, "usd" if use_usd else "ply", n_frames, points)


def _hero_focal(scene, hero, res: dict) -> float:
    """Focal length in pixels of the camera the backend trained with (its dilation is in those pixels)."""
    K = (res.get(KEY_CAMERA) or {}).get("K")
    if K:
        return float(K[0][0])
    r = scene.render
    w, h = r.resolution_x * r.resolution_percentage / 100.0, r.resolution_y * r.resolution_percentage / 100.0
    return float(camera_math.intrinsics(hero.data, w, h, r.pixel_aspect_x, r.pixel_aspect_y)[0][0])


def _set_input(mod, name: str, value) -> None:
    for item in mod.node_group.interface.items_tree:
        if getattr(item, "in_out", None) == "INPUT" and item.name == name:
            mod[item.identifier] = value
            return
    raise KeyError(name)


def result_paths(scene) -> tuple[Path | None, dict | None]:
    """The current result folder and its result.json (None when there is none)."""
    rd = scene.loopscape.result_dir
    if not rd:
        return None, None
    d = Path(bpy.path.abspath(rd))
    try:
        return d, load_result(d)
    except LoopscapeError:
        return d, None


def video_path(scene) -> Path | None:
    _d, res = result_paths(scene)
    return result_io.video_path(res) if res else None


def open_path(path: Path) -> None:
    import subprocess
    import sys
    if sys.platform == "win32":
        os.startfile(str(path))  # noqa: S606 - opening a user's own folder/video
    else:
        subprocess.Popen(["open" if sys.platform == "darwin" else "xdg-open", str(path)])
