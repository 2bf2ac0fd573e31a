"""Pinhole cameras in the backend world: OpenCV convention (+x right, +y down, +z forward).

The world frame is the input camera's frame, so the input camera has the identity pose.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from backend.infra.errors import LoopscapeError
from contract.camera import DEFAULT_FOV_DEG, focal_from_fov



@dataclass
class Camera:
    """Intrinsics K (3x3, pixels, pixel centres at +0.5) and world-to-camera w2c (4x4)."""

    K: np.ndarray
    width: int
    height: int
    w2c: np.ndarray = field(default_factory=lambda: np.eye(4))

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.w2c = np.asarray(self.w2c, dtype=np.float64).reshape(4, 4)
        self.width = int(self.width)
        self.height = int(self.height)

    @property
    def c2w(self) -> np.ndarray:
        return np.linalg.inv(self.w2c)

    @property
    def center(self) -> np.ndarray:
        return self.c2w[:3, 3]

    def scaled(self, width: int, height: int) -> "Camera":
        """The same camera at another resolution (K scaled per axis)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0] *= sx
        K[1] *= sy
        return Camera(K, width, height, self.w2c.copy())

    def with_pose(self, w2c: np.ndarray) -> "Camera":
        return Camera(self.K.copy(), self.width, self.height, np.asarray(w2c, dtype=np.float64))

    def project(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (N,3) to pixel coordinates (N,2) and camera depth z (N,)."""
        pc = xyz @ self.w2c[:3, :3].T + self.w2c[:3, 3]
        z = pc[:, 2]
        zs = np.where(np.abs(z) < 1e-12, 1e-12, z)
        uv = (pc[:, :2] / zs[:, None]) @ self.K[:2, :2].T + self.K[:2, 2]
        return uv, z

    def to_dict(self) -> dict:
        return {"K": self.K.tolist(), "width": self.width, "height": self.height, "w2c": self.w2c.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Camera":
        return cls(np.array(d["K"]), int(d["width"]), int(d["height"]), np.array(d.get("w2c", np.eye(4))))


def project_points(x, camera: Camera, w2c=None, K=None):
    """:meth:`Camera.project` for torch points (P, 3): pixel coordinates (P, 2) and camera z (P,).

    ``w2c`` (3x4 or 4x4) and ``K`` may be given as tensors already on the points' device; depths
    below 1e-6 (behind the camera) are clamped there, so callers mask them with ``z``."""
    import torch  # here, so that numpy-only users of cameras never import torch

    w2c = torch.as_tensor(camera.w2c, device=x.device) if w2c is None else w2c
    K = torch.as_tensor(camera.K, device=x.device) if K is None else K
    w2c, K = w2c.to(x.dtype), K.to(x.dtype)
    pc = x @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[:, 2]
    uv = (pc[:, :2] / z.clamp_min(1e-6)[:, None]) @ K[:2, :2].T + K[:2, 2]
    return uv, z


def intrinsics_from_fov(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG, axis: str = "long") -> np.ndarray:
    """K for square pixels with the given field of view along ``axis`` (long|horizontal|vertical)."""
    if not (0.0 < fov_deg < 179.0):
        raise LoopscapeError(f"field of view {fov_deg} degrees is out of range.", "Use a value between 1 and 179.")
    if axis == "long":
        axis = "horizontal" if width >= height else "vertical"
    span = width if axis == "horizontal" else height
    f = focal_from_fov(span, fov_deg)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def look_at_w2c(eye: np.ndarray, target: np.ndarray, down: np.ndarray = np.array([0.0, 1.0, 0.0])) -> np.ndarray:
    """World-to-camera for an OpenCV camera at ``eye`` looking at ``target`` with +y towards ``down``."""
    z = np.asarray(target, float) - np.asarray(eye, float)
    z /= np.linalg.norm(z)
    x = np.cross(down, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])  # rows: camera axes in world
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ np.asarray(eye, float)
    return w2c


def rotation_yaw_pitch(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Rotation (3x3) turning the camera by yaw (about +y) then pitch (about +x)."""
    a, b = math.radians(yaw_deg), math.radians(pitch_deg)
    Ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    Rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return Ry @ Rx
