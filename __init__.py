"""Loopscape: one landscape photo to a looping animated Gaussian splat scene (the Blender extension).

The extension's source tree is the installed tree: this entry registers the add-on, whose modules
are ``blender_addon/`` (logic; bpy-free where it can be), ``operators/`` (``bpy.ops.loopscape``)
and ``panels/``, with ``contract/`` shipped alongside for the rules it shares with the backend.
The heavy compute runs in a separate backend process (``python -m backend run``); this add-on
never imports torch.
"""
from __future__ import annotations

import bpy

from . import operators, panels
from .blender_addon import overlay, paths, preferences, props, result_preview

_CLASSES = (*preferences.classes, *props.classes, *operators.classes, *panels.classes)


def register() -> None:
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    props.register()
    overlay.register()
    paths.register()


def unregister() -> None:
    operators.unregister_hook()
    result_preview.unregister()
    paths.unregister()
    overlay.unregister()
    props.unregister()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
