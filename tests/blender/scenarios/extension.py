"""The installed extension registers, unregisters and re-registers cleanly, without torch."""
from __future__ import annotations

import sys

import addon_utils
import bpy
from kit import Context


def snapshot() -> dict:
    return {
        "ops": sorted(n for n in dir(bpy.ops.loopscape) if not n.startswith("_")),
        "panels": sorted(n for n in dir(bpy.types) if n.startswith("LOOPSCAPE_")),
        "scene_prop": hasattr(bpy.types.Scene, "loopscape"),
        "save_handlers": len(bpy.app.handlers.save_pre),
    }


def main(ctx: Context) -> None:
    out = ctx.out
    out["enabled"] = snapshot()
    out["pkg_file"] = sys.modules[ctx.pkg].__file__
    out["panel_space"] = {n: (getattr(bpy.types, n).bl_space_type, getattr(bpy.types, n).bl_category)
                          for n in out["enabled"]["panels"] if "_PT_" in n}
    out["prefs_props"] = sorted(k for k in ctx.prefs.bl_rna.properties.keys() if k != "rna_type")
    out["torch_loaded"] = "torch" in sys.modules
    addon_utils.disable(ctx.pkg)
    out["disabled"] = snapshot()
    addon_utils.enable(ctx.pkg)
    out["reenabled"] = snapshot()
