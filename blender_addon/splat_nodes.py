"""Geometry Nodes and material that draw Gaussian splats from point attributes.

Each point becomes a flat quad spanning the Gaussian's two largest axes (rotation from the
quaternion attribute, size from the scales), and the material fades it with exp(-r^2/2) times
the opacity, like a 3DGS rasteriser does for a flat Gaussian. Everything lives in the .blend, so a
render farm needs neither the add-on nor the backend.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import bpy

SPLAT_GROUP = "Loopscape Splats"
FRAME_GROUP = "Loopscape Frame Select"
MATERIAL = "Loopscape Splat"
EXTENT = 3.0  # quad half-size in standard deviations (gsplat cuts at <= 3.33 sigma)
UV_ATTR = "ls_uv"
FRAME_ATTR = "ls_frame"


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
    old = bpy.data.node_groups.get(name)
    if old is not None:
        bpy.data.node_groups.remove(old)
    ng = bpy.data.node_groups.new(name, "GeometryNodeTree")
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


def build_splat_group(names: AttrNames, material, name: str = SPLAT_GROUP):
    """Points -> instanced quads, oriented and scaled per Gaussian, with the splat material."""
    ng = _new_group(name)
    size = ng.interface.new_socket("Size", in_out="INPUT", socket_type="NodeSocketFloat")
    size.default_value = 1.0
    size.min_value = 0.0
    nodes, links = ng.nodes, ng.links
    gin = _node(nodes, "NodeGroupInput", (-1400, 0))
    gout = _node(nodes, "NodeGroupOutput", (600, 0))

    # The quad: 2x2 units in the xy plane; its vertex positions double as the falloff coordinate.
    grid = _node(nodes, "GeometryNodeMeshGrid", (-600, 300))
    grid.inputs["Size X"].default_value = 2.0
    grid.inputs["Size Y"].default_value = 2.0
    grid.inputs["Vertices X"].default_value = 2
    grid.inputs["Vertices Y"].default_value = 2
    pos = _node(nodes, "GeometryNodeInputPosition", (-600, 100))
    store = _node(nodes, "GeometryNodeStoreNamedAttribute", (-400, 300), data_type="FLOAT_VECTOR", domain="POINT")
    store.inputs["Name"].default_value = UV_ATTR
    links.new(grid.outputs["Mesh"], store.inputs["Geometry"])
    links.new(pos.outputs["Position"], store.inputs["Value"])
    setmat = _node(nodes, "GeometryNodeSetMaterial", (-200, 300))
    setmat.inputs["Material"].default_value = material
    links.new(store.outputs["Geometry"], setmat.inputs["Geometry"])

    # Gaussian frame: rotation and per-axis standard deviations.
    rot = _node(nodes, "GeometryNodeInputNamedAttribute", (-1400, -300), data_type="QUATERNION")
    rot.inputs["Name"].default_value = names.orientation
    scl = _node(nodes, "GeometryNodeInputNamedAttribute", (-1400, -500), data_type="FLOAT_VECTOR")
    scl.inputs["Name"].default_value = names.scales
    sep = _node(nodes, "ShaderNodeSeparateXYZ", (-1200, -500))
    links.new(scl.outputs["Attribute"], sep.inputs[0])
    x, y, z = sep.outputs[0], sep.outputs[1], sep.outputs[2]

    def less_eq(a, b, loc):
        c = _node(nodes, "FunctionNodeCompare", loc, data_type="FLOAT", operation="LESS_EQUAL")
        links.new(a, c.inputs["A"])
        links.new(b, c.inputs["B"])
        return c.outputs[0]

    def both(a, b, loc):
        m = _node(nodes, "FunctionNodeBooleanMath", loc, operation="AND")
        links.new(a, m.inputs[0])
        links.new(b, m.inputs[1])
        return m.outputs[0]

    x_min = both(less_eq(x, y, (-1000, -400)), less_eq(x, z, (-1000, -550)), (-850, -450))
    y_min = less_eq(y, z, (-1000, -700))

    def combine(a, b, c, loc):
        n = _node(nodes, "ShaderNodeCombineXYZ", loc)
        links.new(a, n.inputs[0])
        links.new(b, n.inputs[1])
        links.new(c, n.inputs[2])
        return n.outputs[0]

    def switch(kind, cond, off, on, loc):
        s = _node(nodes, "GeometryNodeSwitch", loc, input_type=kind)
        links.new(cond, s.inputs[0])
        links.new(off, s.inputs[1])
        links.new(on, s.inputs[2])
        return s.outputs[0]

    def euler(ex, ey, loc):
        e = _node(nodes, "FunctionNodeEulerToRotation", loc)
        e.inputs[0].default_value = (ex, ey, 0.0)
        return e.outputs[0]

    def rotate_local(base, by, loc):
        r = _node(nodes, "FunctionNodeRotateRotation", loc, rotation_space="LOCAL")
        links.new(base, r.inputs[0])
        links.new(by, r.inputs[1])
        return r.outputs[0]

    # Quad normal along the smallest axis: x smallest -> quad spans (z, y); y smallest -> (x, z).
    ident = euler(0.0, 0.0, (-850, -800))
    pre_y = switch("ROTATION", y_min, ident, euler(math.pi / 2, 0.0, (-850, -900)), (-650, -800))
    pre = switch("ROTATION", x_min, pre_y, euler(0.0, -math.pi / 2, (-650, -950)), (-450, -850))
    rotation = rotate_local(rot.outputs["Attribute"], pre, (-250, -400))
    sc_y = switch("VECTOR", y_min, combine(x, y, z, (-850, -1050)), combine(x, z, y, (-850, -1150)), (-650, -1100))
    sc = switch("VECTOR", x_min, sc_y, combine(z, y, x, (-650, -1250)), (-450, -1150))
    k = _node(nodes, "ShaderNodeMath", (-450, -1350), operation="MULTIPLY")
    k.inputs[0].default_value = EXTENT
    links.new(gin.outputs["Size"], k.inputs[1])
    scaled = _node(nodes, "ShaderNodeVectorMath", (-250, -1150), operation="SCALE")
    links.new(sc, scaled.inputs[0])
    links.new(k.outputs[0], scaled.inputs["Scale"])

    inst = _node(nodes, "GeometryNodeInstanceOnPoints", (200, 0))
    links.new(gin.outputs["Geometry"], inst.inputs["Points"])
    links.new(setmat.outputs["Geometry"], inst.inputs["Instance"])
    links.new(rotation, inst.inputs["Rotation"])
    links.new(scaled.outputs[0], inst.inputs["Scale"])
    links.new(inst.outputs["Instances"], gout.inputs["Geometry"])
    ng["loopscape_names"] = [names.color, names.opacity, names.scales, names.orientation]
    return ng


def build_material(names: AttrNames, name: str = MATERIAL):
    """Emission x Gaussian falloff over transparency; colours are sRGB-encoded like the backend's."""
    mat = bpy.data.materials.get(name) or bpy.data.materials.new(name)
    mat.use_nodes = True
    if hasattr(mat, "surface_render_method"):
        mat.surface_render_method = "BLENDED"
    if hasattr(mat, "use_transparency_overlap"):
        mat.use_transparency_overlap = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    out = _node(nodes, "ShaderNodeOutputMaterial", (800, 0))
    uv = _node(nodes, "ShaderNodeAttribute", (-1000, 200), attribute_type="GEOMETRY", attribute_name=UV_ATTR)
    r2 = _node(nodes, "ShaderNodeVectorMath", (-800, 200), operation="DOT_PRODUCT")
    links.new(uv.outputs["Vector"], r2.inputs[0])
    links.new(uv.outputs["Vector"], r2.inputs[1])
    expo = _node(nodes, "ShaderNodeMath", (-600, 200), operation="MULTIPLY")
    expo.inputs[1].default_value = -0.5 * EXTENT * EXTENT
    links.new(r2.outputs["Value"], expo.inputs[0])
    gauss = _node(nodes, "ShaderNodeMath", (-400, 200), operation="EXPONENT")
    links.new(expo.outputs[0], gauss.inputs[0])
    opa = _node(nodes, "ShaderNodeAttribute", (-600, 0), attribute_type="INSTANCER", attribute_name=names.opacity)
    alpha = _node(nodes, "ShaderNodeMath", (-200, 100), operation="MULTIPLY", use_clamp=True)
    links.new(gauss.outputs[0], alpha.inputs[0])
    links.new(opa.outputs["Fac"], alpha.inputs[1])
    cap = _node(nodes, "ShaderNodeMath", (0, 100), operation="MINIMUM")
    cap.inputs[1].default_value = 0.999
    links.new(alpha.outputs[0], cap.inputs[0])
    # Like gsplat, drop contributions below 1/255.
    keep = _node(nodes, "ShaderNodeMath", (0, 250), operation="GREATER_THAN")
    keep.inputs[1].default_value = 1.0 / 255.0
    links.new(alpha.outputs[0], keep.inputs[0])
    gated = _node(nodes, "ShaderNodeMath", (200, 150), operation="MULTIPLY")
    links.new(cap.outputs[0], gated.inputs[0])
    links.new(keep.outputs[0], gated.inputs[1])

    col = _node(nodes, "ShaderNodeAttribute", (-1000, -200), attribute_type="INSTANCER", attribute_name=names.color)
    # sRGB decode ((c + 0.055) / 1.055) ^ 2.4, so that a Standard view transform gives back the colour.
    lin = _node(nodes, "ShaderNodeVectorMath", (-800, -200), operation="MULTIPLY_ADD")
    links.new(col.outputs["Color"], lin.inputs[0])
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
    links.new(gated.outputs[0], mix.inputs["Fac"])
    links.new(clear.outputs[0], mix.inputs[1])
    links.new(emit.outputs[0], mix.inputs[2])
    links.new(mix.outputs[0], out.inputs["Surface"])
    return mat
