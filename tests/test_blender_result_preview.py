"""The Result panel shows the result's preview.png, and stays intact when there is none."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from test_blender_support import have_bpy, run_scenario

pytestmark = [pytest.mark.blender, pytest.mark.skipif(not have_bpy(), reason="bpy is not installed in .venv")]

def test_result_panel_shows_the_preview(tmp_path):
    res = tmp_path / "result"
    res.mkdir()
    (res / "result.json").write_text(json.dumps({"ply_frames": ["ply/frame_0000.ply"], "preview": "preview.png"}))
    sheet = np.zeros((120, 400, 3), np.uint8)
    sheet[:, :200] = (40, 160, 230)
    cv2.imwrite(str(res / "preview.png"), sheet)
    out = run_scenario("result_preview", tmp_path, {"result": str(res)})
    assert out["no_result"] == {"icons": [], "opens": []}
    assert out["path"] == str(res / "preview.png") and out["cached_same"]
    assert out["thumb_size"] == [256, 76]  # 400x120 fitted into Blender's 256-px preview
    assert out["drawn_background"] == {"icons": [[out["icon"], 10.0]] if out["icon"] else [],
                                       "opens": [str(res / "preview.png")]}
    assert out["with_preview"] == {"icons": [[42, 10.0]], "opens": [str(res / "preview.png")]}
    assert out["missing"] == {"icons": [], "opens": []}  # deleted file: no preview, the panel still draws
    assert out["bad_dir"] == {"icons": [], "opens": []}
