"""Blender camera <-> backend (OpenCV) camera conversion; see ARCHITECTURE.md "Camera conventions".

Backend world is the hero camera's OpenCV frame. The matrix ``scene_matrix`` maps backend world
to Blender world: ``hero.matrix_world @ CV_FLIP`` (times a uniform scene scale), or the matrix of
the imported result's parent Empty once there is one.
"""
from __future__ import annotations

import math

from mathutils import Matrix, Vector

# diag(1,-1,-1,1): Blender camera axes (-z forward, +y up) to OpenCV (+z forward, +y down).
CV_FLIP = Matrix.Diagonal((1.0, -1.0, -1.0, 1.0))

# Backend preset paths (ARCHITECTURE.md): R = I and t = world-to-camera translation, in
# depth-normalised units, for n frames.
PRESET_FRAMES = {"up-down": 60, "zoom-in": 60, "side": 60, "circle": 90}


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


def fov_lens(fov_deg: float, sensor: float) -> float:
    """Focal length (mm) for a field of view across a sensor dimension."""
    return 0.5 * sensor / math.tan(math.radians(fov_deg) / 2.0)


def uniform_scale(m: Matrix) -> float:
    """Mean axis scale of an affine matrix (scene scale of the backend world)."""
    s = m.to_scale()
    return (abs(s.x) + abs(s.y) + abs(s.z)) / 3.0


def world_to_camera(camera_matrix_world: Matrix, scene_matrix: Matrix) -> Matrix:
    """Backend-world-to-camera (OpenCV, rigid) for a Blender camera at ``camera_matrix_world``.

    Camera points are ``CV_FLIP @ cam^-1 @ scene_matrix @ x_backend``; the scene scale is divided
    out (projection is invariant to it) so that the rotation block stays orthonormal.
    """
    cam = _rigid(camera_matrix_world)
    m = CV_FLIP @ cam.inverted() @ scene_matrix
    s = uniform_scale(scene_matrix)
    return Matrix.Diagonal((1.0 / s, 1.0 / s, 1.0 / s, 1.0)) @ m


def camera_matrix_from_w2c(w2c: Matrix, scene_matrix: Matrix) -> Matrix:
    """Blender camera matrix_world (rigid, unit scale) for a backend world-to-camera matrix."""
    c2w_cv = w2c.inverted()
    m = scene_matrix @ c2w_cv @ CV_FLIP
    loc = m.to_translation()
    rot = m.to_3x3().normalized()
    out = rot.to_4x4()
    out.translation = loc
    return out


def preset_translations(name: str, n_frames: int | None = None) -> list[tuple[float, float, float]]:
    """World-to-camera translations t of the backend's preset camera paths (R = I)."""
    n = int(n_frames or PRESET_FRAMES[name])
    out = []
    for i in range(n):
        a = i / max(n - 1, 1)  # 0..1 inclusive for the linear paths
        if name == "up-down":
            out.append((0.0, 0.08 - 0.16 * a, 0.0))
        elif name == "zoom-in":
            out.append((0.0, 0.0, -0.24 * a))
        elif name == "side":
            out.append((0.09 - 0.18 * a, 0.0, 0.0))
        elif name == "circle":
            s = -2.0 + 4.0 * i / n  # s in [-2, 2)
            out.append((-0.04 * math.cos(s * math.pi), -0.04 * math.sin(s * math.pi),
                        -0.09 * math.cos(s * math.pi / 2.0)))
        else:
            raise ValueError(f"unknown camera path preset {name!r}")
    return out


def translation_w2c(t) -> Matrix:
    m = Matrix.Identity(4)
    m.translation = Vector(t)
    return m


def _rigid(m: Matrix) -> Matrix:
    """Drop scale from an object matrix (camera object scale does not change the view)."""
    loc, rot, _scale = m.decompose()
    out = rot.to_matrix().to_4x4()
    out.translation = loc
    return out


def matrix_to_list(m: Matrix) -> list[list[float]]:
    return [[float(m[r][c]) for c in range(len(m[0]))] for r in range(len(m))]
