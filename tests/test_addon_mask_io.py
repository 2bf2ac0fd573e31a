"""The add-on's masks without bpy: labelme files, Blender's bottom-up pixel buffers and the job's mask PNG."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from loopscape_addon.blender_addon import mask_io
from loopscape_addon.contract import LoopscapeError


def _labelme(path, shapes, w=80, h=60):
    path.write_text(json.dumps({"imageWidth": w, "imageHeight": h, "shapes": shapes}))
    return path


def test_labelme_is_scaled_to_the_photo(tmp_path):
    path = _labelme(tmp_path / "a.json", [
        {"label": "water", "shape_type": "rectangle", "points": [[0, 30], [40, 60]]},
        {"label": "hint_0", "shape_type": "line", "points": [[10, 40], [30, 40]]},
        {"label": "anchor_0", "shape_type": "point", "points": [[60, 10]]}])
    mask, hints, anchors = mask_io.read_labelme(path, 40, 30)  # the file was made at twice the photo's size
    assert mask.shape == (30, 40) and mask.dtype == bool
    assert mask[15:, :20].all() and not mask[:15].any() and not mask[:, 20:].any()
    assert hints == [((5.0, 20.0), (15.0, 20.0))]
    assert anchors == [(30.0, 5.0)]


def test_labelme_without_regions_gives_an_empty_mask(tmp_path):
    path = _labelme(tmp_path / "b.json", [{"label": "", "shape_type": "line", "points": [[1, 1], [5, 5]]}])
    mask, hints, anchors = mask_io.read_labelme(path, 8, 6)
    assert mask.shape == (6, 8) and not mask.any()
    assert len(hints) == 1 and anchors == []


def test_a_file_that_is_not_labelme_is_refused_with_a_hint(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text("[1, 2]")
    with pytest.raises(LoopscapeError) as exc:
        mask_io.read_labelme(bad, 8, 6)
    assert "not a labelme JSON file" in exc.value.message and "labelme" in exc.value.hint


def test_pixels_round_trip_bottom_row_first():
    mask = np.zeros((3, 4), dtype=bool)
    mask[0, 1] = True  # top row of the photo
    px = mask_io.mask_to_pixels(mask)
    rgba = px.reshape(3, 4, 4)
    assert rgba[2, 1, 0] == 1.0 and rgba[0, 1, 0] == 0.0, "Blender's first row is the bottom one"
    assert (rgba[..., 3] == 1.0).all()
    np.testing.assert_array_equal(mask_io.pixels_to_mask(px, 4, 3, 4), mask)


def test_pixels_to_mask_reads_colour_not_alpha():
    rgba = np.zeros((2, 2, 4), np.float32)
    rgba[..., 3] = 1.0  # opaque black everywhere
    rgba[0, 0, :3] = 0.8  # white paint on the bottom-left pixel
    rgba[1, 1, 3] = 0.0
    assert mask_io.pixels_to_mask(rgba.ravel(), 2, 2, 4).tolist() == [[False, False], [True, False]]
    grey = np.array([0.9, 0.1, 0.2, 0.7], np.float32)
    assert mask_io.pixels_to_mask(grey, 2, 2, 1).tolist() == [[False, True], [True, False]]


def test_mask_png_is_an_8_bit_grey_image(tmp_path):
    mask = np.zeros((5, 7), dtype=bool)
    mask[1:3, 2:6] = True
    mask_io.write_png_gray(tmp_path / "mask.png", mask)
    img = cv2.imread(str(tmp_path / "mask.png"), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint8 and img.shape == (5, 7)
    np.testing.assert_array_equal(img == 255, mask)
    assert set(np.unique(img)) == {0, 255}
    assert not list(tmp_path.glob("*.tmp"))
