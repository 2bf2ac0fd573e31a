"""Motion inputs: masks, labelme, dense flows and hints at the working resolution, and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.infra.errors import LoopscapeError
from backend.infra.events import NullSink
from backend.io.motion_inputs import Hint, load_motion_inputs

SCENES = Path(__file__).resolve().parents[2] / "shared" / "data" / "scenes"


def _labelme(path: Path, shapes: list[dict], w: int = 200, h: int = 100) -> Path:
    path.write_text(json.dumps({"version": "5.0", "shapes": shapes, "imageWidth": w, "imageHeight": h, "imageData": None}))
    return path


def test_hint_velocity_conventions() -> None:
    h = Hint((10.0, 10.0), (60.0, 10.0))
    np.testing.assert_allclose(h.velocity(), [1.0, 0.0])  # 50 px arrow = 1 px/frame
    np.testing.assert_allclose(h.velocity(2.0), [2.0, 0.0])
    h2 = Hint((0.0, 0.0), (3.0, 4.0), speed=2.5)
    np.testing.assert_allclose(h2.velocity(), [1.5, 2.0])


def test_labelme_polygons_hints_and_anchors_are_rescaled(tmp_path: Path) -> None:
    shapes = [
        {"label": "water", "shape_type": "polygon", "points": [[20, 20], [120, 20], [120, 80], [20, 80]]},
        {"label": "hint_0", "shape_type": "line", "points": [[40, 50], [140, 50]]},
        {"label": "anchor_a", "shape_type": "point", "points": [[100, 60]]},
        {"label": "note", "shape_type": "line", "points": [[0, 0], [5, 5]]},  # not a hint
    ]
    lm = _labelme(tmp_path / "a.json", shapes)
    mi = load_motion_inputs((100, 50), (400, 200), labelme_path=lm)
    assert mi is not None and mi.mask.shape == (50, 100)
    # polygon 100x60 labelme px at half scale -> 50x30 working px
    assert mi.mask.sum() == pytest.approx(50 * 30, rel=0.08)  # boundary pixels count as inside (as labelme does)
    assert mi.mask[25, 30] and not mi.mask[5, 5]
    assert len(mi.hints) == 1 and mi.hints[0].start == pytest.approx((20.0, 25.0))
    pts, vel = mi.hint_arrays()
    np.testing.assert_allclose(vel[0], [50.0 / 50.0, 0.0])  # 50 working px arrow -> 1 px/frame
    assert mi.anchors[0] == pytest.approx((50.0, 30.0))


def test_mask_png_of_other_size_and_colour_is_resized_and_thresholded(tmp_path: Path) -> None:
    m = np.zeros((120, 160, 3), np.uint8)
    m[30:90, 40:120] = (200, 180, 190)  # anti-aliased grey-ish colour, not pure white
    cv2.imwrite(str(tmp_path / "m.png"), m)
    mi = load_motion_inputs((80, 60), (80, 60), mask_path=tmp_path / "m.png", hints=[{"start": [40, 30], "end": [50, 30]}])
    assert mi.mask.dtype == bool and mi.mask.shape == (60, 80)
    assert mi.mask.sum() == 40 * 30
    assert mi.flow is None and len(mi.hints) == 1


def test_hints_and_speeds_from_the_job_are_in_input_pixels(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "m.png"), np.full((100, 200), 255, np.uint8))
    mi = load_motion_inputs((100, 50), (200, 100), mask_path=tmp_path / "m.png", speed=2.0,
                            hints=[{"start": [20, 20], "end": [120, 20]}, {"start": [20, 60], "end": [20, 80], "speed": 4.0}],
                            anchors=[[10, 10]])
    _, vel = mi.hint_arrays()
    np.testing.assert_allclose(vel[0], [2.0 * 50 / 50, 0.0])  # 100 input px = 50 working px, times 2
    np.testing.assert_allclose(vel[1], [0.0, 2.0 * 2.0])  # 4 input px/frame = 2 working px/frame, times 2
    assert mi.anchors == [(5.0, 5.0)]


def test_dense_flow_is_resized_with_vectors_rescaled_and_defines_the_mask(tmp_path: Path) -> None:
    flow = np.zeros((1, 2, 64, 64), np.float32)
    flow[0, 0, :, 32:] = 2.0  # u = 2 px/frame in the 64-px grid
    flow[0, 1, :, 32:] = -1.0
    flow[0, :, :, :32] = 1e-4  # the near-zero background real flows carry
    np.save(tmp_path / "f.npy", flow)
    mi = load_motion_inputs((32, 16), (128, 64), flow_path=tmp_path / "f.npy")
    assert mi.flow.shape == (16, 32, 2)
    np.testing.assert_allclose(mi.flow[8, 24], [2.0 * 32 / 64, -1.0 * 16 / 64], atol=1e-6)
    assert mi.mask[:, 17:].all() and not mi.mask[:, :15].any()
    assert np.all(mi.flow[~mi.mask] == 0)
    # (H, W, 2) layout is accepted too
    np.save(tmp_path / "g.npy", np.moveaxis(flow[0], 0, 2))
    mi2 = load_motion_inputs((32, 16), (128, 64), flow_path=tmp_path / "g.npy")
    np.testing.assert_allclose(mi2.flow, mi.flow)


def test_nothing_given_means_no_motion() -> None:
    assert load_motion_inputs((64, 48), (64, 48)) is None


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    size = ((64, 48), (64, 48))
    cv2.imwrite(str(tmp_path / "empty.png"), np.zeros((48, 64), np.uint8))
    with pytest.raises(LoopscapeError, match="empty"):
        load_motion_inputs(*size, mask_path=tmp_path / "empty.png", hints=[{"start": [5, 5], "end": [9, 5]}])
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(LoopscapeError, match="not a readable image"):
        load_motion_inputs(*size, mask_path=tmp_path / "junk.png")
    np.save(tmp_path / "bad.npy", np.zeros((3, 48, 64), np.float32))
    with pytest.raises(LoopscapeError, match="shape"):
        load_motion_inputs(*size, flow_path=tmp_path / "bad.npy")
    nan = np.ones((2, 48, 64), np.float32)
    nan[0, 3, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(LoopscapeError, match="NaN"):
        load_motion_inputs(*size, flow_path=tmp_path / "nan.npy")
    lm = _labelme(tmp_path / "nopoly.json", [{"label": "hint_0", "shape_type": "line", "points": [[1, 1], [5, 5]]}])
    with pytest.raises(LoopscapeError, match="no polygon"):
        load_motion_inputs(*size, labelme_path=lm)
    cv2.imwrite(str(tmp_path / "full.png"), np.full((48, 64), 255, np.uint8))
    with pytest.raises(LoopscapeError, match="arrow 7"):
        load_motion_inputs(*size, mask_path=tmp_path / "full.png", hints=[{"name": "arrow 7", "start": [70, 5], "end": [80, 5]}])
    with pytest.raises(LoopscapeError, match="which region moves"):
        load_motion_inputs(*size, hints=[{"start": [5, 5], "end": [9, 5]}])


def test_hint_outside_the_mask_is_dropped_with_a_warning(tmp_path: Path) -> None:
    m = np.zeros((48, 64), np.uint8)
    m[:, 32:] = 255
    cv2.imwrite(str(tmp_path / "half.png"), m)
    sink = NullSink()
    mi = load_motion_inputs((64, 48), (64, 48), mask_path=tmp_path / "half.png", events=sink,
                            hints=[{"name": "left", "start": [5, 20], "end": [10, 20]}, {"name": "right", "start": [50, 20], "end": [55, 20]}])
    assert [h.name for h in mi.hints] == ["right"]
    assert len(sink.warnings) == 1 and "left" in sink.warnings[0]
    with pytest.raises(LoopscapeError, match="no hint arrow lies inside"):
        load_motion_inputs((64, 48), (64, 48), mask_path=tmp_path / "half.png", hints=[{"start": [5, 20], "end": [10, 20]}])


@pytest.mark.skipif(not SCENES.is_dir(), reason="shared scenes not available")
def test_shared_scenes_load_at_working_resolution() -> None:
    d = SCENES / "3dmom_scene_0"
    mi = load_motion_inputs((256, 144), (1280, 720), labelme_path=d / "labelme.json", events=NullSink())
    ref = load_motion_inputs((256, 144), (1280, 720), mask_path=d / "mask.png", hints=[{"start": [410, 125], "end": [600, 145]}])
    iou = (mi.mask & ref.mask).sum() / (mi.mask | ref.mask).sum()
    assert iou > 0.9  # the labelme polygons are the mask PNG's source
    assert len(mi.hints) == 6
    c = SCENES / "cine_0000008"
    cm = load_motion_inputs((256, 256), (1024, 1024), mask_path=c / "mask.png", flow_path=c / "motion.npy")
    raw = np.load(c / "motion.npy")[0]
    # 512-px flow at 256 px: vectors halve
    assert np.abs(cm.flow).max() == pytest.approx(np.abs(raw).max() / 2, rel=0.15)
