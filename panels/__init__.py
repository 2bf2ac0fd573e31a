"""Sidebar panels, tab "Loopscape", in the order an artist works: Photo, Motion, Camera, Run, Result."""
from __future__ import annotations

import bpy

from ..blender_addon.paths import missing_caches
from ..blender_addon.props import PATH_ITEMS

CATEGORY = "Loopscape"


def _props(context):
    return context.scene.loopscape


class LOOPSCAPE_UL_hints(bpy.types.UIList):
    def draw_item(self, _context, layout, _data, item, _icon, _active_data, _active_propname, index):
        row = layout.row(align=True)
        row.label(text=f"{index + 1}")
        row.prop(item, "start", text="")
        row.prop(item, "end", text="")
        row.prop(item, "speed", text="px/f")


class LOOPSCAPE_UL_anchors(bpy.types.UIList):
    def draw_item(self, _context, layout, _data, item, _icon, _active_data, _active_propname, index):
        row = layout.row(align=True)
        row.label(text=f"{index + 1}")
        row.prop(item, "co", text="")


class _Sidebar:
    bl_region_type = "UI"
    bl_category = CATEGORY

    @classmethod
    def poll(cls, context):
        return context.scene is not None and hasattr(context.scene, "loopscape")


def draw_photo(layout, context):
    props = _props(context)
    layout.operator("loopscape.setup_photo", icon="IMAGE_DATA")
    if props.photo is not None:
        layout.label(text=f"{props.photo.name}: {props.photo.size[0]} x {props.photo.size[1]}")
    layout.prop(props, "hero_camera")
    layout.prop(props, "scene_scale")


def draw_motion(layout, context):
    props = _props(context)
    col = layout.column(align=True)
    row = col.row(align=True)
    row.operator("loopscape.mask_create", icon="BRUSH_DATA")
    row.operator("loopscape.mask_import", icon="IMPORT", text="Import")
    row.operator("loopscape.mask_clear", icon="X", text="")
    col.prop(props, "mask", text="")
    layout.label(text="Hint arrows (photo pixels):")
    row = layout.row()
    row.template_list("LOOPSCAPE_UL_hints", "", props, "hints", props, "hint_index", rows=3)
    sub = row.column(align=True)
    sub.operator("loopscape.hint_add", icon="ADD", text="")
    sub.operator("loopscape.hint_remove", icon="REMOVE", text="")
    if context.area is not None and context.area.type == "IMAGE_EDITOR":
        sub.operator("loopscape.hint_draw", icon="GREASEPENCIL", text="")
    layout.label(text="Anchors:")
    row = layout.row()
    row.template_list("LOOPSCAPE_UL_anchors", "", props, "anchors", props, "anchor_index", rows=2)
    sub = row.column(align=True)
    sub.operator("loopscape.anchor_add", icon="ADD", text="")
    sub.operator("loopscape.anchor_remove", icon="REMOVE", text="")
    layout.prop(props, "speed")
    layout.prop(props, "snap_mask")
    layout.prop(props, "show_overlay")


class LOOPSCAPE_PT_photo(_Sidebar, bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_label = "Photo"

    def draw(self, context):
        draw_photo(self.layout, context)


class LOOPSCAPE_PT_motion(_Sidebar, bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_label = "Motion"

    def draw(self, context):
        draw_motion(self.layout, context)


class LOOPSCAPE_PT_image_motion(_Sidebar, bpy.types.Panel):
    bl_space_type = "IMAGE_EDITOR"
    bl_label = "Motion"

    def draw(self, context):
        draw_motion(self.layout, context)


class LOOPSCAPE_PT_camera(_Sidebar, bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_label = "Camera"

    def draw(self, context):
        layout = self.layout
        scene = context.scene
        layout.label(text=f"Shot camera: {scene.camera.name if scene.camera else '(none)'}")
        layout.label(text=f"Frames {scene.frame_start}-{scene.frame_start + _props(context).frames - 1}")
        grid = layout.grid_flow(columns=2, align=True)
        for ident, label, _description in PATH_ITEMS:
            grid.operator("loopscape.camera_preset", text=label).preset = ident


class LOOPSCAPE_PT_run(_Sidebar, bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_label = "Run"

    def draw(self, context):
        layout = self.layout
        props = _props(context)
        col = layout.column()
        col.enabled = not props.running
        col.prop(props, "quality")
        col.prop(props, "frames")
        col.prop(props, "device")
        col.prop(props, "max_side")
        row = layout.row(align=True)
        row.scale_y = 1.4
        row.operator("loopscape.run", icon="PLAY")
        row.operator("loopscape.cancel", icon="CANCEL")
        if props.running or props.stage:
            if hasattr(layout, "progress"):
                layout.progress(factor=props.progress, type="BAR", text=f"{props.stage} {props.progress:.0%}")
            else:
                layout.prop(props, "progress", text=props.stage, slider=True)
        box = None
        for line in props.log_tail.splitlines()[-4:]:
            box = box or layout.box()
            box.label(text=line)
        if props.last_error:
            err = layout.box()
            err.alert = True
            for chunk in _wrap(props.last_error, 48):
                err.label(text=chunk)


class LOOPSCAPE_PT_result(_Sidebar, bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_label = "Result"

    def draw(self, context):
        layout = self.layout
        props = _props(context)
        layout.operator("loopscape.import_result", icon="IMPORT",
                        text="Re-import Result" if props.result_object else "Import Result")
        missing = missing_caches() if props.result_object is not None else []
        if missing:  # the shot would render the magenta "missing cache" card
            box = layout.box()
            box.alert = True
            for chunk in _wrap(f"Point cache missing: {missing[0][1]}", 48):
                box.label(text=chunk, icon="ERROR" if chunk.startswith("Point") else "NONE")
        if props.result_dir:
            layout.label(text=props.result_dir)
            _draw_preview(layout, context.scene)
        row = layout.row(align=True)
        row.operator("loopscape.play_video", icon="FILE_MOVIE", text="Video")
        row.operator("loopscape.open_output", icon="FILE_FOLDER", text="Folder")
        if props.result_object is not None:
            layout.prop(props, "result_object", text="")


def _draw_preview(layout, scene) -> None:
    """The result's contact sheet (preview.png) as a large icon, and a button that opens it full size."""
    from ..blender_addon.result_preview import current_preview

    icon, path = current_preview(scene)
    if icon:
        layout.template_icon(icon_value=icon, scale=10.0)
    if path is not None:
        layout.operator("wm.path_open", text="Open Preview", icon="IMAGE_DATA").filepath = str(path)


def _wrap(text: str, width: int) -> list[str]:
    out, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return out + ([line] if line else [])


classes = (LOOPSCAPE_UL_hints, LOOPSCAPE_UL_anchors, LOOPSCAPE_PT_photo, LOOPSCAPE_PT_motion,
           LOOPSCAPE_PT_image_motion, LOOPSCAPE_PT_camera, LOOPSCAPE_PT_run, LOOPSCAPE_PT_result)
