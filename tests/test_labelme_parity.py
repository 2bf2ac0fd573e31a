"""Issue 12, acceptance 1: one labelme file gives the same mask, hints and anchors in Blender and on the
command line. The add-on's loader is imported without bpy, through the test alias of the repository root."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from backend.io.motion_inputs import load_motion_inputs
from contract import LoopscapeError as BackendError
from loopscape_addon.blender_addon import mask_io
from loopscape_addon.contract import LoopscapeError as AddonError

W0, H0 = 200, 150  # the labelme file's image size
W, H = 100, 75  # the working size both loaders rescale to

SHAPES = [
    {"label": "water", "shape_type": "polygon", "points": [[10, 80], [120, 80], [120, 140], [10, 140]]},
    {"label": "sky", "shape_type": "rectangle", "points": [[130, 10], [190, 60]]},
    {"label": "hint_region", "shape_type": "polygon", "points": [[150, 100], [190, 100], [190, 140]]},
    {"label": "", "shape_type": "line", "points": [[20, 100], [60, 100]]},
    {"label": "hint_1", "shape_type": "line", "points": [[140, 30], [170, 40]]},
    {"label": "Hint_2", "shape_type": "linestrip", "points": [[30, 120], [40, 125], [50, 130]]},
    {"label": "note", "shape_type": "line", "points": [[300, 300], [310, 310]]},  # a note, even off the image
    {"label": "", "shape_type": "point", "points": [[50, 50]]},
    {"label": "anchor_tree", "shape_type": "point", "points": [[100, 20]]},
    {"label": "rock", "shape_type": "point", "points": [[5, 5]]},
    {"label": "", "shape_type": "circle", "points": [[60, 60], [70, 70]]},
]


def _write(path: Path, shapes: list[dict]) -> Path:
    path.write_text(json.dumps({"imageWidth": W0, "imageHeight": H0, "shapes": shapes}))
    return path


def _backend(path: Path):
    return load_motion_inputs((W, H), (W0, H0), labelme_path=path)


def test_both_loaders_read_the_same_mask_hints_and_anchors(tmp_path):
    path = _write(tmp_path / "scene.json", SHAPES)
    mask, hints, anchors = mask_io.read_labelme(path, W, H)
    inputs = _backend(path)

    assert mask.shape == (H, W) and np.array_equal(mask, inputs.mask)
    assert hints == [(h.start, h.end) for h in inputs.hints]
    assert anchors == inputs.anchors
    # ...and they are what the contract says: polygons and rectangles fill, hint-labelled regions do not;
    # empty or hint* lines are arrows, empty or anchor* points are pins; the rest is ignored.
    assert mask[50, 30] and mask[15, 80], "polygon and rectangle are moving"
    assert not mask[55, 90], "a polygon labelled hint* marks no motion"
    assert hints == [((10.0, 50.0), (30.0, 50.0)), ((70.0, 15.0), (85.0, 20.0)), ((15.0, 60.0), (25.0, 65.0))]
    assert anchors == [(25.0, 25.0), (50.0, 10.0)]


@pytest.mark.parametrize("label, start", [("", [250, 20]), ("hint_off", [-4, 20]), ("hint_low", [20, 151])])
def test_both_loaders_refuse_a_hint_off_the_image_with_the_same_message(tmp_path, label, start):
    path = _write(tmp_path / "off.json", SHAPES[:1] + [{"label": label, "shape_type": "line",
                                                        "points": [start, [60, 100]]}])
    with pytest.raises(AddonError) as addon:
        mask_io.read_labelme(path, W, H)
    with pytest.raises(BackendError) as backend:
        _backend(path)
    assert (addon.value.message, addon.value.hint) == (backend.value.message, backend.value.hint)
    assert "outside the 200x150 image" in addon.value.message
