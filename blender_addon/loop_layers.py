"""The loop blend in Blender as in the backend: two view layers mixed by the compositor.

A loop in the compact layout (``result_io.is_layered``) holds the static Gaussians once and the
moving ones as a forward and a backward layer, each at full opacity. The backend renders loop frame
t as (1 - w) R(static + forward) + w R(static + backward), w = t/N (``contract.splats.backward_weight``).
Alpha compositing cannot do that inside one point set (the copies of an opaque surface interleave in
depth), so Blender renders it the same way:

- the static cloud stays in the scene collection; the forward and backward clouds go into their own
  collections, dressed like the static one (same splat modifiers and material);
- the artist's view layers exclude the backward collection; one extra view layer,
  ``Loopscape Backward``, excludes the forward one (everything else renders in both, so the
  artist's own objects occlude and are occluded as usual);
- the compositor mixes the two renders with a factor keyframed linearly from 0 at the first frame to
  1 at frame N: exactly t/N at every loop frame. The mix happens on sRGB-encoded values, as the
  backend's blend does (its images are display-referred), and converts back to scene linear for the
  view transform.

Everything lives in the .blend and the USD cache, so a render farm renders it the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import bpy
from mathutils import Matrix

from ..contract import LoopscapeError
from ..contract.splats import USD_PRIMS, backward_weight
from . import ply_read, result_io, usd_cache

FORWARD_COLLECTION = "Loopscape Forward"
BACKWARD_COLLECTION = "Loopscape Backward"
BACKWARD_VIEW_LAYER = "Loopscape Backward"
COMPOSITOR = "Loopscape Loop Blend"
TAG = "loopscape_loop_blend"  # on the compositor tree we own
MIX_NODE = "Loopscape Mix"
LINEAR_SPACES = ("Linear Rec.709", "Linear", "scene_linear")  # scene linear across OCIO configs
DISPLAY_SPACE = "sRGB"  # what the Standard view transform encodes to, and what the backend's images are


@dataclass
class Layers:
    """The three clouds of a layered loop."""

    static: object
    forward: object
    backward: object

    @property
    def moving(self) -> tuple:
        return self.forward, self.backward


def import_usd(context, path: Path, res: dict, relpath: Callable[[str], str]) -> Layers:
    """Import the layout's USD (three prims, one CacheFile) and return its three point clouds."""
    new = usd_cache.import_objects(path)
    found: dict[str, object] = {}
    for o in new:
        if o.type != "POINTCLOUD":
            continue
        caches = [m for m in o.modifiers if m.type == "MESH_SEQUENCE_CACHE"]
        prim = caches[0].object_path if caches else "/" + o.name.split(".")[0]  # the static prim has no samples
        for name, want in USD_PRIMS.items():
            if prim == want or prim.rsplit("/", 1)[-1] == want.rsplit("/", 1)[-1]:
                found.setdefault(name, o)
    keep = set(found.values())
    for o in new:
        if o not in keep:
            bpy.data.objects.remove(o, do_unlink=True)
    missing = [n for n in USD_PRIMS if n not in found]
    if missing:
        for o in keep:
            bpy.data.objects.remove(o, do_unlink=True)
        raise LoopscapeError(f"{path} lacks the loop's {', '.join(missing)} point prim(s).", result_io.RERUN)
    offset = context.scene.frame_start - result_io.usd_start(path, res)
    for o in keep:
        cached = False
        for mod in o.modifiers:
            if mod.type == "MESH_SEQUENCE_CACHE" and mod.cache_file is not None:
                mod.cache_file.filepath = relpath(str(path))
                mod.cache_file.frame_offset = offset  # USD code start shows at the scene's first frame
                cached = True
        if cached:  # the moving layers: nothing plausible may render without their cache
            usd_cache.drop_baked_points(o, o.name)
    return Layers(found["static"], found["forward"], found["backward"])


def layer_frames(path: Path) -> list[dict]:
    """One loop layer's PLY (contract.splats.read_layer_ply) as per-frame activated attributes."""
    import numpy as np

    from ..contract.splats import read_layer_ply

    v, states = read_layer_ply(path)
    first = ply_read.gaussians_from_vertices(v)
    frames = []
    for t in range(states["position"].shape[0]):
        f = dict(first, position=states["position"][t])
        if "rotation" in states:
            q = states["rotation"][t].astype(np.float64)
            f["orientations"] = (q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        if "scale" in states:
            f["scales"] = np.exp(states["scale"][t]).astype(np.float32)
        frames.append(f)
    return frames


def import_ply(context, res: dict, build_cloud: Callable[[object, dict], tuple[object, int]]) -> tuple[Layers, int]:
    """The PLY fallback (no USD): static once, each layer packed with a per-point frame index
    (``ply_read.pack_frames``) for the frame-select node group. Returns the layers and the point count."""
    files = result_io.layer_files(res)
    try:
        static = ply_read.pack_frames([ply_read.read_gaussians(files.static)])
        packed = [ply_read.pack_frames(layer_frames(p)) for p in (files.forward, files.backward)]
    except LoopscapeError as exc:
        raise LoopscapeError(f"Could not read the loop's PLY layers: {exc.message}", exc.hint) from exc
    objs, points = [], 0
    try:
        for cat in (static, *packed):
            obj, n = build_cloud(context, cat)
            objs.append(obj)
            points += n
    except Exception:
        for o in objs:
            bpy.data.objects.remove(o, do_unlink=True)
        raise
    return Layers(*objs), points


def attach(context, layers: Layers, parent, n_frames: int) -> str | None:
    """Dress the forward and backward clouds like ``layers.static`` (already tagged, dressed and
    parented), put them on their view layers and set up the compositor blend. Returns a warning, or None."""
    scene = context.scene
    src = layers.static
    for o in layers.moving:
        for key in src.keys():  # the importer's tags and paths: the clouds are one result
            o[key] = src[key]
        o.parent = parent
        o.matrix_parent_inverse = Matrix.Identity(4)
        o.matrix_basis = Matrix.Identity(4)  # the USD importer's up-axis/unit fix does not apply here
        o.data.materials.clear()
        for mat in src.data.materials:
            o.data.materials.append(mat)
    _copy_node_modifiers(src, list(layers.moving))
    fwd, bwd = _collection(scene, FORWARD_COLLECTION), _collection(scene, BACKWARD_COLLECTION)
    for o, coll in ((layers.forward, fwd), (layers.backward, bwd)):
        for c in list(o.users_collection):
            c.objects.unlink(o)
        coll.objects.link(o)
    main = context.view_layer if context.view_layer.name != BACKWARD_VIEW_LAYER else scene.view_layers[0]
    back = scene.view_layers.get(BACKWARD_VIEW_LAYER) or scene.view_layers.new(BACKWARD_VIEW_LAYER)
    for vl in scene.view_layers:
        for name, hide in ((FORWARD_COLLECTION, vl == back), (BACKWARD_COLLECTION, vl != back)):
            lc = vl.layer_collection.children.get(name)
            if lc is not None:
                lc.exclude = hide
    back.use = True
    scene.render.use_single_layer = False  # both layers must render for the mix
    scene.render.use_compositing = True
    return _build_compositor(scene, main.name, back.name, n_frames)


def is_set_up(scene) -> bool:
    """Whether the scene holds the loop blend's view layer (from an earlier layered import)."""
    return scene.view_layers.get(BACKWARD_VIEW_LAYER) is not None


def remove(scene) -> None:
    """Undo :func:`attach`'s scene set-up (the clouds themselves are removed with the result)."""
    vl = scene.view_layers.get(BACKWARD_VIEW_LAYER)
    if vl is not None and len(scene.view_layers) > 1:
        scene.view_layers.remove(vl)
    for name in (FORWARD_COLLECTION, BACKWARD_COLLECTION):
        coll = bpy.data.collections.get(name)
        if coll is not None:
            for o in list(coll.objects):
                coll.objects.unlink(o)
                if not o.users_collection:
                    scene.collection.objects.link(o)  # an object the artist put there stays in the scene
            bpy.data.collections.remove(coll)
    tree = _compositor(scene)
    if tree is not None and tree.get(TAG):
        if hasattr(scene, "compositing_node_group"):
            scene.compositing_node_group = None
            bpy.data.node_groups.remove(tree)
        else:
            tree.nodes.clear()
            scene.use_nodes = False


def blend_factor(scene) -> float | None:
    """The compositor's current backward weight (None without our compositor), for checks and the UI."""
    tree = _compositor(scene)
    if tree is None or not tree.get(TAG) or MIX_NODE not in tree.nodes:
        return None
    return float(_factor_socket(tree.nodes[MIX_NODE]).default_value)


# ----------------------------------------------------------------------------- internals


def _copy_node_modifiers(src, dsts: list) -> None:
    """Copy ``src``'s Geometry Nodes modifiers (with their input values) onto ``dsts``, after their
    own modifiers (the USD cache comes first). The operator copies inputs on every Blender version."""
    with bpy.context.temp_override(object=src, active_object=src, selected_objects=dsts,
                                   selected_editable_objects=dsts):
        for mod in src.modifiers:
            if mod.type == "NODES":
                bpy.ops.object.modifier_copy_to_selected(modifier=mod.name)
    for o in dsts:
        got = [m.name for m in o.modifiers if m.type == "NODES"]
        want = [m.name for m in src.modifiers if m.type == "NODES"]
        if got != want:
            raise LoopscapeError(f"Blender did not copy the splat modifiers onto {o.name} ({got} != {want}).",
                                 "Report this with your Blender version.")


def _collection(scene, name: str):
    coll = bpy.data.collections.get(name) or bpy.data.collections.new(name)
    if coll.name not in scene.collection.children:
        scene.collection.children.link(coll)
    return coll


def _compositor(scene):
    if hasattr(scene, "compositing_node_group"):  # Blender 5: a compositor node group
        return scene.compositing_node_group
    return scene.node_tree if getattr(scene, "use_nodes", False) else None


def _own_compositor(scene):
    """Our compositor tree, emptied; None when the artist has a compositor of their own."""
    if hasattr(scene, "compositing_node_group"):
        tree = scene.compositing_node_group
        if tree is not None and not tree.get(TAG):
            return None
        if tree is None:
            tree = bpy.data.node_groups.new(COMPOSITOR, "CompositorNodeTree")
            scene.compositing_node_group = tree
        tree.interface.clear()
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
    else:  # Blender 4.x: the scene's own tree; its default (render layers -> composite) may go
        fresh = not scene.use_nodes or scene.node_tree is None
        scene.use_nodes = True
        tree = scene.node_tree
        default = {"R_LAYERS", "COMPOSITE", "VIEWER"}
        if not fresh and not tree.get(TAG) and not all(n.type in default for n in tree.nodes):
            return None
    tree[TAG] = True
    tree.nodes.clear()
    return tree


def _by_id(sockets, identifier: str):
    return next(s for s in sockets if s.identifier == identifier)


def _factor_socket(mix):
    return mix.inputs[0]  # "Factor" (ShaderNodeMix, Blender 5) or "Fac" (CompositorNodeMixRGB)


def _color_space(node, names: tuple[str, ...]) -> str | None:
    items = {i.identifier for i in node.bl_rna.properties["from_color_space"].enum_items}
    return next((n for n in names if n in items), None)


def _build_compositor(scene, main_layer: str, back_layer: str, n_frames: int) -> str | None:
    tree = _own_compositor(scene)
    if tree is None:
        return (f"The scene has its own compositor, so Loopscape did not set up the loop blend: mix the view layers "
                f"'{main_layer}' and '{back_layer}' with a factor going linearly from 0 at the first frame to 1 at "
                f"frame {n_frames}.")
    nodes, links = tree.nodes, tree.links
    blender5 = hasattr(scene, "compositing_node_group")
    renders = []
    for i, layer in enumerate((main_layer, back_layer)):
        rl = nodes.new("CompositorNodeRLayers")
        rl.scene, rl.layer, rl.location = scene, layer, (-600, 200 - 400 * i)
        renders.append(rl.outputs["Image"])
    if blender5:
        mix = nodes.new("ShaderNodeMix")
        mix.data_type, mix.blend_type = "RGBA", "MIX"
        ins = (_by_id(mix.inputs, "A_Color"), _by_id(mix.inputs, "B_Color"))
        out = _by_id(mix.outputs, "Result_Color")
        sink = nodes.new("NodeGroupOutput").inputs[0]
    else:
        mix = nodes.new("CompositorNodeMixRGB")
        ins, out = (mix.inputs[1], mix.inputs[2]), mix.outputs[0]
        sink = nodes.new("CompositorNodeComposite").inputs["Image"]
    mix.name = mix.label = MIX_NODE
    mix.location = (0, 0)
    probe = nodes.new("CompositorNodeConvertColorSpace")
    linear = _color_space(probe, LINEAR_SPACES)
    nodes.remove(probe)
    display = DISPLAY_SPACE if linear else None

    def convert(sock, src: str, dst: str, loc):
        n = nodes.new("CompositorNodeConvertColorSpace")
        n.from_color_space, n.to_color_space, n.location = src, dst, loc
        links.new(sock, n.inputs[0])
        return n.outputs[0]

    for i, (sock, into) in enumerate(zip(renders, ins)):
        links.new(convert(sock, linear, display, (-300, 200 - 400 * i)) if display else sock, into)
    links.new(convert(out, display, linear, (300, 0)) if display else out, sink)
    sink.node.location = (600, 0)
    _keyframe_factor(tree, _factor_socket(mix), scene.frame_start, n_frames)
    return None


def _keyframe_factor(tree, socket, start: int, n_frames: int) -> None:
    """Factor = backward weight t/N at frame start + t: linear keys at t = 0 and t = N."""
    for t in (0, n_frames):
        socket.default_value = backward_weight(t, n_frames)
        socket.keyframe_insert("default_value", frame=start + t)
    socket.default_value = backward_weight(0, n_frames)
    for fc in _fcurves(tree):
        for kp in fc.keyframe_points:
            kp.interpolation = "LINEAR"
        fc.update()


def _fcurves(idblock) -> list:
    ad = idblock.animation_data
    action = ad.action if ad is not None else None
    if action is None:
        return []
    if hasattr(action, "fcurves") and not hasattr(ad, "action_slot"):  # Blender 4.2/4.3
        return list(action.fcurves)
    from bpy_extras import anim_utils  # Blender 4.4+: layered actions

    bag = anim_utils.action_get_channelbag_for_slot(action, ad.action_slot)
    return list(bag.fcurves) if bag is not None else []
