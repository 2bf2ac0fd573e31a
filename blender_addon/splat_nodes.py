"""Geometry Nodes and material that draw Gaussian splats from point attributes, as gsplat does.

Each point becomes a quad parallel to the render camera's image plane, sized to the Gaussian's
projected 2D covariance plus gsplat's EPS2D dilation, and the material evaluates that 2D
Gaussian's exact conic times the opacity, with gsplat's ALPHA_MAX clamp and ALPHA_MIN cut (the
constants are the contract's, shared with the backend's CPU rasteriser). Quads through
the means, parallel to the image plane, are hit in mean-depth order, which is gsplat's sort.
Everything lives in the .blend, so a render farm needs neither the add-on nor the backend.

Viewport (Is Viewport, with the Viewport Preview input on): a lean preview, one camera-facing
triangle per splat realised into one mesh that carries the splat's colour as its active colour
attribute, so Solid mode shading by Attribute shows the picture and playback stays interactive.
Final renders (and the viewport with Viewport Preview off) draw the exact splats. A point set that
is empty (its USD cache is missing) turns into a magenta card in front of the camera.

Builders always create new datablocks (Blender suffixes a taken name), so an import can build
beside the previous result and drop it only on success (importer._ImportTransaction).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import bpy

from ..contract.splats import ALPHA_MAX, ALPHA_MIN, EPS2D, EXTENT_MAX

SPLAT_GROUP = "Loopscape Splats"
FRAME_GROUP = "Loopscape Frame Select"
MATERIAL = "Loopscape Splat"
MISSING_MATERIAL = "Loopscape Missing Cache"
PREVIEW_SHAPE = "Loopscape Viewport Splat"
UV_ATTR = "ls_uv"
CONIC_ATTR = "ls_conic"
FRAME_ATTR = "ls_frame"
VIEW_COLOR_ATTR = "ls_color"  # linear splat colour on the viewport mesh (its active colour attribute)
MISSING_RGB = (1.0, 0.0, 1.0)
VIEWPORT_SPLATS = 250_000  # the preview's default budget (see _viewport_preview and the README's figures)


@dataclass
class AttrNames:
    """Attribute names on the point cloud (USD primvar names or our PLY names)."""

    color: str = "displayColor"
    opacity: str = "opacity"
    scales: str = "scales"
    orientation: str = "orientations"


def pick_names(names: set[str]) -> AttrNames:
    def first(cands, default):
        return next((c for c in cands if c in names), default)
    return AttrNames(
        color=first(("displayColor", "color", "Col", "rgb", "Color"), "displayColor"),
        opacity=first(("opacity", "opacities", "alpha"), "opacity"),
        scales=first(("scales", "scale", "scaling"), "scales"),
        orientation=first(("orientations", "orientation", "orient", "rotation", "rot"), "orientations"),
    )


def _node(nodes, kind, loc, **props):
    n = nodes.new(kind)
    n.location = loc
    for k, v in props.items():
        setattr(n, k, v)
    return n


def _new_group(name: str):
    ng = bpy.data.node_groups.new(name, "GeometryNodeTree")  # never reuse: the previous result may still use it
    ng.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    ng.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    return ng


def build_frame_group(name: str = FRAME_GROUP):
    """Keep the points of the current loop frame: ls_frame == (frame - start) mod count, or -1 (static)."""
    ng = _new_group(name)
    start = ng.interface.new_socket("Start Frame", in_out="INPUT", socket_type="NodeSocketInt")
    start.default_value = 1
    count = ng.interface.new_socket("Frame Count", in_out="INPUT", socket_type="NodeSocketInt")
    count.default_value = 1
    count.min_value = 1
    nodes, links = ng.nodes, ng.links
    gin = _node(nodes, "NodeGroupInput", (-800, 0))
    gout = _node(nodes, "NodeGroupOutput", (400, 0))
    time = _node(nodes, "GeometryNodeInputSceneTime", (-800, -200))
    sub = _node(nodes, "ShaderNodeMath", (-600, -200), operation="SUBTRACT")
    links.new(time.outputs["Frame"], sub.inputs[0])
    links.new(gin.outputs["Start Frame"], sub.inputs[1])
    mod = _node(nodes, "ShaderNodeMath", (-400, -200), operation="FLOORED_MODULO")
    links.new(sub.outputs[0], mod.inputs[0])
    links.new(gin.outputs["Frame Count"], mod.inputs[1])
    cur = _node(nodes, "ShaderNodeMath", (-250, -200), operation="FLOOR")
    links.new(mod.outputs[0], cur.inputs[0])
    attr = _node(nodes, "GeometryNodeInputNamedAttribute", (-600, -400), data_type="INT")
    attr.inputs["Name"].default_value = FRAME_ATTR
    other = _node(nodes, "FunctionNodeCompare", (-100, -250), data_type="FLOAT", operation="NOT_EQUAL")
    other.inputs["Epsilon"].default_value = 0.1
    links.new(attr.outputs["Attribute"], other.inputs["A"])
    links.new(cur.outputs[0], other.inputs["B"])
    moving = _node(nodes, "FunctionNodeCompare", (-100, -450), data_type="FLOAT", operation="GREATER_EQUAL")
    links.new(attr.outputs["Attribute"], moving.inputs["A"])
    moving.inputs["B"].default_value = 0.0
    both = _node(nodes, "FunctionNodeBooleanMath", (100, -300), operation="AND")
    links.new(other.outputs[0], both.inputs[0])
    links.new(moving.outputs[0], both.inputs[1])
    delete = _node(nodes, "GeometryNodeDeleteGeometry", (200, 0), domain="POINT")
    links.new(gin.outputs["Geometry"], delete.inputs["Geometry"])
    links.new(both.outputs[0], delete.inputs["Selection"])
    links.new(delete.outputs[0], gout.inputs["Geometry"])
    return ng


def _wire(links, node, inputs) -> None:
    """Feed node.inputs[i] from inputs[i]: a socket is linked, a constant is set, None is skipped."""
    for i, v in enumerate(inputs):
        if v is None:
            continue
        if hasattr(v, "is_output"):
            links.new(v, node.inputs[i])
        else:
            node.inputs[i].default_value = v


class _Graph:
    """Tiny helper that builds node expressions: arguments are sockets or constants."""

    def __init__(self, ng):
        self.nodes, self.links = ng.nodes, ng.links
        self.x = -1200

    def node(self, kind, inputs=(), **props):
        n = _node(self.nodes, kind, (self.x, 0), **props)
        self.x += 40  # keep the layout roughly left to right
        _wire(self.links, n, inputs)
        return n

    def math(self, op, *args):
        return self.node("ShaderNodeMath", args, operation=op).outputs[0]

    def vec(self, op, *args, out=0):
        return self.node("ShaderNodeVectorMath", args, operation=op).outputs[out]

    def xyz(self, v):
        return self.node("ShaderNodeSeparateXYZ", (v,)).outputs

    def combine(self, a, b, c):
        return self.node("ShaderNodeCombineXYZ", (a, b, c)).outputs[0]


def _splat_group_inputs(ng) -> None:
    """The splat group's inputs: the artist's knobs and what the importer sets from result.json."""
    size = ng.interface.new_socket("Size", in_out="INPUT", socket_type="NodeSocketFloat")
    size.default_value = 1.0
    size.min_value = 0.0
    dil = ng.interface.new_socket("Dilation", in_out="INPUT", socket_type="NodeSocketFloat")
    dil.default_value = EPS2D
    dil.min_value = 0.0
    dil.description = "Screen-space variance added to every splat, in hero-camera pixels^2 (gsplat's eps2d)"
    foc = ng.interface.new_socket("Hero Focal", in_out="INPUT", socket_type="NodeSocketFloat")
    foc.default_value = 1000.0
    foc.min_value = 1e-3
    foc.description = "Focal length of the backend's camera in pixels (result.json camera K)"
    pre = ng.interface.new_socket("Viewport Preview", in_out="INPUT", socket_type="NodeSocketBool")
    pre.default_value = True
    pre.description = ("Viewport: fast coloured triangles (Solid mode by Attribute shows the picture). Off: the "
                       "exact splats, as rendered, for a Rendered-mode viewport (slow on large results)")
    most = ng.interface.new_socket("Viewport Splats", in_out="INPUT", socket_type="NodeSocketInt")
    most.default_value = VIEWPORT_SPLATS
    most.min_value = 1
    most.description = ("Most splats the viewport preview draws: a larger result shows every k-th splat, "
                        "sqrt(k) times larger, so that playback stays interactive")


def _projected_covariance(g: _Graph, gin, rot, s, k, to_cam, q, rx, ry):
    """(a, b, c) of C = P Sigma P^T + dilation in camera units: the 2D covariance gsplat draws."""
    # Projected covariance: sum over the Gaussian's axes of w w^T, w = P (cam-space axis * sigma).
    a = b = c = None
    for i, axis in enumerate(((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))):
        d = g.node("FunctionNodeRotateVector", (axis, rot.outputs["Attribute"])).outputs[0]
        d = g.node("FunctionNodeTransformDirection", (d, to_cam)).outputs[0]
        d = g.vec("SCALE", d, None, None, g.math("MULTIPLY", s[i], k))
        dx, dy, dz = g.xyz(d)
        wx = g.math("SUBTRACT", dx, g.math("MULTIPLY", dz, rx))
        wy = g.math("SUBTRACT", dy, g.math("MULTIPLY", dz, ry))
        ta, tb, tc = g.math("MULTIPLY", wx, wx), g.math("MULTIPLY", wx, wy), g.math("MULTIPLY", wy, wy)
        a = ta if a is None else g.math("ADD", a, ta)
        b = tb if b is None else g.math("ADD", b, tb)
        c = tc if c is None else g.math("ADD", c, tc)

    # Dilation: eps2d px^2 at the hero focal and the splat's depth in the render camera, in camera units.
    px = g.math("DIVIDE", g.math("MULTIPLY", q[2], -1.0), gin.outputs["Hero Focal"])
    eps = g.math("MULTIPLY", g.math("MULTIPLY", px, px), gin.outputs["Dilation"])
    a = g.math("ADD", a, eps)
    c = g.math("ADD", c, eps)

    return a, b, c


def _footprint(g: _Graph, ng, gin, names: AttrNames, a, b, c):
    """gsplat's footprint of C = [[a, b], [b, c]]: the quad's half-sizes (hx, hy) and the geometry with the
    conic stored per point (the material evaluates the falloff from it)."""
    # gsplat's extent: min(EXTENT_MAX, sqrt(2 ln(opacity / ALPHA_MIN))) sigmas; the alpha cut does the rest.
    opa = g.node("GeometryNodeInputNamedAttribute", data_type="FLOAT")
    opa.inputs["Name"].default_value = names.opacity
    ext = g.math("SQRT", g.math("MULTIPLY", 2.0, g.math("LOGARITHM", g.math("MAXIMUM", g.math(
        "MULTIPLY", opa.outputs["Attribute"], 1.0 / ALPHA_MIN), 1.0001), math.e)))
    ext = g.math("MINIMUM", ext, EXTENT_MAX)
    hx = g.math("MULTIPLY", ext, g.math("SQRT", a))
    hy = g.math("MULTIPLY", ext, g.math("SQRT", c))
    # Conic of C in the quad's unit coordinates (u, v) in [-1, 1]: (n_a, n_b, n_c) with
    # sigma = 0.5 (n_a u^2 + 2 n_b u v + n_c v^2).
    det = g.math("MAXIMUM", g.math("SUBTRACT", g.math("MULTIPLY", a, c), g.math("MULTIPLY", b, b)), 1e-30)
    e2 = g.math("MULTIPLY", ext, ext)
    n_ac = g.math("DIVIDE", g.math("MULTIPLY", e2, g.math("MULTIPLY", a, c)), det)
    n_b = g.math("DIVIDE", g.math("MULTIPLY", g.math("MULTIPLY", e2, b), g.math("SQRT", g.math("MULTIPLY", a, c))),
                 det)
    conic = g.combine(n_ac, g.math("MULTIPLY", n_b, -1.0), n_ac)
    store_conic = g.node("GeometryNodeStoreNamedAttribute", (gin.outputs["Geometry"],), data_type="FLOAT_VECTOR",
                         domain="POINT")
    store_conic.inputs["Name"].default_value = CONIC_ATTR
    ng.links.new(conic, store_conic.inputs["Value"])
    return store_conic, hx, hy


def build_splat_group(names: AttrNames, material, name: str = SPLAT_GROUP):
    """Points -> camera-facing quads that reproduce gsplat's screen-space Gaussians.

    gsplat (and our CPU rasteriser) draws each Gaussian as the 2D Gaussian J Sigma J^T + eps2d I:
    the 3D covariance projected along the viewing ray, plus an EPS2D px^2 dilation. Trained Gaussians
    are often sub-pixel and only look right with that dilation, and nearly round Gaussians seen
    edge-on vanish if drawn as a flat quad in their own plane. So each point becomes a quad parallel
    to the render camera's image plane, through the mean, sized to the projected 2D covariance
    C = P Sigma P^T + dilation (P projects along the ray onto that plane); the material evaluates the
    exact conic of C. The dilation is Dilation px^2 at the backend camera's focal length (Hero
    Focal, from result.json's K) and the splat's depth in the render camera, which is what the
    backend renders for every camera of a path; so from the hero camera, or any camera with its
    intrinsics, this is gsplat's footprint. (Blender 4.2 geometry nodes cannot read a camera's
    lens, hence the stored focal.)
    """
    ng = _new_group(name)
    _splat_group_inputs(ng)
    g = _Graph(ng)
    gin = _node(ng.nodes, "NodeGroupInput", (-1400, 0))
    gout = _node(ng.nodes, "NodeGroupOutput", (2400, 0))

    # The render camera in this object's space: cam = obj^-1 @ camera (Object Info, Relative).
    active = g.node("GeometryNodeInputActiveCamera")
    info = g.node("GeometryNodeObjectInfo", (active.outputs[0],), transform_space="RELATIVE")
    to_cam = g.node("FunctionNodeInvertMatrix", (info.outputs["Transform"],)).outputs[0]
    cam_parts = g.node("FunctionNodeSeparateTransform", (info.outputs["Transform"],)).outputs

    pos = g.node("GeometryNodeInputPosition").outputs[0]
    q = g.xyz(g.node("FunctionNodeTransformPoint", (pos, to_cam)).outputs[0])  # Blender camera space
    rx = g.math("DIVIDE", q[0], q[2])
    ry = g.math("DIVIDE", q[1], q[2])

    rot = g.node("GeometryNodeInputNamedAttribute", data_type="QUATERNION")
    rot.inputs["Name"].default_value = names.orientation
    scl = g.node("GeometryNodeInputNamedAttribute", data_type="FLOAT_VECTOR")
    scl.inputs["Name"].default_value = names.scales
    s = g.xyz(scl.outputs["Attribute"])
    k = gin.outputs["Size"]

    a, b, c = _projected_covariance(g, gin, rot, s, k, to_cam, q, rx, ry)

    store_conic, hx, hy = _footprint(g, ng, gin, names, a, b, c)

    # The quad: 2x2 units in the xy plane; its vertex positions are the (u, v) falloff coordinate.
    grid = g.node("GeometryNodeMeshGrid", (2.0, 2.0, 2, 2))
    uv = g.node("GeometryNodeInputPosition").outputs[0]
    store_uv = g.node("GeometryNodeStoreNamedAttribute", (grid.outputs["Mesh"],), data_type="FLOAT_VECTOR",
                      domain="POINT")
    store_uv.inputs["Name"].default_value = UV_ATTR
    ng.links.new(uv, store_uv.inputs["Value"])
    setmat = g.node("GeometryNodeSetMaterial", (store_uv.outputs[0],))
    setmat.inputs["Material"].default_value = material

    # Parallel to the camera's image plane: the camera's rotation, quad half-sizes in object units.
    scale = g.vec("MULTIPLY", g.combine(hx, hy, 1.0), cam_parts["Scale"])
    inst = g.node("GeometryNodeInstanceOnPoints")
    ng.links.new(store_conic.outputs[0], inst.inputs["Points"])
    ng.links.new(setmat.outputs[0], inst.inputs["Instance"])
    ng.links.new(cam_parts["Rotation"], inst.inputs["Rotation"])
    ng.links.new(scale, inst.inputs["Scale"])

    preview = _viewport_preview(g, gin, names, cam_parts, material)
    use_preview = g.node("FunctionNodeBooleanMath", (g.node("GeometryNodeIsViewport").outputs[0],
                                                     gin.outputs["Viewport Preview"]), operation="AND")
    splats = _switch(g, use_preview.outputs[0], inst.outputs["Instances"], preview)

    # No points at all means the USD cache is missing: show that, never an empty or frozen shot.
    # (Domain sizes, not the instances: those would make the viewport evaluate the exact branch.)
    n_cloud = g.node("GeometryNodeAttributeDomainSize", (gin.outputs["Geometry"],), component="POINTCLOUD")
    n_mesh = g.node("GeometryNodeAttributeDomainSize", (gin.outputs["Geometry"],), component="MESH")
    n = g.math("ADD", n_cloud.outputs["Point Count"], n_mesh.outputs["Point Count"])
    empty = g.node("FunctionNodeCompare", (n, 0.5), data_type="FLOAT", operation="LESS_THAN")
    out = _switch(g, empty.outputs[0], splats, _missing_card(g, cam_parts))
    ng.links.new(out, gout.inputs["Geometry"])
    ng["loopscape_names"] = [names.color, names.opacity, names.scales, names.orientation]
    return ng


def _viewport_preview(g: _Graph, gin, names: AttrNames, cam_parts, material):
    """The viewport's splats: one camera-facing triangle per point, realised into one mesh whose
    active colour attribute is the splat colour (linear), for Solid mode by Attribute.

    Drawing a million instances, or realising a million exact quads with all their attributes,
    takes seconds per frame; this keeps two attributes and skips the covariance. Each triangle's
    inscribed circle has radius max(1.5 sigma_max x Size, 0.7 px at the hero focal), times sqrt(k)
    when only every k-th splat is drawn (Viewport Splats)."""
    pts = gin.outputs["Geometry"]
    n_cloud = g.node("GeometryNodeAttributeDomainSize", (pts,), component="POINTCLOUD")
    n_mesh = g.node("GeometryNodeAttributeDomainSize", (pts,), component="MESH")
    n = g.math("ADD", n_cloud.outputs["Point Count"], n_mesh.outputs["Point Count"])
    step = g.math("MAXIMUM", g.math("CEIL", g.math("DIVIDE", n, gin.outputs["Viewport Splats"])), 1.0)
    index = g.node("GeometryNodeInputIndex").outputs[0]
    every = g.node("FunctionNodeCompare", (g.math("FLOORED_MODULO", index, step), 0.5), data_type="FLOAT",
                   operation="LESS_THAN")
    scl = g.node("GeometryNodeInputNamedAttribute", data_type="FLOAT_VECTOR")
    scl.inputs["Name"].default_value = names.scales
    sx, sy, sz = g.xyz(scl.outputs["Attribute"])
    sigma = g.math("MULTIPLY", g.math("MAXIMUM", g.math("MAXIMUM", sx, sy), sz), gin.outputs["Size"])
    dist = g.vec("DISTANCE", g.node("GeometryNodeInputPosition").outputs[0], cam_parts["Translation"], out="Value")
    radius = g.math("MAXIMUM", g.math("MULTIPLY", sigma, 1.5),
                    g.math("MULTIPLY", g.math("DIVIDE", dist, gin.outputs["Hero Focal"]), 0.7))
    radius = g.math("MULTIPLY", radius, g.math("SQRT", step))

    # Realising copies every attribute to each corner: keep colour, opacity and the viewport colour.
    lean = pts
    for attr in (names.scales, names.orientation, "radius", FRAME_ATTR, "velocities"):
        rm = g.node("GeometryNodeRemoveAttribute", (lean,))
        rm.inputs["Name"].default_value = attr
        lean = rm.outputs[0]
    shape = g.node("GeometryNodeObjectInfo", transform_space="ORIGINAL")
    shape.inputs["Object"].default_value = preview_shape()
    # Drop the shape's own colour values (they would win over the points'); the mesh keeps the
    # attribute's name as its active colour, and the realised points bring theirs under that name.
    bare = g.node("GeometryNodeRemoveAttribute", (shape.outputs["Geometry"],))
    bare.inputs["Name"].default_value = VIEW_COLOR_ATTR
    setmat = g.node("GeometryNodeSetMaterial", (bare.outputs[0],))
    setmat.inputs["Material"].default_value = material
    inst = g.node("GeometryNodeInstanceOnPoints")
    g.links.new(lean, inst.inputs["Points"])
    g.links.new(every.outputs[0], inst.inputs["Selection"])
    g.links.new(setmat.outputs[0], inst.inputs["Instance"])
    g.links.new(cam_parts["Rotation"], inst.inputs["Rotation"])
    g.links.new(radius, inst.inputs["Scale"])
    # The linear colour, on the drawn instances only (sRGB decode as in the material: Workbench
    # shows colour attributes as scene-linear).
    col = g.node("GeometryNodeInputNamedAttribute", data_type="FLOAT_COLOR")
    col.inputs["Name"].default_value = names.color
    rgb = g.node("FunctionNodeSeparateColor", (col.outputs["Attribute"],)).outputs
    lin = [g.math("POWER", g.math("MAXIMUM", g.math("MULTIPLY_ADD", rgb[i], 1 / 1.055, 0.055 / 1.055), 0.0), 2.4)
           for i in range(3)]
    store = g.node("GeometryNodeStoreNamedAttribute", (inst.outputs["Instances"],), data_type="FLOAT_COLOR",
                   domain="INSTANCE")
    store.inputs["Name"].default_value = VIEW_COLOR_ATTR
    g.links.new(g.node("FunctionNodeCombineColor", (*lin, 1.0)).outputs[0], store.inputs["Value"])
    real = g.node("GeometryNodeRealizeInstances", (store.outputs[0],))
    return real.outputs[0]


def _switch(g: _Graph, condition, if_false, if_true):
    sw = g.node("GeometryNodeSwitch", input_type="GEOMETRY")
    g.links.new(condition, sw.inputs["Switch"])
    g.links.new(if_false, sw.inputs["False"])
    g.links.new(if_true, sw.inputs["True"])
    return sw.outputs[0]


def _missing_card(g: _Graph, cam_parts):
    """A magenta card one unit in front of the render camera, wide enough to fill any view."""
    card = g.node("GeometryNodeMeshGrid", (200.0, 200.0, 2, 2))
    # Inputs by name: 4.5+ put a Mode menu before Translation.
    local = g.node("GeometryNodeTransform", (card.outputs["Mesh"],))
    local.inputs["Translation"].default_value = (0.0, 0.0, -1.0)
    world = g.node("GeometryNodeTransform", (local.outputs[0],))
    g.links.new(cam_parts["Translation"], world.inputs["Translation"])
    g.links.new(cam_parts["Rotation"], world.inputs["Rotation"])
    g.links.new(cam_parts["Scale"], world.inputs["Scale"])
    setmat = g.node("GeometryNodeSetMaterial", (world.outputs[0],))
    setmat.inputs["Material"].default_value = missing_cache_material()
    return setmat.outputs[0]


def preview_shape(name: str = PREVIEW_SHAPE):
    """The viewport splat: a triangle around the unit circle in xy, with an (active) colour attribute
    whose name a realised mesh inherits (only a mesh datablock can name one); in no scene."""
    r = 2.0  # circumradius of an equilateral triangle whose inscribed circle has radius 1
    verts = [(r * math.cos(a), r * math.sin(a), 0.0) for a in (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6)]
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], [(0, 1, 2)])
    attr = mesh.color_attributes.new(VIEW_COLOR_ATTR, "FLOAT_COLOR", "POINT")
    mesh.color_attributes.active_color = attr
    mesh.color_attributes.render_color_index = mesh.color_attributes.active_color_index
    return bpy.data.objects.new(name, mesh)


def missing_cache_material(name: str = MISSING_MATERIAL):
    """Flat magenta (emission in renders, the display colour in Solid mode)."""
    mat = bpy.data.materials.new(name)
    mat.diffuse_color = (*MISSING_RGB, 1.0)
    mat.use_nodes = True
    nodes = mat.node_tree.nodes
    nodes.clear()
    out = _node(nodes, "ShaderNodeOutputMaterial", (300, 0))
    emit = _node(nodes, "ShaderNodeEmission", (0, 0))
    emit.inputs["Color"].default_value = (*MISSING_RGB, 1.0)
    mat.node_tree.links.new(emit.outputs[0], out.inputs["Surface"])
    return mat


def build_material(names: AttrNames, name: str = MATERIAL):
    """Emission x Gaussian falloff over transparency; colours are sRGB-encoded like the backend's.

    Per-splat values are read from the instancer (renders: instances) plus the geometry (viewport:
    the realised mesh); the lookup that does not apply reads 0, so their sum is the value either way.
    """
    mat = bpy.data.materials.new(name)  # never reuse: the previous result may still use it
    mat.use_nodes = True
    if hasattr(mat, "surface_render_method"):
        mat.surface_render_method = "BLENDED"
    if hasattr(mat, "use_transparency_overlap"):
        mat.use_transparency_overlap = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    out = _node(nodes, "ShaderNodeOutputMaterial", (800, 0))
    # sigma = 0.5 (n_a u^2 + 2 n_b u v + n_c v^2): the conic of the projected covariance (see
    # build_splat_group); alpha = min(ALPHA_MAX, opacity exp(-sigma)), dropped below ALPHA_MIN like gsplat.
    uv = _node(nodes, "ShaderNodeAttribute", (-1200, 300), attribute_type="GEOMETRY", attribute_name=UV_ATTR)
    suv = _node(nodes, "ShaderNodeSeparateXYZ", (-1000, 300))
    links.new(uv.outputs["Vector"], suv.inputs[0])
    scon = _node(nodes, "ShaderNodeSeparateXYZ", (-1000, 100))
    links.new(_splat_attribute(nodes, links, CONIC_ATTR, "Vector", (-1200, 100)), scon.inputs[0])

    def math_node(op, a, b, loc):
        n = _node(nodes, "ShaderNodeMath", loc, operation=op)
        _wire(links, n, (a, b))
        return n.outputs[0]

    u, v = suv.outputs[0], suv.outputs[1]
    na, nb, nc = scon.outputs[0], scon.outputs[1], scon.outputs[2]
    quad = math_node("ADD", math_node("MULTIPLY", na, math_node("MULTIPLY", u, u, (-800, 400)), (-650, 400)),
                     math_node("MULTIPLY", nc, math_node("MULTIPLY", v, v, (-800, 250)), (-650, 250)), (-500, 350))
    cross = math_node("MULTIPLY", nb, math_node("MULTIPLY", u, v, (-800, 100)), (-650, 100))
    sigma = math_node("ADD", math_node("MULTIPLY", quad, 0.5, (-350, 350)), cross, (-250, 250))
    gauss = math_node("EXPONENT", math_node("MULTIPLY", sigma, -1.0, (-150, 250)), None, (-50, 250))
    opa = _splat_attribute(nodes, links, names.opacity, "Fac", (-300, 0))
    alpha = math_node("MULTIPLY", gauss, opa, (100, 200))
    cap = math_node("MINIMUM", alpha, ALPHA_MAX, (250, 200))
    keep = math_node("GREATER_THAN", alpha, ALPHA_MIN - 1e-7, (250, 350))
    gated = math_node("MULTIPLY", cap, keep, (400, 250))

    col = _splat_attribute(nodes, links, names.color, "Vector", (-1000, -200))
    # sRGB decode ((c + 0.055) / 1.055) ^ 2.4, so that a Standard view transform gives back the colour.
    lin = _node(nodes, "ShaderNodeVectorMath", (-800, -200), operation="MULTIPLY_ADD")
    links.new(col, lin.inputs[0])
    lin.inputs[1].default_value = (1 / 1.055,) * 3
    lin.inputs[2].default_value = (0.055 / 1.055,) * 3
    clamp = _node(nodes, "ShaderNodeVectorMath", (-600, -200), operation="MAXIMUM")
    links.new(lin.outputs[0], clamp.inputs[0])
    clamp.inputs[1].default_value = (0.0, 0.0, 0.0)
    gamma = _node(nodes, "ShaderNodeGamma", (-400, -200))
    links.new(clamp.outputs[0], gamma.inputs["Color"])
    gamma.inputs["Gamma"].default_value = 2.4
    emit = _node(nodes, "ShaderNodeEmission", (0, -200))
    links.new(gamma.outputs[0], emit.inputs["Color"])
    emit.inputs["Strength"].default_value = 1.0
    clear = _node(nodes, "ShaderNodeBsdfTransparent", (0, -50))
    mix = _node(nodes, "ShaderNodeMixShader", (400, 0))
    links.new(gated, mix.inputs["Fac"])
    links.new(clear.outputs[0], mix.inputs[1])
    links.new(emit.outputs[0], mix.inputs[2])
    links.new(mix.outputs[0], out.inputs["Surface"])
    return mat


def _splat_attribute(nodes, links, name: str, output: str, loc):
    """Instancer lookup + geometry lookup of one per-splat attribute (see build_material)."""
    inst = _node(nodes, "ShaderNodeAttribute", loc, attribute_type="INSTANCER", attribute_name=name)
    geom = _node(nodes, "ShaderNodeAttribute", (loc[0], loc[1] - 120), attribute_type="GEOMETRY", attribute_name=name)
    if output == "Fac":
        add = _node(nodes, "ShaderNodeMath", (loc[0] + 150, loc[1]), operation="ADD")
    else:
        add = _node(nodes, "ShaderNodeVectorMath", (loc[0] + 150, loc[1]), operation="ADD")
    links.new(inst.outputs[output], add.inputs[0])
    links.new(geom.outputs[output], add.inputs[1])
    return add.outputs[0]
