"""Evaluation camera paths and user paths from JSON."""
import json

import numpy as np
import pytest

from backend.model.camera import Camera, intrinsics_from_fov, look_at_w2c
from backend.model.camera_paths import PRESETS, load_path_json, preset_path
from backend.infra.errors import LoopscapeError

W, H = 64, 48


@pytest.fixture
def cam():
    return Camera(intrinsics_from_fov(W, H), W, H)


def translations(cams):
    return np.array([c.w2c[:3, 3] for c in cams])


def test_presets_match_the_table(cam):
    assert PRESETS == ("up-down", "zoom-in", "side", "circle")
    for name, n in zip(PRESETS, (60, 60, 60, 90)):
        cams = preset_path(name, cam)
        assert len(cams) == n
        for c in cams:
            assert np.array_equal(c.w2c[:3, :3], np.eye(3)) and np.array_equal(c.K, cam.K)
            assert (c.width, c.height) == (W, H)
    t = translations(preset_path("up-down", cam))
    np.testing.assert_allclose(t[[0, -1]], [[0, 0.08, 0], [0, -0.08, 0]], atol=1e-12)
    np.testing.assert_allclose(np.diff(t[:, 1]), -0.16 / 59)
    t = translations(preset_path("zoom-in", cam))
    np.testing.assert_allclose(t[[0, -1]], [[0, 0, 0], [0, 0, -0.24]], atol=1e-12)
    t = translations(preset_path("side", cam))
    np.testing.assert_allclose(t[[0, -1]], [[0.09, 0, 0], [-0.09, 0, 0]], atol=1e-12)
    t = translations(preset_path("circle", cam))
    s = np.linspace(-2, 2, 90, endpoint=False)
    want = np.stack([-0.04 * np.cos(s * np.pi), -0.04 * np.sin(s * np.pi), -0.09 * np.cos(s * np.pi / 2)], 1)
    np.testing.assert_allclose(t, want, atol=1e-12)
    # a closed loop: the frame after the last would be the first again
    step = t[1] - t[0]
    assert np.linalg.norm(t[0] - t[-1]) < 1.5 * np.linalg.norm(step)


def test_zoom_in_moves_the_camera_forwards(cam):
    # w2c t_z = -0.24 puts the camera centre at z = +0.24: a point ahead gets bigger in the image
    last = preset_path("zoom-in", cam)[-1]
    np.testing.assert_allclose(last.center, [0, 0, 0.24])
    pts = np.array([[0.1, 0.0, 1.0], [-0.1, 0.0, 1.0]])
    width0 = np.ptp(cam.project(pts)[0][:, 0])
    width1 = np.ptp(last.project(pts)[0][:, 0])
    np.testing.assert_allclose(width1 / width0, 1.0 / 0.76)


def test_frames_and_scale(cam):
    cams = preset_path("side", cam, n_frames=5, scale=2.5)
    np.testing.assert_allclose(translations(cams)[:, 0], 2.5 * np.linspace(0.09, -0.09, 5))
    assert len(preset_path("circle", cam, n_frames=1)) == 1
    # relative to a non-identity camera
    moved = cam.with_pose(look_at_w2c(np.array([1.0, 0, 0]), np.array([1.0, 0, 5])))
    rel = preset_path("zoom-in", moved, n_frames=3)
    np.testing.assert_allclose(rel[-1].center, [1.0, 0, 0.24], atol=1e-12)
    for bad in (dict(name="spiral"), dict(name="side", n_frames=0), dict(name="side", scale=0.0),
                dict(name="side", scale=float("nan"))):
        with pytest.raises(LoopscapeError):
            preset_path(camera=cam, **bad)


def frames_for(cams):
    return [{"K": c.K.tolist(), "w2c": c.w2c.tolist()} for c in cams]


def test_load_path_json_rescales_K(tmp_path, cam):
    src = Camera(intrinsics_from_fov(1920, 1440), 1920, 1440)
    src.K[0, 2] = 1000.0  # a lens shift must survive the rescale
    poses = [look_at_w2c(np.array([x, 0.0, 0.0]), np.array([0.0, 0.0, 3.0])) for x in (-0.1, 0.0, 0.1)]
    doc = {"width": 1920, "height": 1440, "frames": frames_for([src.with_pose(p) for p in poses])}
    path = tmp_path / "path.json"
    path.write_text(json.dumps(doc))
    for arg in (path, str(path), doc):
        cams = load_path_json(arg, W, H)
        assert len(cams) == 3 and all((c.width, c.height) == (W, H) for c in cams)
        np.testing.assert_allclose(cams[1].K[0], src.K[0] * W / 1920)
        np.testing.assert_allclose(cams[1].K[1], src.K[1] * H / 1440)
        np.testing.assert_allclose(cams[2].w2c, poses[2])
    # the same world point lands on the same relative image position at both resolutions
    p = np.array([[0.3, -0.2, 2.0]])
    big = src.with_pose(poses[0]).project(p)[0][0]
    small = cams[0].project(p)[0][0]
    np.testing.assert_allclose(small, big * [W / 1920, H / 1440])
    # a bare list is at the working size already
    bare = load_path_json(frames_for(preset_path("side", cam, 4)), W, H)
    np.testing.assert_allclose(bare[3].w2c, preset_path("side", cam, 4)[3].w2c)


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d.pop("width"), "no 'width'"),
    (lambda d: d.update(width=-3), "width must be a positive"),
    (lambda d: d.update(width=32), "aspect"),
    (lambda d: d.update(frames=[]), "no frames"),
    (lambda d: d["frames"][1].pop("w2c"), "frame 1 has no 'w2c'"),
    (lambda d: d["frames"][2].update(K=[[1, 0], [0, 1]]), "frame 2 K has shape 2x2"),
    (lambda d: d["frames"][0].update(K="focal"), "frame 0 K"),
    (lambda d: d["frames"][1].update(w2c=np.diag([2.0, 2, 2, 1]).tolist()), "frame 1 w2c rotation"),
    (lambda d: d["frames"][1].update(w2c=np.diag([1.0, 1, -1, 1]).tolist()), "frame 1 w2c rotation"),
    (lambda d: d["frames"][0]["w2c"][3].__setitem__(0, 1.0), "frame 0 w2c last row"),
    (lambda d: d["frames"][2]["K"][0].__setitem__(0, float("nan")), "frame 2 K contains NaN"),
    (lambda d: d["frames"][2]["K"][0].__setitem__(0, -5.0), "frame 2 K is not a pinhole"),
    (lambda d: d["frames"].__setitem__(1, [1, 2]), "frame 1 is a list"),
])
def test_load_path_json_says_what_is_wrong(cam, mutate, words):
    doc = {"width": W * 2, "height": H * 2, "frames": frames_for(preset_path("side", cam.scaled(W * 2, H * 2), 3))}
    mutate(doc)
    with pytest.raises(LoopscapeError) as e:
        load_path_json(doc, W, H)
    assert words in str(e.value)


def test_load_path_json_file_errors(tmp_path):
    with pytest.raises(LoopscapeError, match="does not exist"):
        load_path_json(tmp_path / "missing.json", W, H)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LoopscapeError, match="not valid JSON"):
        load_path_json(bad, W, H)
    with pytest.raises(LoopscapeError, match="object or a list"):
        load_path_json(3, W, H)  # type: ignore[arg-type]
