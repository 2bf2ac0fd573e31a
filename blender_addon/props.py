"""Scene properties: the photo, motion inputs (photo pixels, y down), camera, run settings and status."""
from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, FloatVectorProperty,
                       IntProperty, PointerProperty, StringProperty)

from ..contract.camera import PATH_PRESETS
from ..contract.quality import DEFAULT_QUALITY, PRESETS
from .compat import path_options

QUALITY_ITEMS = [(p.name, p.label, p.description) for p in PRESETS.values()]
# Menu text 'zoom-in' -> 'Zoom In': the contract names the presets, the add-on only shows them.
PATH_ITEMS = [(name, name.replace("-", " ").title(), f"The backend's '{name}' camera path, scaled to the scene")
              for name in PATH_PRESETS]
RUN_DEVICE_ITEMS = [
    ("default", "Preferences", "Use the device from the add-on preferences"),
    ("auto", "Auto", ""), ("cuda", "CUDA", ""), ("cpu", "CPU", ""),
]


def _is_camera(_self, obj) -> bool:
    return obj.type == "CAMERA"


def _get_result_dir(self) -> str:
    from .paths import scene_result_dir  # paths imports bpy handlers; keep props importable first

    return scene_result_dir(self)


def _set_result_dir(self, value: str) -> None:
    # A result streamed from a USD cache ignores this: its folder follows the cache (see paths.py).
    self.result_dir_stored = value


class LoopscapeHint(bpy.types.PropertyGroup):
    """A motion arrow in photo pixels: from start to end; speed overrides its length-derived speed."""

    start: FloatVectorProperty(name="Start", size=2, default=(0.0, 0.0), description="Photo pixels (x right, y down)")
    end: FloatVectorProperty(name="End", size=2, default=(10.0, 0.0), description="Photo pixels (x right, y down)")
    speed: FloatProperty(name="Speed", default=0.0, min=0.0,
                         description="Pixels per frame; 0 derives it from the arrow's length")


class LoopscapeAnchor(bpy.types.PropertyGroup):
    """A pin in photo pixels where nothing moves."""

    co: FloatVectorProperty(name="Position", size=2, default=(0.0, 0.0), description="Photo pixels (x right, y down)")


class LoopscapeSceneProps(bpy.types.PropertyGroup):
    # Photo
    photo: PointerProperty(name="Photo", type=bpy.types.Image)
    hero_camera: PointerProperty(name="Hero Camera", type=bpy.types.Object, poll=_is_camera,
                                 description="The camera that sees exactly the photo; backend world = its view")
    scene_scale: FloatProperty(name="Scene Scale", default=1.0, min=1e-4,
                               description="Blender units per backend depth unit (nearby content sits at depth 1)")
    # Motion
    mask: PointerProperty(name="Mask", type=bpy.types.Image, description="White where the photo moves")
    hints: CollectionProperty(type=LoopscapeHint)
    hint_index: IntProperty(default=0)
    anchors: CollectionProperty(type=LoopscapeAnchor)
    anchor_index: IntProperty(default=0)
    speed: FloatProperty(name="Speed", default=1.0, min=0.0, soft_max=5.0, description="Global factor on hint speeds")
    snap_mask: BoolProperty(name="Snap Mask Edge", default=True,
                            description="Leave out the static pixels a brush stroke took along at the mask's edge "
                                        "(a mountain or a bank next to the sky or the water), so they do not drift")
    show_overlay: BoolProperty(name="Show Arrows", default=True)
    # Run
    quality: EnumProperty(name="Quality", items=QUALITY_ITEMS, default=DEFAULT_QUALITY)
    frames: IntProperty(name="Loop Frames", default=60, min=2, soft_max=600)
    device: EnumProperty(name="Device", items=RUN_DEVICE_ITEMS, default="default")
    max_side: IntProperty(name="Max Side", default=512, min=32, soft_max=2048,
                          description="Working resolution of the backend (long side in pixels)")
    extra_json: StringProperty(name="Extra Job Fields", default="",
                               description="JSON object merged into the job (advanced)")
    # Status (written by the runner)
    running: BoolProperty(default=False)
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    stage: StringProperty(default="")
    log_tail: StringProperty(default="")
    last_error: StringProperty(default="")
    log_path: StringProperty(default="", subtype="FILE_PATH", options=path_options())
    # Result. The folder is derived from the result's USD cache path when it streams from one, so that
    # a packer (bat pack) that rewrites the cache's path moves it too; stored only for PLY imports.
    result_dir: StringProperty(name="Result Folder", subtype="DIR_PATH", get=_get_result_dir, set=_set_result_dir,
                               options=path_options(),
                               description="The result folder: the folder of the point cache when there is one")
    result_dir_stored: StringProperty(default="", subtype="DIR_PATH", options=path_options("HIDDEN"))
    result_object: PointerProperty(name="Result", type=bpy.types.Object)


classes = (LoopscapeHint, LoopscapeAnchor, LoopscapeSceneProps)


def register() -> None:
    bpy.types.Scene.loopscape = PointerProperty(type=LoopscapeSceneProps)


def unregister() -> None:
    del bpy.types.Scene.loopscape
