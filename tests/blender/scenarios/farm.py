"""The shot on a render farm: save it, render the packed copy, render it with the cache missing.

Modes (``args["mode"]``):
- ``save``: import a USD result, save the shot, render frames 1 and N from the hero camera; record
  the paths the add-on keeps and every '//' RuntimeWarning that importing and saving raised.
- ``packed``: open the packed copy (result folder moved away) and render frame N.
- ``missing``: open the original shot with its cache gone, first with the add-on disabled (a farm
  without it) and then enabled (the load_post report); render frame N both times.
"""
from __future__ import annotations

import warnings

import addon_utils
import bpy
from kit import Context, cycles_match_setup


class _Layout:
    """Records the labels a panel draws (background mode has no UI to draw into)."""

    def __init__(self, labels: list) -> None:
        self.labels, self.alert = labels, False

    def label(self, text: str = "", **_kw) -> None:
        self.labels.append(text)

    def box(self, **_kw):
        return _Layout(self.labels)

    row = column = box

    def __getattr__(self, _name):
        return lambda *a, **kw: _Layout(self.labels)


def result_panel_labels(ctx: Context) -> list[str]:
    import sys

    panel = type("P", (), {})()
    panel.layout = _Layout([])
    sys.modules[ctx.pkg + ".panels"].LOOPSCAPE_PT_result.draw(panel, bpy.context)
    return panel.layout.labels


def render(path: str, frame: int) -> None:
    scene = bpy.context.scene
    scene.frame_set(frame)
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)


def paths_kept(out: dict, key: str) -> None:
    """The cache path, the folder the add-on derives, and the points baked into every cloud that
    streams from the cache (a layered loop's static cloud has no samples, so no cache, and keeps its points)."""
    scene = bpy.context.scene
    clouds = [o for o in scene.objects if o.get("loopscape_result")]
    streamed = [o for o in clouds if any(m.type == "MESH_SEQUENCE_CACHE" for m in o.modifiers)]
    caches = sorted({m.cache_file.filepath for o in streamed for m in o.modifiers if m.type == "MESH_SEQUENCE_CACHE"})
    has = hasattr(scene, "loopscape")
    out[key] = {"cache": caches[0] if caches else None, "n_caches": len(caches), "n_streamed": len(streamed),
                "result_dir": scene.loopscape.result_dir if has else None,
                "result_dir_abs": bpy.path.abspath(scene.loopscape.result_dir) if has else None,
                "baked_points": sum(len(o.data.points) for o in streamed if o.type == "POINTCLOUD"),
                "obj_props": sorted({k for o in clouds for k in o.keys()})}


def main(ctx: Context) -> None:
    args, out = ctx.args, ctx.out
    n = args["frames"]
    if args["mode"] == "save":
        scene = ctx.scene
        cycles_match_setup(scene)
        scene.cycles.samples = 4
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out["import"] = ctx.call(bpy.ops.loopscape.import_result, directory=args["result"])
            scene.camera = scene.loopscape.hero_camera
            bpy.ops.wm.save_as_mainfile(filepath=args["blend"])
            scene.loopscape.result_dir = scene.loopscape.result_dir  # the panel and operators write it back
        out["warnings"] = [str(w.message) for w in caught]
        paths_kept(out, "saved")
        render(args["dir"] + "/orig_1.png", 1)
        render(args["dir"] + f"/orig_{n}.png", n)
    elif args["mode"] == "packed":
        bpy.ops.wm.open_mainfile(filepath=args["blend"])
        paths_kept(out, "packed")
        out["last_error"] = bpy.context.scene.loopscape.last_error
        out["panel"] = result_panel_labels(ctx)
        render(args["dir"] + f"/packed_{n}.png", n)
    else:
        addon_utils.disable(ctx.pkg)
        bpy.ops.wm.open_mainfile(filepath=args["blend"])
        render(args["dir"] + f"/missing_noaddon_{n}.png", n)
        addon_utils.enable(ctx.pkg)
        bpy.ops.wm.open_mainfile(filepath=args["blend"])
        out["last_error"] = bpy.context.scene.loopscape.last_error
        out["panel"] = result_panel_labels(ctx)
        render(args["dir"] + f"/missing_{n}.png", n)
