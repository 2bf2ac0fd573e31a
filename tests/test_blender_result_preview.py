"""The Result panel shows the result's preview.png, and stays intact when there is none."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from test_blender_support import have_bpy, run_scenario

pytestmark = [pytest.mark.blender, pytest.mark.skipif(not have_bpy(), reason="bpy is not installed in .venv")]

SCENARIO = r"""
import sys
from pathlib import Path
rp = sys.modules[PKG + ".result_preview"]
panels = sys.modules[PKG + ".panels"]

class Op:  # what layout.operator returns: properties are set on it
    pass

class FakeLayout:
    '''Records what a panel draws (panels cannot be drawn in a background session).'''
    def __init__(self):
        self.calls = []
    def operator(self, idname, **kw):
        op = Op(); self.calls.append(("operator", idname, kw.get("text"), op)); return op
    def template_icon(self, icon_value=0, scale=1.0):
        self.calls.append(("template_icon", icon_value, scale))
    def label(self, text="", **kw):
        self.calls.append(("label", text))
    def prop(self, *a, **kw):
        self.calls.append(("prop",))
    def row(self, **kw):
        return self

class FakePanel:
    def __init__(self):
        self.layout = FakeLayout()

def draw():
    p = FakePanel()
    panels.LOOPSCAPE_PT_result.draw(p, bpy.context)
    icons = [c for c in p.layout.calls if c[0] == "template_icon"]
    opens = [c[3].filepath for c in p.layout.calls if c[0] == "operator" and c[1] == "wm.path_open"]
    return {"icons": [[c[1], c[2]] for c in icons], "opens": opens}

OUT["no_result"] = draw()
SCENE.loopscape.result_dir = ARGS["result"]
icon, path = rp.current_preview(SCENE)
OUT["icon"], OUT["path"] = icon, str(path)
OUT["cached_same"] = rp.current_preview(SCENE) == (icon, path)
OUT["thumb_size"] = list(rp._STATE["pcoll"][str(path)].image_size)  # the loaded thumbnail
OUT["drawn_background"] = draw()
real = rp.current_preview
rp.current_preview = lambda scene: (42, real(scene)[1])  # a UI session's icon id (0 in background)
OUT["with_preview"] = draw()
rp.current_preview = real
Path(ARGS["result"], "preview.png").unlink()
OUT["missing"] = draw()
SCENE.loopscape.result_dir = ARGS["result"] + "_nowhere"
OUT["bad_dir"] = draw()
"""


def test_result_panel_shows_the_preview(tmp_path):
    res = tmp_path / "result"
    res.mkdir()
    (res / "result.json").write_text(json.dumps({"ply_frames": ["ply/frame_0000.ply"], "preview": "preview.png"}))
    sheet = np.zeros((120, 400, 3), np.uint8)
    sheet[:, :200] = (40, 160, 230)
    cv2.imwrite(str(res / "preview.png"), sheet)
    out = run_scenario(SCENARIO, tmp_path, {"result": str(res)})
    assert out["no_result"] == {"icons": [], "opens": []}
    assert out["path"] == str(res / "preview.png") and out["cached_same"]
    assert out["thumb_size"] == [256, 76]  # 400x120 fitted into Blender's 256-px preview
    assert out["drawn_background"] == {"icons": [[out["icon"], 10.0]] if out["icon"] else [],
                                       "opens": [str(res / "preview.png")]}
    assert out["with_preview"] == {"icons": [[42, 10.0]], "opens": [str(res / "preview.png")]}
    assert out["missing"] == {"icons": [], "opens": []}  # deleted file: no preview, the panel still draws
    assert out["bad_dir"] == {"icons": [], "opens": []}
