"""Import a backend result folder as one animated point cloud with splat rendering.

Preferred: the USD point stream (a MeshSequenceCache that streams frames from disk, path stored
relative to the .blend). Fallback: the PLY frames packed into the .blend as one point cloud with a
per-point frame index; points identical in every frame are stored once. Blender 4.2 cannot build a
point cloud from Python, so there the PLY fallback is a mesh of loose vertices (same attributes).

An import is a transaction (``_ImportTransaction``): everything is built beside the previous result,
which is dropped only once the new one is complete; any failure removes every datablock the import
created and restores the scene settings it touched, then reports one readable line.

The USD object keeps no points of its own: its cache is the only copy, so a shot whose cache is
missing renders the splat group's "missing cache" card instead of a frozen frame (``paths``
reports it on file load).
"""
from __future__ import annotations

import math
import os
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import bpy
import numpy as np
from mathutils import Matrix

from ..contract import LoopscapeError
from ..contract.protocol import KEY_CAMERA, KEY_FPS, KEY_FRAMES, KEY_USD, RESULT_NAME
from . import camera_math, compat, loop_layers, paths, ply_read, result_io, splat_nodes, usd_cache
from .job_writer import PARENT_TAG, hero_matrix

RESULT_TAG = paths.RESULT_TAG
SPLATS_NAME = "Loopscape Splats"
PARENT_NAME = "Loopscape Result"


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


def previous_results(scene) -> list:
    """The objects of earlier imported results (parents and point clouds)."""
    return [o for o in scene.objects if o.get(PARENT_TAG) or o.get(RESULT_TAG)]


def remove_previous(scene, doomed: list | None = None) -> int:
    """Delete earlier imported results (parent, children) and every datablock only they used:
    object data, CacheFile, node groups and what their nodes name (materials, the quad object)."""
    doomed = previous_results(scene) if doomed is None else doomed
    owned = []
    for obj in doomed:
        owned.append(obj.data)
        owned.extend(slot.material for slot in getattr(obj, "material_slots", []))
        for mod in getattr(obj, "modifiers", []):
            if mod.type == "MESH_SEQUENCE_CACHE":
                owned.append(mod.cache_file)
            elif mod.type == "NODES" and mod.node_group is not None:
                owned.append(mod.node_group)
                owned.extend(_ids_named_by(mod.node_group))
    removed = 0
    for obj in doomed:
        if obj.name in bpy.data.objects:
            bpy.data.objects.remove(obj, do_unlink=True)
            removed += 1
    # Users go first (groups before the objects and materials they name), so one ordered pass
    # frees everything; a block still used elsewhere (users > 0) stays.
    for block in [b for b in owned if b is not None]:
        try:
            if block.users == 0:
                data = getattr(block, "data", None) if isinstance(block, bpy.types.Object) else None
                bpy.data.batch_remove([block])  # one call for every ID type (cache_files has no remove())
                if data is not None and data.users == 0:
                    bpy.data.batch_remove([data])
        except ReferenceError:  # listed twice and already removed
            pass
    return removed


def _ids_named_by(group) -> list:
    """Datablocks that a node group's unlinked inputs point at (Set Material, Object Info)."""
    out = []
    for node in group.nodes:
        for sock in node.inputs:
            value = getattr(sock, "default_value", None) if not sock.is_linked else None
            if isinstance(value, bpy.types.ID):
                out.append(value)
    return out


class _ImportTransaction:
    """What an import creates and changes, so that a failed import leaves the scene exactly as it was.

    It snapshots every ID datablock and the scene settings an import touches. ``rollback`` removes
    each datablock created since, whoever created it (our builders, Blender's USD importer, a hook
    such as the layered-result builder), and restores the settings; hooks that change state other
    than datablocks register an undo step with ``on_rollback``. ``commit`` drops the previous result
    and gives the new blocks their names (built beside the old ones, they carry '.001' suffixes).
    """

    _ID_COLLECTIONS = ("objects", "meshes", "pointclouds", "materials", "node_groups", "cache_files", "cameras",
                       "collections", "images", "worlds", "lights", "actions", "texts")

    def __init__(self, context) -> None:
        self.context, self.scene = context, context.scene
        self._before = {name: {b.as_pointer() for b in getattr(bpy.data, name)}
                        for name in self._ID_COLLECTIONS if hasattr(bpy.data, name)}
        self._settings = [(owner, attr, getattr(owner, attr)) for owner, attr in self._touched()]
        layer = context.view_layer
        self._active = layer.objects.active
        self._selected = [o for o in layer.objects if o.select_get()]
        self._names: list[tuple[object, str]] = []
        self._undo: list[Callable[[], None]] = []

    def _touched(self) -> list[tuple[object, str]]:
        scene = self.scene
        r = scene.render
        out = [(scene, "frame_start"), (scene, "frame_end"), (scene, "camera"), (r, "fps"), (r, "fps_base"),
               (r, "resolution_x"), (r, "resolution_y"), (r, "resolution_percentage"),
               (scene.display.shading, "color_type"), (scene.display.shading, "light"),
               (scene.loopscape, "hero_camera"), (scene.loopscape, "result_object"),
               (scene.loopscape, "result_dir_stored"), (scene.loopscape, "frames"), (r, "use_single_layer"),
               (r, "use_compositing")]
        if hasattr(scene, "cycles"):
            out += [(scene.cycles, "transparent_max_bounces"), (scene.cycles, "min_transparent_bounces")]
        return out

    def name(self, block, name: str) -> None:
        """Give ``block`` this name at commit (when the previous result no longer holds it)."""
        self._names.append((block, name))

    def on_rollback(self, undo: Callable[[], None]) -> None:
        """Run ``undo`` if the import fails (for changes that are not new datablocks)."""
        self._undo.append(undo)

    def _created(self) -> list[tuple[object, object]]:
        out = []
        for name, before in self._before.items():
            coll = getattr(bpy.data, name)
            out += [(coll, b) for b in coll if b.as_pointer() not in before]
        return out

    def created(self) -> list:
        """Every datablock created since the transaction began."""
        return [b for _coll, b in self._created()]

    def rollback(self) -> None:
        for undo in reversed(self._undo):
            try:
                undo()
            except Exception:  # keep rolling back; the original error is what gets reported
                traceback.print_exc(file=sys.stderr)
        new = self.created()
        objs = [b for b in new if isinstance(b, bpy.types.Object)]
        if objs:  # objects first, so that their data lose their last user
            bpy.data.batch_remove(objs)
        rest = self.created()
        if rest:
            bpy.data.batch_remove(rest)
        for owner, attr, value in self._settings:
            try:
                if getattr(owner, attr) != value:
                    setattr(owner, attr, value)
            except (AttributeError, TypeError, ReferenceError):
                pass
        layer = self.context.view_layer
        layer.update()  # drop the removed objects from the layer before touching selection
        selected = {o.as_pointer() for o in self._selected}
        for o in layer.objects:
            if o is not None:
                o.select_set(o.as_pointer() in selected)
        layer.objects.active = self._active

    def commit(self, previous: list) -> None:
        remove_previous(self.scene, previous)
        for block, name in self._names:
            block.name = name
        # Built beside the previous result, new blocks took '.001'-style names: give them back the
        # plain Loopscape names the previous result has just freed.
        for coll, block in self._created():
            base = re.sub(r"\.\d{3,}$", "", block.name)
            if base != block.name and base.startswith("Loopscape") and coll.get(base) is None:
                block.name = base


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
    new = usd_cache.import_objects(path)
    clouds = [o for o in new if o.type == "POINTCLOUD"]
    if not clouds:
        raise LoopscapeError(f"{path} holds no point stream (UsdGeomPoints).", result_io.RERUN)
    obj = clouds[0]
    bpy.data.batch_remove([o for o in new if o != obj])
    cache = None
    for mod in obj.modifiers:
        if mod.type == "MESH_SEQUENCE_CACHE" and mod.cache_file is not None:
            cache = mod.cache_file
            cache.filepath = _rel(str(path))
            # USD time code t is shown at scene frame t + offset: put code start at frame_start.
            cache.frame_offset = context.scene.frame_start - result_io.usd_start(path, res)
    if cache is None:
        raise LoopscapeError(f"Blender imported {path} without a point cache (MeshSequenceCache).", result_io.RERUN)
    usd_cache.drop_baked_points(obj, SPLATS_NAME)
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

    mesh = bpy.data.meshes.new(SPLATS_NAME)
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
    obj = bpy.data.objects.new(SPLATS_NAME, mesh)
    context.scene.collection.objects.link(obj)
    if compat.can_make_pointcloud():
        _convert_to_pointcloud(context, obj)
        if mesh.users == 0:  # the conversion leaves the source mesh behind; free its memory now
            bpy.data.meshes.remove(mesh)
    # else (Blender 4.2): a mesh of loose vertices; the node groups treat its vertices as the points.
    return obj, n


can_make_pointcloud = compat.can_make_pointcloud  # kept for callers of the old name


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
    """Replace any earlier result with the one in ``directory``; returns what was built.

    All or nothing: on any failure the scene is left exactly as it was (``_ImportTransaction``)
    and the error is a LoopscapeError with one readable line.
    """
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

    # Re-import keeps where the artist placed (moved/scaled) the previous result.
    context.view_layer.update()  # matrix_world is stale right after the artist edits location/scale
    previous = previous_results(scene)
    old_parent = next((o for o in previous if o.get(PARENT_TAG)), None)
    placement = old_parent.matrix_world.copy() if old_parent is not None else None
    tx = _ImportTransaction(context)
    try:
        hero = ensure_hero(scene, res)
        layers = None
        if layered:
            layers, points = ((loop_layers.import_usd(context, usd, res, _rel), -1) if use_usd
                              else loop_layers.import_ply(context, res, build_cloud))
            obj = layers.static
        elif use_usd:
            obj, points = _import_usd(context, usd, res), -1
        else:
            obj, points = _import_ply(context, plys)
        _tag_result(obj, res, d, use_usd)
        parent = _add_parent(scene, obj, hero, placement)
        _add_splat_modifiers(context, tx, obj, hero, res, n_frames, use_usd, size)
        _apply_scene_settings(scene, res, n_frames)
        if layers is not None:  # dress the two moving layers like obj; view layers + compositor blend
            _attach_layers(context, tx, layers, parent, n_frames)
        props = scene.loopscape
        # The USD cache is the one path a packer rewrites; result_dir is derived from it (paths.py).
        props.result_dir_stored = "" if use_usd else _rel(str(d))
        props.result_object = obj
        tx.name(obj, SPLATS_NAME)
        tx.name(parent, PARENT_NAME)
        tx.commit(previous)
        if layers is None:
            loop_layers.remove(scene)  # a previous result's loop blend, if it had one
    except LoopscapeError:
        tx.rollback()
        raise
    except Exception as exc:  # a Blender API change or a bug: still one line, and nothing left behind
        traceback.print_exc(file=sys.stderr)
        tx.rollback()
        raise LoopscapeError(f"Import of {d} failed: {usd_cache.readable(exc)}.",
                             "Nothing was changed; the system console has the details.") from exc
    try:  # after the commit, and never a reason to fail the import (viewport settings only)
        _show_colours_in_solid_mode(context)
    except (AttributeError, TypeError):
        traceback.print_exc(file=sys.stderr)
    return ImportReport(obj, parent, "usd" if use_usd else "ply", n_frames, points)


def _attach_layers(context, tx: _ImportTransaction, layers, parent, n_frames: int) -> None:
    """The loop blend (``loop_layers.attach``); a failure later in the import takes it back."""
    scene = context.scene
    if not loop_layers.is_set_up(scene):  # a previous layered result's set-up is reused, and kept on failure
        tx.on_rollback(lambda: loop_layers.remove(scene))
    warning = loop_layers.attach(context, layers, parent, n_frames)
    if warning:
        print(f"Loopscape: {warning}")


def _tag_result(obj, res: dict, d: Path, use_usd: bool) -> None:
    obj[RESULT_TAG] = True
    if use_usd:
        # Where the USD sits inside the result folder: the folder is the cache path minus this.
        obj[paths.USD_REL_KEY] = str(res[KEY_USD])
    else:
        obj[paths.RESULT_DIR_KEY] = _rel(str(d))  # PLY points live in the .blend; the folder is only for video


def _add_parent(scene, obj, hero, placement):
    parent = bpy.data.objects.new(PARENT_NAME, None)
    parent.empty_display_type = "ARROWS"
    parent[PARENT_TAG] = True
    scene.collection.objects.link(parent)
    s = scene.loopscape.scene_scale
    parent.matrix_world = placement if placement is not None else Matrix(
        camera_math.scene_matrix_from_hero(hero_matrix(scene, hero), s).tolist())
    obj.parent = parent
    obj.matrix_parent_inverse = Matrix.Identity(4)
    obj.matrix_basis = Matrix.Identity(4)  # the USD importer's up-axis/unit fix does not apply here
    return parent


def _add_splat_modifiers(context, tx: _ImportTransaction, obj, hero, res: dict, n_frames: int, use_usd: bool,
                         size: float) -> None:
    """Frame selection (PLY source), the splat group and its material; the viewport's colours."""
    scene = context.scene
    names = splat_nodes.pick_names(_attribute_names(context, obj))
    mat = splat_nodes.build_material(names)
    tx.name(mat, splat_nodes.MATERIAL)
    if not use_usd:
        frame_mod = obj.modifiers.new("Loopscape Frame", "NODES")
        frame_mod.node_group = splat_nodes.build_frame_group()
        tx.name(frame_mod.node_group, splat_nodes.FRAME_GROUP)
        compat.set_modifier_input(frame_mod, "Start Frame", scene.frame_start)
        compat.set_modifier_input(frame_mod, "Frame Count", n_frames)
    splat_mod = obj.modifiers.new("Loopscape Splats", "NODES")
    splat_mod.node_group = splat_nodes.build_splat_group(names, mat)
    tx.name(splat_mod.node_group, splat_nodes.SPLAT_GROUP)
    compat.set_modifier_input(splat_mod, "Size", size)
    compat.set_modifier_input(splat_mod, "Hero Focal", _hero_focal(scene, hero, res))
    obj.data.materials.clear()
    obj.data.materials.append(mat)


def _show_colours_in_solid_mode(context) -> None:
    """Solid shading by Attribute with flat lighting shows each splat's colour as the photo has it
    (the splat group writes it as the viewport mesh's active colour; studio lighting would shade the
    camera-facing splats darker). scene.display is what Workbench renders with."""
    color_type = compat.solid_attribute_color_type()
    shadings = [context.scene.display.shading]
    screen = getattr(context, "screen", None)
    for area in screen.areas if screen is not None else ():
        if area.type == "VIEW_3D":
            shadings.append(area.spaces.active.shading)
    for shading in shadings:
        shading.color_type = color_type
        shading.light = "FLAT"


def _apply_scene_settings(scene, res: dict, n_frames: int) -> None:
    fps = res.get(KEY_FPS)
    if fps:
        scene.render.fps = int(round(float(fps)))
        scene.render.fps_base = scene.render.fps / float(fps)
    scene.frame_end = scene.frame_start + n_frames - 1
    # The panel's loop length is the result's: a camera preset keyed next spans the frames the
    # backend rendered (at the default 60 a 48-frame result's circle was a quarter turn off).
    scene.loopscape.frames = n_frames
    if hasattr(scene, "cycles"):
        # Splats stack many transparent layers; Cycles' default of 8 would show holes. Russian
        # roulette past min_transparent_bounces ends paths at random behind faint splats: that is
        # heavy noise (a 1-sample render is ~16 dB from the backend's), so keep every layer.
        cyc = scene.cycles
        cyc.transparent_max_bounces = max(cyc.transparent_max_bounces, 128)
        cyc.min_transparent_bounces = max(cyc.min_transparent_bounces, cyc.transparent_max_bounces)


def _hero_focal(scene, hero, res: dict) -> float:
    """Focal length in pixels of the camera the backend trained with (its dilation is in those pixels)."""
    K = (res.get(KEY_CAMERA) or {}).get("K")
    if K:
        return float(K[0][0])
    r = scene.render
    w, h = r.resolution_x * r.resolution_percentage / 100.0, r.resolution_y * r.resolution_percentage / 100.0
    return float(camera_math.intrinsics(hero.data, w, h, r.pixel_aspect_x, r.pixel_aspect_y)[0][0])


_set_input = compat.set_modifier_input  # every Blender version (5.2 moved the inputs off ID properties)


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
