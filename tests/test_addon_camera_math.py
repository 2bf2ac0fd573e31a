"""The add-on's camera maths on numpy 4x4 arrays, without bpy or mathutils."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from loopscape_addon.blender_addon import camera_math
from loopscape_addon.contract.camera import PATH_PRESETS, preset_translations


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _object_matrix(loc, euler, scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = _rotation(*euler) @ np.diag(scale)
    m[:3, 3] = loc
    return m


HERO = _object_matrix((3.0, -2.0, 1.5), (math.radians(80), math.radians(5), math.radians(30)))


def _camera(**kw) -> SimpleNamespace:
    base = dict(sensor_fit="AUTO", sensor_width=36.0, sensor_height=24.0, lens=50.0, shift_x=0.0, shift_y=0.0)
    return SimpleNamespace(**(base | kw))


@pytest.mark.parametrize("size", [(640, 480), (300, 500)])
def test_lens_from_K_reproduces_K(size):
    w, h = size
    K = [[700.0, 0.0, w / 2 + 12.0], [0.0, 700.0, h / 2 - 7.0], [0.0, 0.0, 1.0]]
    cam = _camera()
    camera_math.set_lens_from_K(cam, K, w, h)
    assert cam.sensor_fit == ("HORIZONTAL" if w >= h else "VERTICAL")
    np.testing.assert_allclose(camera_math.intrinsics(cam, w, h), K, atol=1e-9)


def test_intrinsics_auto_fit_uses_the_long_side():
    K = np.array(camera_math.intrinsics(_camera(lens=36.0), 400, 200))
    assert K[0, 0] == pytest.approx(400.0) and K[1, 1] == pytest.approx(400.0)
    assert tuple(K[:2, 2]) == (200.0, 100.0)
    K = np.array(camera_math.intrinsics(_camera(lens=36.0, sensor_height=36.0), 200, 400))
    assert K[0, 0] == pytest.approx(400.0), "portrait: the sensor spans the height"


@pytest.mark.parametrize("object_scale", [1.0, 3.0])
def test_the_hero_camera_sees_backend_world_from_the_origin(object_scale):
    hero = HERO @ np.diag([object_scale] * 3 + [1.0])  # camera object scale does not change the view
    scene = camera_math.scene_matrix_from_hero(hero, 2.5)
    np.testing.assert_allclose(camera_math.world_to_camera(hero, scene), np.eye(4), atol=1e-12)
    assert camera_math.uniform_scale(scene) == pytest.approx(2.5 * object_scale)


def test_camera_matrix_from_w2c_inverts_world_to_camera():
    scene = camera_math.scene_matrix_from_hero(HERO, 0.7)
    w2c = _object_matrix((0.1, -0.2, 0.3), (0.2, -0.1, 0.05))
    cam = camera_math.camera_matrix_from_w2c(w2c, scene)
    np.testing.assert_allclose(cam[:3, :3] @ cam[:3, :3].T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(camera_math.world_to_camera(cam, scene), w2c, atol=1e-12)


@pytest.mark.parametrize("name", PATH_PRESETS)
def test_preset_cameras_follow_the_contract_path(name):
    scene = camera_math.scene_matrix_from_hero(HERO, 1.8)
    mats = camera_math.preset_camera_matrices(name, 7, scene)
    want = preset_translations(name, 7)
    assert len(mats) == len(want) == 7
    for m, t in zip(mats, want):
        w2c = camera_math.world_to_camera(m, scene)
        np.testing.assert_allclose(w2c[:3, :3], np.eye(3), atol=1e-12)
        np.testing.assert_allclose(w2c[:3, 3], t, atol=1e-12)


def test_mirrored_camera_matrix_keeps_a_proper_rotation():
    mirrored = HERO @ np.diag([-1.0, 1.0, 1.0, 1.0])
    rigid = camera_math._rigid(mirrored)
    assert np.linalg.det(rigid[:3, :3]) == pytest.approx(1.0)
    np.testing.assert_allclose(rigid[:3, 3], HERO[:3, 3])
