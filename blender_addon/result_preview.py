"""The result's contact sheet (preview.png, written by the backend) as an icon for the Result panel.

Panels redraw on every mouse move, so the icon is looked up through a small cache keyed by the
result folder and the modification times of result.json and preview.png; a new run (or a deleted
file) changes the key. A missing or unreadable preview gives icon 0, which the panel skips.
"""
from __future__ import annotations

from pathlib import Path

import bpy
import bpy.utils.previews

from ..contract import protocol
from . import importer

_STATE: dict = {"pcoll": None, "key": None, "icon": 0, "path": None}


def _mtime(p: Path) -> int:
    try:
        return p.stat().st_mtime_ns
    except OSError:
        return 0


def preview_path(scene) -> Path | None:
    """The current result's preview.png, or None when the result has none (older backends)."""
    d, res = importer.result_paths(scene)
    if d is None or not res or not res.get(protocol.KEY_PREVIEW):
        return None
    p = d / str(res[protocol.KEY_PREVIEW])
    return p if p.is_file() else None


def current_preview(scene) -> tuple[int, Path | None]:
    """(icon_id, path) of the current result's preview.png; (0, None) when there is none."""
    rd = scene.loopscape.result_dir
    if not rd:
        return 0, None
    d = Path(bpy.path.abspath(rd))
    key = (str(d), _mtime(d / protocol.RESULT_NAME), _mtime(d / "preview.png"))
    if key == _STATE["key"]:
        return _STATE["icon"], _STATE["path"]
    icon = 0
    p = preview_path(scene)
    if p is not None:
        if _STATE["pcoll"] is None:
            _STATE["pcoll"] = bpy.utils.previews.new()
        pcoll = _STATE["pcoll"]
        pcoll.clear()  # one result at a time: drop the previous run's image
        try:
            # icon_id stays 0 in background sessions (no UI to draw icons in); the image still loads.
            icon = pcoll.load(str(p), str(p), "IMAGE").icon_id
        except (RuntimeError, KeyError, OSError):  # an unreadable file: show no preview, keep the panel
            p = None
    _STATE.update(key=key, icon=icon, path=p)
    return icon, p


def unregister() -> None:
    if _STATE["pcoll"] is not None:
        bpy.utils.previews.remove(_STATE["pcoll"])
    _STATE.update(pcoll=None, key=None, icon=0, path=None)
