"""Motion inputs: the mask (create, import, clear), hint arrows and anchor pins in photo pixels."""
from __future__ import annotations

import os

import bpy
import numpy as np
from bpy.props import FloatProperty, FloatVectorProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from ..blender_addon import mask_io
from ..blender_addon.compat import path_options
from ..contract import LoopscapeError
from .photo import show_in_image_editors

MASK_NAME = "Loopscape Mask"


def _photo_size(context):
    photo = context.scene.loopscape.photo
    return (photo.size[0], photo.size[1]) if photo is not None else (0, 0)


def ensure_mask_image(context):
    """The scene's mask image at the photo's size (black when new)."""
    props = context.scene.loopscape
    w, h = _photo_size(context)
    img = props.mask
    if img is None or tuple(img.size) != (w, h):
        img = bpy.data.images.new(MASK_NAME, w, h, alpha=False)
        img.generated_color = (0.0, 0.0, 0.0, 1.0)
        img.colorspace_settings.is_data = True
        props.mask = img
    return img


def set_mask_pixels(img, mask: np.ndarray) -> None:
    img.pixels.foreach_set(mask_io.mask_to_pixels(mask))
    img.update()
    try:
        img.pack()  # a generated image is lost on save unless packed
    except RuntimeError:
        pass


class _NeedsPhoto:
    @classmethod
    def poll(cls, context):
        return context.scene is not None and context.scene.loopscape.photo is not None


class LOOPSCAPE_OT_mask_create(_NeedsPhoto, bpy.types.Operator):
    """Create a black mask at the photo's size and open it for painting (white = moves)"""

    bl_idname = "loopscape.mask_create"
    bl_label = "Create Mask"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        img = ensure_mask_image(context)
        w, h = img.size
        set_mask_pixels(img, np.zeros((h, w), dtype=bool))
        show_in_image_editors(context, img, paint=True)
        if not bpy.app.background:
            brush = getattr(context.tool_settings.image_paint, "brush", None)
            if brush is not None and hasattr(brush, "color"):
                brush.color = (1.0, 1.0, 1.0)
        self.report({"INFO"}, "Mask created: paint white where the photo moves")
        return {"FINISHED"}


class LOOPSCAPE_OT_mask_import(_NeedsPhoto, bpy.types.Operator, ImportHelper):
    """Import a mask image (white = moves) or a labelme JSON (polygons = mask, lines = hint arrows, points = anchors)"""

    bl_idname = "loopscape.mask_import"
    bl_label = "Import Mask"
    bl_options = {"REGISTER", "UNDO"}

    filter_glob: StringProperty(default="*.png;*.jpg;*.jpeg;*.tif;*.tiff;*.bmp;*.exr;*.json", options={"HIDDEN"})
    filepath: StringProperty(subtype="FILE_PATH", options=path_options())

    def execute(self, context):
        path = bpy.path.abspath(self.filepath)
        if not os.path.isfile(path):
            self.report({"ERROR"}, f"Mask file '{path}' does not exist.")
            return {"CANCELLED"}
        props = context.scene.loopscape
        w, h = _photo_size(context)
        if path.lower().endswith(".json"):
            try:
                mask, hints, anchors = mask_io.read_labelme(path, w, h)
            except LoopscapeError as exc:
                self.report({"ERROR"}, str(exc))
                return {"CANCELLED"}
            # A labelme file describes the whole motion set: it replaces earlier arrows and pins.
            props.hints.clear()
            props.anchors.clear()
            for start, end in hints:
                item = props.hints.add()
                item.start, item.end = start, end
            for co in anchors:
                props.anchors.add().co = co
            extra = f", {len(hints)} hint arrows, {len(anchors)} anchors"
        else:
            try:
                src = bpy.data.images.load(path, check_existing=False)
            except RuntimeError as exc:
                self.report({"ERROR"}, f"Blender cannot read '{path}': {exc}")
                return {"CANCELLED"}
            try:
                if tuple(src.size) != (w, h):
                    src.scale(w, h)
                px = np.empty(w * h * src.channels, dtype=np.float32)
                src.pixels.foreach_get(px)
                mask = mask_io.pixels_to_mask(px, w, h, src.channels)
            finally:
                bpy.data.images.remove(src)
            extra = ""
        img = ensure_mask_image(context)
        set_mask_pixels(img, mask)
        show_in_image_editors(context, img)
        self.report({"INFO"}, f"Mask imported: {int(mask.sum())} moving pixels{extra}")
        return {"FINISHED"}


class LOOPSCAPE_OT_mask_clear(bpy.types.Operator):
    """Remove the motion mask"""

    bl_idname = "loopscape.mask_clear"
    bl_label = "Clear Mask"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        props = context.scene.loopscape
        img = props.mask
        props.mask = None
        if img is not None and img.users == 0:
            bpy.data.images.remove(img)
        return {"FINISHED"}


def _remove_selected(op, props, collection: str, index_prop: str, what: str) -> set[str]:
    """Remove item ``op.index`` (or the selected one) from a list property and keep a valid selection."""
    items = getattr(props, collection)
    i = op.index if op.index >= 0 else getattr(props, index_prop)
    if not 0 <= i < len(items):
        op.report({"WARNING"}, f"No {what} selected")
        return {"CANCELLED"}
    items.remove(i)
    setattr(props, index_prop, max(0, min(i, len(items) - 1)))
    return {"FINISHED"}


class LOOPSCAPE_OT_hint_add(_NeedsPhoto, bpy.types.Operator):
    """Add a motion arrow (photo pixels, y down); without coordinates it starts at the photo centre"""

    bl_idname = "loopscape.hint_add"
    bl_label = "Add Hint Arrow"
    bl_options = {"REGISTER", "UNDO"}

    start: FloatVectorProperty(size=2, default=(-1.0, -1.0))
    end: FloatVectorProperty(size=2, default=(-1.0, -1.0))
    speed: FloatProperty(default=0.0, min=0.0)

    def execute(self, context):
        props = context.scene.loopscape
        w, h = _photo_size(context)
        start = tuple(self.start) if min(self.start) >= 0 else (w / 2, h / 2)
        end = tuple(self.end) if min(self.end) >= 0 else (start[0] + w / 10, start[1])
        item = props.hints.add()
        item.start, item.end, item.speed = start, end, self.speed
        props.hint_index = len(props.hints) - 1
        return {"FINISHED"}


class LOOPSCAPE_OT_hint_remove(bpy.types.Operator):
    """Remove the selected hint arrow"""

    bl_idname = "loopscape.hint_remove"
    bl_label = "Remove Hint Arrow"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(default=-1)

    def execute(self, context):
        return _remove_selected(self, context.scene.loopscape, "hints", "hint_index", "hint arrow")


class LOOPSCAPE_OT_anchor_add(_NeedsPhoto, bpy.types.Operator):
    """Add an anchor pin (photo pixels, y down): the photo stays still there"""

    bl_idname = "loopscape.anchor_add"
    bl_label = "Add Anchor"
    bl_options = {"REGISTER", "UNDO"}

    co: FloatVectorProperty(size=2, default=(-1.0, -1.0))

    def execute(self, context):
        props = context.scene.loopscape
        w, h = _photo_size(context)
        item = props.anchors.add()
        item.co = tuple(self.co) if min(self.co) >= 0 else (w / 2, h / 2)
        props.anchor_index = len(props.anchors) - 1
        return {"FINISHED"}


class LOOPSCAPE_OT_anchor_remove(bpy.types.Operator):
    """Remove the selected anchor pin"""

    bl_idname = "loopscape.anchor_remove"
    bl_label = "Remove Anchor"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(default=-1)

    def execute(self, context):
        return _remove_selected(self, context.scene.loopscape, "anchors", "anchor_index", "anchor")


class LOOPSCAPE_OT_hint_draw(_NeedsPhoto, bpy.types.Operator):
    """Drag in the Image Editor to draw a hint arrow (Shift-click: anchor pin)"""

    bl_idname = "loopscape.hint_draw"
    bl_label = "Draw Hint Arrow"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return (super().poll(context) and context.area is not None and context.area.type == "IMAGE_EDITOR")

    def _photo_px(self, context, event):
        u, v = context.region.view2d.region_to_view(event.mouse_region_x, event.mouse_region_y)
        w, h = _photo_size(context)
        return (u * w, (1.0 - v) * h)

    def invoke(self, context, event):
        self.start = None
        context.window_manager.modal_handler_add(self)
        context.workspace.status_text_set("Drag to draw a hint arrow; Shift-click adds an anchor; Esc ends")
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        props = context.scene.loopscape
        if event.type in {"ESC", "RIGHTMOUSE"}:
            context.workspace.status_text_set(None)
            return {"FINISHED"}
        if event.type == "LEFTMOUSE" and event.value == "PRESS":
            if event.shift:
                props.anchors.add().co = self._photo_px(context, event)
            else:
                self.start = self._photo_px(context, event)
        elif event.type == "LEFTMOUSE" and event.value == "RELEASE" and self.start is not None:
            end = self._photo_px(context, event)
            if (end[0] - self.start[0]) ** 2 + (end[1] - self.start[1]) ** 2 > 4.0:
                item = props.hints.add()
                item.start, item.end = self.start, end
                props.hint_index = len(props.hints) - 1
            self.start = None
        context.area.tag_redraw()
        return {"RUNNING_MODAL"} if event.type != "MOUSEMOVE" else {"PASS_THROUGH"}


classes = (LOOPSCAPE_OT_mask_create, LOOPSCAPE_OT_mask_import, LOOPSCAPE_OT_mask_clear, LOOPSCAPE_OT_hint_add,
           LOOPSCAPE_OT_hint_remove, LOOPSCAPE_OT_anchor_add, LOOPSCAPE_OT_anchor_remove, LOOPSCAPE_OT_hint_draw)
