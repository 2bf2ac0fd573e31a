"""Blender side of the synthetic scenes: build, ray-cast and render one scene from a spec JSON.

Run as ``python -m backend.tools.synthetic.render_scene SPEC.json`` in an environment with ``bpy``; the
backend never imports this module. The spec (written by ``backend.tools.synthetic.scene``) holds the
terrain heights, texture velocities, camera and every render job; this script only executes it:

* ``raycast``: per pixel of the hero camera, the hit's camera-space depth, the object's pass
  index (1 = moving) and the hit point (world), saved as ``raycast.npz``;
* ``renders``: a list of {"file", "c2w_blender" (4x4), "time"} rendered with Cycles on the CPU.

Textures move by shifting the Mapping node's Location by ``-scale * velocity * time`` (object
space = world space here: the objects are neither rotated nor scaled), so a texture feature moves
at ``velocity`` world units per frame on its surface. Shading is noise-free emission (see
``_material``): Monte-Carlo grain would be a static pattern under a fixed sampling seed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _material(bpy, name: str, kind: str, params: dict, sun_dir: tuple = (0.0, 0.0, 1.0)):
    """Procedural material: noise texture -> colour ramp -> a noise-free emission shader.

    ``kind`` "emission" is self-lit (the sky); "lit" fakes Lambert sun shading inside the shader
    (strength = ambient + (1 - ambient) * max(N . sun, 0)) instead of using a real light. Why: a
    lit diffuse surface carries Monte-Carlo grain, and with Cycles' fixed sampling seed that grain
    is the SAME in every frame, a static pattern stuck to the pixel grid; at our sub-pixel
    per-frame speeds optical flow locks onto it and the water seemed to barely move (0.33 px
    measured vs 0.86 px true per frame on seed 3). Emission has no light sampling, so no grain.
    """
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nt = mat.node_tree
    for n in list(nt.nodes):
        nt.nodes.remove(n)
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    coord = nt.nodes.new("ShaderNodeTexCoord")
    mapping = nt.nodes.new("ShaderNodeMapping")
    mapping.name = "Mapping"
    mapping.inputs["Scale"].default_value = tuple(params.get("mapping_scale", (1.0, 1.0, 1.0)))
    noise = nt.nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = params["scale"]
    noise.inputs["Detail"].default_value = params.get("detail", 4.0)
    noise.inputs["Roughness"].default_value = params.get("roughness", 0.55)
    if "W" in noise.inputs:
        noise.noise_dimensions = "3D"
    ramp = nt.nodes.new("ShaderNodeValToRGB")
    els = ramp.color_ramp.elements
    els[0].position, els[1].position = params["ramp_pos"]
    els[0].color = (*params["color_a"], 1.0)
    els[1].color = (*params["color_b"], 1.0)
    nt.links.new(coord.outputs["Object"], mapping.inputs["Vector"])
    nt.links.new(mapping.outputs["Vector"], noise.inputs["Vector"])
    nt.links.new(noise.outputs["Fac"], ramp.inputs["Fac"])
    sh = nt.nodes.new("ShaderNodeEmission")
    nt.links.new(ramp.outputs["Color"], sh.inputs["Color"])
    strength = float(params.get("strength", 1.0))
    if kind == "lit":
        ambient = float(params.get("ambient", 0.35))
        geo = nt.nodes.new("ShaderNodeNewGeometry")
        dot = nt.nodes.new("ShaderNodeVectorMath")
        dot.operation = "DOT_PRODUCT"
        dot.inputs[1].default_value = tuple(sun_dir)
        nt.links.new(geo.outputs["Normal"], dot.inputs[0])
        clamp = nt.nodes.new("ShaderNodeMath")
        clamp.operation = "MAXIMUM"
        clamp.inputs[1].default_value = 0.0
        nt.links.new(dot.outputs["Value"], clamp.inputs[0])
        shade = nt.nodes.new("ShaderNodeMath")
        shade.operation = "MULTIPLY_ADD"
        shade.inputs[1].default_value = strength * (1.0 - ambient)
        shade.inputs[2].default_value = strength * ambient
        nt.links.new(clamp.outputs["Value"], shade.inputs[0])
        nt.links.new(shade.outputs["Value"], sh.inputs["Strength"])
    elif kind == "emission":
        sh.inputs["Strength"].default_value = strength
    else:
        raise ValueError(f"unknown synthetic shader kind '{kind}'")
    nt.links.new(sh.outputs[0], out.inputs["Surface"])
    return mat


def _grid_mesh(bpy, name: str, grid: np.ndarray):
    """A quad mesh from a (ny, nx, 3) grid of world-space vertices."""
    ny, nx = grid.shape[:2]
    verts = grid.reshape(-1, 3).tolist()
    faces = []
    for i in range(ny - 1):
        for j in range(nx - 1):
            a = i * nx + j
            faces.append((a, a + 1, a + nx + 1, a + nx))
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], faces)
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def build(bpy, spec: dict):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = int(spec["samples"])
    scene.cycles.use_denoising = False
    scene.cycles.seed = int(spec["seed"])
    scene.cycles.max_bounces = 0  # every surface is emissive (see _material): nothing to bounce
    scene.render.threads_mode = "FIXED"
    scene.render.threads = int(spec.get("threads", 2))
    scene.render.resolution_x, scene.render.resolution_y = spec["width"], spec["height"]
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.view_settings.view_transform = "Standard"
    scene.render.film_transparent = False
    world = bpy.data.worlds.new("World")
    world.color = (0.0, 0.0, 0.0)
    scene.world = world

    from mathutils import Euler, Vector

    sun_dir = tuple(Euler(spec["sun"]["rotation"], "XYZ").to_matrix() @ Vector((0.0, 0.0, 1.0)))  # towards the sun
    terrain = _grid_mesh(bpy, "terrain", np.array(spec["terrain"]["grid"]))
    terrain.data.materials.append(_material(bpy, "terrain", "lit", spec["materials"]["terrain"], sun_dir))
    terrain.pass_index = 0
    movers = {}
    for name in ("water", "sky"):
        o = spec[name]
        obj = _grid_mesh(bpy, name, np.array(o["grid"]))
        kind = "emission" if name == "sky" else "lit"
        obj.data.materials.append(_material(bpy, name, kind, spec["materials"][name], sun_dir))
        obj.pass_index = 1
        movers[name] = (obj, np.array(o["velocity"], float))

    for i, rock in enumerate(spec.get("rocks", [])):  # still boulders: static, like the terrain
        obj = _grid_mesh(bpy, f"rock_{i}", np.array(rock["grid"]))
        obj.data.materials.append(_material(bpy, f"rock_{i}", "lit", spec["materials"]["rock"], sun_dir))
        obj.pass_index = 0

    cam_data = bpy.data.cameras.new("cam")
    cam_data.lens = spec["camera"]["lens"]
    cam_data.sensor_width = spec["camera"]["sensor"]
    cam_data.sensor_fit = "HORIZONTAL"
    cam_data.clip_start, cam_data.clip_end = 0.05, 1000.0
    cam = bpy.data.objects.new("cam", cam_data)
    scene.collection.objects.link(cam)
    scene.camera = cam
    return scene, cam, movers


def set_time(movers: dict, time: float) -> None:
    """Shift each mover's texture so a feature travels ``vel * time`` world units.

    The Mapping node (type POINT) computes ``S * p + L``; the feature at texture coordinate c sits
    at ``p = (c - L) / S``, so ``L = -S * vel * time`` moves it by exactly ``vel * time``.
    """
    for obj, vel in movers.values():
        node = obj.data.materials[0].node_tree.nodes["Mapping"]
        scale = np.array(node.inputs["Scale"].default_value[:], float)
        node.inputs["Location"].default_value = tuple((-scale * vel * time).tolist())


def raycast(bpy, scene, spec: dict) -> dict:
    """Depth (camera z), pass index and world hit point for every hero pixel centre."""
    from mathutils import Vector

    W, H = spec["width"], spec["height"]
    K = np.array(spec["K"])
    c2w = np.array(spec["hero_c2w_blender"])
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    rays_cv = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)  # z = 1
    rays_bl = rays_cv * np.array([1.0, -1.0, -1.0])  # OpenCV camera -> Blender camera axes
    dirs = rays_bl @ c2w[:3, :3].T
    origin = Vector(c2w[:3, 3].tolist())
    depsgraph = bpy.context.evaluated_depsgraph_get()
    depth = np.full((H, W), np.inf)
    index = np.zeros((H, W), np.int32)
    hit = np.zeros((H, W, 3))
    for y in range(H):
        for x in range(W):
            d = dirs[y, x]
            n = float(np.linalg.norm(d))
            ok, loc, _nrm, _fi, obj, _m = scene.ray_cast(depsgraph, origin, Vector((d / n).tolist()))
            if ok:
                p = np.array(loc)
                hit[y, x] = p
                depth[y, x] = float((p - c2w[:3, 3]) @ (-c2w[:3, 2]))  # along the view axis (Blender -Z)
                index[y, x] = obj.pass_index
    return {"depth": depth, "index": index, "hit": hit}


def main(argv: list[str]) -> int:
    import bpy

    spec_path = Path(argv[0])
    spec = json.loads(spec_path.read_text())
    out = spec_path.parent
    scene, cam, movers = build(bpy, spec)
    from mathutils import Matrix

    cam.matrix_world = Matrix(spec["hero_c2w_blender"])
    set_time(movers, 0.0)
    rc = raycast(bpy, scene, spec)
    np.savez(out / "raycast.npz", **rc)
    for job in spec["renders"]:
        cam.matrix_world = Matrix(job["c2w_blender"])
        set_time(movers, float(job["time"]))
        scene.render.filepath = str(out / job["file"])
        bpy.ops.render.render(write_still=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
