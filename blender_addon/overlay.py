"""Draw hint arrows and anchor pins on the photo in the Image Editor (UI sessions only)."""
from __future__ import annotations

import math

import bpy

_HANDLES: list = []


def _draw() -> None:
    import gpu
    from gpu_extras.batch import batch_for_shader

    context = bpy.context
    scene, space, region = context.scene, context.space_data, context.region
    if scene is None or not hasattr(scene, "loopscape") or space is None or region is None:
        return
    props = scene.loopscape
    if not props.show_overlay or props.photo is None or space.image not in (props.photo, props.mask):
        return
    w, h = props.photo.size

    def to_region(x, y):
        return region.view2d.view_to_region(x / w, 1.0 - y / h, clip=False)

    arrows, pins = [], []
    for hint in props.hints:
        a, b = to_region(*hint.start), to_region(*hint.end)
        arrows += [a, b]
        ang = math.atan2(b[1] - a[1], b[0] - a[0])
        for d in (2.6, -2.6):  # arrow head
            arrows += [b, (b[0] + 10 * math.cos(ang + d), b[1] + 10 * math.sin(ang + d))]
    for anchor in props.anchors:
        cx, cy = to_region(*anchor.co)
        for k in range(12):
            t0, t1 = 2 * math.pi * k / 12, 2 * math.pi * (k + 1) / 12
            pins += [(cx + 6 * math.cos(t0), cy + 6 * math.sin(t0)), (cx + 6 * math.cos(t1), cy + 6 * math.sin(t1))]
    shader = gpu.shader.from_builtin("UNIFORM_COLOR")
    gpu.state.line_width_set(2.0)
    gpu.state.blend_set("ALPHA")
    for verts, colour in ((arrows, (1.0, 0.55, 0.1, 1.0)), (pins, (0.2, 0.8, 1.0, 1.0))):
        if verts:
            batch = batch_for_shader(shader, "LINES", {"pos": verts})
            shader.uniform_float("color", colour)
            batch.draw(shader)
    gpu.state.line_width_set(1.0)
    gpu.state.blend_set("NONE")


def register() -> None:
    if bpy.app.background:
        return
    _HANDLES.append(bpy.types.SpaceImageEditor.draw_handler_add(_draw, (), "WINDOW", "POST_PIXEL"))


def unregister() -> None:
    while _HANDLES:
        bpy.types.SpaceImageEditor.draw_handler_remove(_HANDLES.pop(), "WINDOW")
