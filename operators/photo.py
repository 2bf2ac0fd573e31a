"""Photo set-up: load the photo, build the hero camera that sees exactly it."""
from __future__ import annotations

import math
import os

import bpy
from bpy.props import StringProperty
from bpy_extras.io_utils import ImportHelper

from ..blender_addon.compat import path_options
from ..contract.camera import DEFAULT_FOV_DEG, focal_from_fov

HERO_NAME = "Loopscape Hero"


def setup_hero(scene, image):
    """Create or update the hero camera: aspect and field of view of the photo, photo as background."""
    props = scene.loopscape
    w, h = image.size
    hero = props.hero_camera if props.hero_camera is not None and props.hero_camera.name in scene.objects else None
    if hero is None:
        data = bpy.data.cameras.new(HERO_NAME)
        hero = bpy.data.objects.new(HERO_NAME, data)
        scene.collection.objects.link(hero)
        hero.location = (0.0, 0.0, 1.0)
        hero.rotation_euler = (math.pi / 2, 0.0, 0.0)  # level, looking along +Y
    cam = hero.data
    cam.sensor_width = cam.sensor_height = 36.0
    cam.sensor_fit = "HORIZONTAL" if w >= h else "VERTICAL"
    cam.lens = focal_from_fov(36.0, DEFAULT_FOV_DEG)  # the backend's default field of view on the long side
    cam.shift_x = cam.shift_y = 0.0
    cam.show_background_images = True
    bg = cam.background_images[0] if len(cam.background_images) else cam.background_images.new()
    bg.image = image
    bg.alpha = 1.0
    bg.frame_method = "FIT"
    bg.display_depth = "BACK"
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = w, h, 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    props.photo = image
    props.hero_camera = hero
    if scene.camera is None or scene.camera == hero or scene.camera.name.startswith(HERO_NAME):
        scene.camera = hero
    return hero


def show_in_image_editors(context, image, paint: bool = False) -> None:
    if bpy.app.background or context.screen is None:
        return
    for area in context.screen.areas:
        if area.type == "IMAGE_EDITOR":
            area.spaces.active.image = image
            if paint:
                area.spaces.active.ui_mode = "PAINT"
            area.tag_redraw()


class LOOPSCAPE_OT_setup_photo(bpy.types.Operator, ImportHelper):
    """Choose the landscape photo: sets up the hero camera, background and render size"""

    bl_idname = "loopscape.setup_photo"
    bl_label = "Set Up From Photo"
    bl_options = {"REGISTER", "UNDO"}

    filter_glob: StringProperty(default="*.png;*.jpg;*.jpeg;*.tif;*.tiff;*.exr;*.webp;*.bmp", options={"HIDDEN"})
    filepath: StringProperty(subtype="FILE_PATH", options=path_options())

    def execute(self, context):
        path = bpy.path.abspath(self.filepath)
        if not os.path.isfile(path):
            self.report({"ERROR"}, f"Photo '{path}' does not exist. Choose an image file.")
            return {"CANCELLED"}
        try:
            image = bpy.data.images.load(path, check_existing=True)
        except RuntimeError as exc:
            self.report({"ERROR"}, f"Blender cannot read '{path}': {exc}")
            return {"CANCELLED"}
        if image.size[0] == 0 or image.size[1] == 0:
            self.report({"ERROR"}, f"'{path}' has no pixels. Choose another image.")
            return {"CANCELLED"}
        if bpy.data.filepath:
            try:
                image.filepath = bpy.path.relpath(path)
            except ValueError:
                pass
        setup_hero(context.scene, image)
        show_in_image_editors(context, image)
        self.report({"INFO"}, f"Hero camera set up for {image.size[0]}x{image.size[1]} photo")
        return {"FINISHED"}


classes = (LOOPSCAPE_OT_setup_photo,)
