"""Import a backend result folder as one animated point cloud with splat rendering.

Preferred: the USD point stream (a MeshSequenceCache that streams frames from disk, path stored
relative to the .blend). Fallback: the PLY frames packed into the .blend as one point cloud with a
per-point frame index; points identical in every frame are stored once. Blender 4.2 cannot build a
point cloud from Python, so there the PLY fallback is a mesh of loose vertices (same attributes).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from . import camera_math, ply_read, splat_nodes
from .job_writer import PARENT_TAG, hero_matrix

RESULT_TAG = "loopscape_result"


class ResultError(Exception):
    """The folder is not a usable backend result; the message says what to do."""


@dataclass
class ImportReport:
    obj: object
    parent: object
    source: str  # "usd" or "ply"
    frames: int
    points: int


def load_result(directory: str | Path) -> dict:
    d = Path(bpy.path.abspath(str(directory)))
    path = d / "result.json"
    if not d.is_dir():
        raise ResultError(f"'{d}' is not a folder. Choose the backend's output folder (it holds result.json).")
    if not path.is_file():
        raise ResultError(f"'{d}' is not a Loopscape result: it has no result.json. Choose the folder "
                          "you passed to the backend as --out.")
    try:
        res = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultError(f"{path} is unreadable ({exc}). Run the job again.") from exc
    if not isinstance(res, dict) or not (res.get("ply_frames") or res.get("usd")):
        raise ResultError(f"{path} lists neither PLY frames nor a USD file. Run the job again.")
    res["_dir"] = str(d)
    return res


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
    return removed


def ensure_hero(scene, res: dict):
    """The scene's hero camera, or a new one built from result.json's camera."""
    props = scene.loopscape
    hero = props.hero_camera
    if hero is not None and hero.name in scene.objects:
        return hero
    cam = res.get("camera") or {}
    K, W, H = cam.get("K"), int(cam.get("width", 0) or 0), int(cam.get("height", 0) or 0)
    if not K or W <= 0 or H <= 0:
        raise ResultError("result.json has no camera (K, width, height), and the scene has no hero camera. "
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


def _usd_start(path: Path, res: dict) -> float:
    """Time code of the first frame: startTimeCode of a .usda, else result.json's usd_frame_start,
    else 1 (the backend writes frame k at time code 1 + k)."""
    if path.suffix.lower() == ".usda":
        head = path.open("r", errors="replace").read(4096)
        m = re.search(r"startTimeCode\s*=\s*([-0-9.eE]+)", head)
        if m:
            return float(m.group(1))
    return float(res.get("usd_frame_start", 1.0))


def _import_usd(context, path: Path, res: dict):
    before = set(bpy.data.objects)
    ret = bpy.ops.wm.usd_import(filepath=str(path), relative_path=bool(bpy.data.filepath), set_frame_range=False,
                                import_cameras=False, import_lights=False, import_materials=False,
                                import_points=True, import_meshes=False, create_collection=False)
    if "FINISHED" not in ret:
        raise ResultError(f"Blender could not import {path}.")
    new = [o for o in bpy.data.objects if o not in before]
    clouds = [o for o in new if o.type == "POINTCLOUD"]
    for o in new:
        if o not in clouds[:1]:
            bpy.data.objects.remove(o, do_unlink=True)
    if not clouds:
        raise ResultError(f"{path} holds no point stream (UsdGeomPoints).")
    obj = clouds[0]
    for mod in obj.modifiers:
        if mod.type == "MESH_SEQUENCE_CACHE" and mod.cache_file is not None:
            cf = mod.cache_file
            cf.filepath = _rel(str(path))
            # USD time code t is shown at scene frame t + offset: put code start at frame_start.
            cf.frame_offset = context.scene.frame_start - _usd_start(path, res)
    return obj


def _import_ply(context, paths: list[Path]):
    frames = []
    for p in paths:
        try:
            frames.append(ply_read.gaussians_from_vertices(ply_read.read_vertices(p)))
        except (ply_read.PlyError, OSError, ValueError) as exc:
            raise ResultError(f"Could not read PLY frame {p}: {exc}") from exc
    same = len({len(f["position"]) for f in frames}) == 1
    keys = ("position", "color", "opacity", "scales", "orientations")
    if same and len(frames) > 1:
        static = np.ones(len(frames[0]["position"]), dtype=bool)
        for f in frames[1:]:
            for k in keys:
                diff = np.abs(f[k] - frames[0][k])
                static &= (diff.reshape(len(diff), -1) <= 1e-7).all(axis=1)
        parts = [{k: frames[0][k][static] for k in keys} | {"frame": np.full(int(static.sum()), -1)}]
        for i, f in enumerate(frames):
            parts.append({k: f[k][~static] for k in keys} | {"frame": np.full(int((~static).sum()), i)})
    else:
        parts = [f | {"frame": np.full(len(f["position"]), i)} for i, f in enumerate(frames)]
    if len(frames) == 1:
        parts[0]["frame"][:] = -1
    cat = {k: np.concatenate([p[k] for p in parts]) for k in keys + ("frame",)}
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
    usd = d / res["usd"] if res.get("usd") else None
    plys = [d / p for p in res.get("ply_frames") or []]
    missing = [p for p in plys if not p.is_file()]
    use_usd = usd is not None and usd.is_file() and source in ("auto", "usd")
    if not use_usd and (not plys or missing):
        what = missing[0] if missing else "any PLY frame"
        raise ResultError(f"The result in {d} is incomplete: {what} is missing. Run the job again.")
    n_frames = int(res.get("frames") or len(plys) or 1)

    hero = ensure_hero(scene, res)
    # Re-import keeps where the artist placed (moved/scaled) the previous result.
    context.view_layer.update()  # matrix_world is stale right after the artist edits location/scale
    old_parent = next((o for o in scene.objects if o.get(PARENT_TAG)), None)
    placement = old_parent.matrix_world.copy() if old_parent is not None else None
    remove_previous(scene)
    obj = None
    try:
        if use_usd:
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
        parent.matrix_world = placement if placement is not None else (
            hero_matrix(scene, hero) @ camera_math.CV_FLIP @ Matrix.Diagonal((s, s, s, 1.0)))
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
    except Exception:
        # Never leave a half-built result behind.
        for o in (obj, bpy.data.objects.get("Loopscape Result")):
            if o is not None and o.name in bpy.data.objects and (o.get(RESULT_TAG) or o.get(PARENT_TAG) or o is obj):
                bpy.data.objects.remove(o, do_unlink=True)
        raise

    fps = res.get("fps")
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
    K = (res.get("camera") or {}).get("K")
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
    except ResultError:
        return d, None


def video_path(scene) -> Path | None:
    d, res = result_paths(scene)
    if res and res.get("video"):
        p = d / res["video"]
        return p if p.is_file() else None
    return None


def open_path(path: Path) -> None:
    import subprocess
    import sys
    if sys.platform == "win32":
        os.startfile(str(path))  # noqa: S606 - opening a user's own folder/video
    else:
        subprocess.Popen(["open" if sys.platform == "darwin" else "xdg-open", str(path)])
