"""The Result panel draws the result's preview.png, and stays intact when there is none."""
from __future__ import annotations

import sys
from pathlib import Path

import bpy
from kit import Context


class _Op:  # what layout.operator returns: properties are set on it
    pass


class _FakeLayout:
    """Records what a panel draws (panels cannot be drawn in a background session)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def operator(self, idname, **kw):
        op = _Op()
        self.calls.append(("operator", idname, kw.get("text"), op))
        return op

    def template_icon(self, icon_value=0, scale=1.0):
        self.calls.append(("template_icon", icon_value, scale))

    def label(self, text="", **kw):
        self.calls.append(("label", text))

    def prop(self, *a, **kw):
        self.calls.append(("prop",))

    def row(self, **kw):
        return self


class _FakePanel:
    def __init__(self) -> None:
        self.layout = _FakeLayout()


def _draw(panels) -> dict:
    p = _FakePanel()
    panels.LOOPSCAPE_PT_result.draw(p, bpy.context)
    icons = [c for c in p.layout.calls if c[0] == "template_icon"]
    opens = [c[3].filepath for c in p.layout.calls if c[0] == "operator" and c[1] == "wm.path_open"]
    return {"icons": [[c[1], c[2]] for c in icons], "opens": opens}


def main(ctx: Context) -> None:
    rp = sys.modules[ctx.pkg + ".blender_addon.result_preview"]
    panels = sys.modules[ctx.pkg + ".panels"]
    out, scene, result = ctx.out, ctx.scene, ctx.args["result"]
    out["no_result"] = _draw(panels)
    scene.loopscape.result_dir = result
    icon, path = rp.current_preview(scene)
    out["icon"], out["path"] = icon, str(path)
    out["cached_same"] = rp.current_preview(scene) == (icon, path)
    out["thumb_size"] = list(rp._STATE["pcoll"][str(path)].image_size)  # the loaded thumbnail
    out["drawn_background"] = _draw(panels)
    real = rp.current_preview
    rp.current_preview = lambda s: (42, real(s)[1])  # a UI session's icon id (0 in background)
    out["with_preview"] = _draw(panels)
    rp.current_preview = real
    Path(result, "preview.png").unlink()
    out["missing"] = _draw(panels)
    scene.loopscape.result_dir = result + "_nowhere"
    out["bad_dir"] = _draw(panels)
