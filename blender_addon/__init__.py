"""Loopscape: one landscape photo to a looping animated Gaussian splat scene.

The heavy compute runs in a separate backend process (``python -m backend run``); this add-on
never imports torch. Operators live under ``bpy.ops.loopscape``.
"""
from __future__ import annotations

import bpy

from . import overlay, paths, preferences, props, result_preview
from . import operators as _operators
from . import panels as _panels

_CLASSES = (*preferences.classes, *props.classes, *_operators.classes, *_panels.classes)


def register() -> None:
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    props.register()
    overlay.register()
    paths.register()


def unregister() -> None:
    _operators.unregister_hook()
    result_preview.unregister()
    paths.unregister()
    overlay.unregister()
    props.unregister()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
