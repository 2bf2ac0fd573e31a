"""Blender camera <-> backend (OpenCV) camera conversion, on numpy 4x4 arrays (no bpy, no mathutils).

Backend world is the hero camera's OpenCV frame. The matrix ``scene_matrix`` maps backend world
to Blender world: ``hero.matrix_world @ CV_FLIP`` (times a uniform scene scale), or the matrix of
the imported result's parent Empty once there is one. Callers convert at the bpy boundary:
``np.array(obj.matrix_world)`` to read, ``Matrix(arr.tolist())`` to write.
"""
from __future__ import annotations

import numpy as np

from ..contract.camera import preset_translations

# diag(1,-1,-1,1): Blender camera axes (-z forward, +y up) to OpenCV (+z forward, +y down).
CV_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])


def intrinsics(cam_data, width: int, height: int, pixel_aspect_x: float = 1.0,
               pixel_aspect_y: float = 1.0) -> list[list[float]]:
    """OpenCV K (3x3 nested lists) of a Blender camera data block rendered at width x height."""
    W, H = float(width), float(height)
    fit = cam_data.sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if pixel_aspect_x * W >= pixel_aspect_y * H else "VERTICAL"
    sensor = cam_data.sensor_height if fit == "VERTICAL" else cam_data.sensor_width
    view = W if fit == "HORIZONTAL" else H * pixel_aspect_y / pixel_aspect_x
    fx = cam_data.lens / sensor * view
    fy = fx * pixel_aspect_x / pixel_aspect_y
    cx = W / 2.0 - cam_data.shift_x * view
    cy = H / 2.0 + cam_data.shift_y * view * pixel_aspect_x / pixel_aspect_y
    return [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]


def set_lens_from_K(cam_data, K, width: int, height: int) -> None:
    """Make a Blender camera reproduce K (square pixels) at width x height."""
    fx, cx, cy = float(K[0][0]), float(K[0][2]), float(K[1][2])
    cam_data.sensor_fit = "HORIZONTAL" if width >= height else "VERTICAL"
    view = float(width) if cam_data.sensor_fit == "HORIZONTAL" else float(height)
    sensor = cam_data.sensor_width if cam_data.sensor_fit == "HORIZONTAL" else cam_data.sensor_height
    cam_data.lens = fx * sensor / view
    cam_data.shift_x = (width / 2.0 - cx) / view
    cam_data.shift_y = (cy - height / 2.0) / view


def scene_matrix_from_hero(hero_matrix_world: np.ndarray, scene_scale: float) -> np.ndarray:
    """Backend world -> Blender world before any result is placed: ``hero @ CV_FLIP @ diag(s, s, s, 1)``."""
    s = float(scene_scale)
    return np.asarray(hero_matrix_world, dtype=np.float64) @ CV_FLIP @ np.diag([s, s, s, 1.0])


def uniform_scale(m: np.ndarray) -> float:
    """Mean axis scale of an affine matrix (scene scale of the backend world)."""
    return float(np.linalg.norm(np.asarray(m, dtype=np.float64)[:3, :3], axis=0).mean())


def world_to_camera(camera_matrix_world: np.ndarray, scene_matrix: np.ndarray) -> np.ndarray:
    """Backend-world-to-camera (OpenCV, rigid) for a Blender camera at ``camera_matrix_world``.

    Camera points are ``CV_FLIP @ cam^-1 @ scene_matrix @ x_backend``; the scene scale is divided
    out (projection is invariant to it) so that the rotation block stays orthonormal.
    """
    m = CV_FLIP @ np.linalg.inv(_rigid(camera_matrix_world)) @ np.asarray(scene_matrix, dtype=np.float64)
    s = uniform_scale(scene_matrix)
    return np.diag([1.0 / s, 1.0 / s, 1.0 / s, 1.0]) @ m


def camera_matrix_from_w2c(w2c: np.ndarray, scene_matrix: np.ndarray) -> np.ndarray:
    """Blender camera matrix_world (rigid, unit scale) for a backend world-to-camera matrix."""
    m = np.asarray(scene_matrix, dtype=np.float64) @ np.linalg.inv(np.asarray(w2c, dtype=np.float64)) @ CV_FLIP
    out = np.eye(4)
    out[:3, :3] = m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0)
    out[:3, 3] = m[:3, 3]
    return out


def preset_camera_matrices(name: str, n_frames: int, scene_matrix: np.ndarray) -> list[np.ndarray]:
    """Blender camera matrices of the backend's preset path ``name`` (R = I, contract translations)."""
    out = []
    for t in preset_translations(name, n_frames):
        w2c = np.eye(4)
        w2c[:3, 3] = t
        out.append(camera_matrix_from_w2c(w2c, scene_matrix))
    return out


def _rigid(m: np.ndarray) -> np.ndarray:
    """Drop scale from an object matrix (camera object scale does not change the view), as
    mathutils' ``decompose`` does: unit columns, negated when the matrix mirrors."""
    m = np.asarray(m, dtype=np.float64)
    rot = m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0)
    out = np.eye(4)
    out[:3, :3] = -rot if np.linalg.det(rot) < 0 else rot
    out[:3, 3] = m[:3, 3]
    return out
