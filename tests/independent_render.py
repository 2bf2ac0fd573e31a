"""A renderer independent of the project: reads a 3DGS PLY with plyfile and composites in numpy.

It follows the published 3DGS equations (EWA splatting, front-to-back alpha blending) with
gsplat's constants, one Gaussian at a time; slow but simple, for checking the backend's output.
"""
from __future__ import annotations

import numpy as np
from plyfile import PlyData

SH_C0 = 0.28209479177387814


def read_ply(path) -> dict[str, np.ndarray]:
    v = PlyData.read(str(path))["vertex"]
    g = lambda *names: np.stack([np.asarray(v[n], np.float64) for n in names], -1)
    return {
        "xyz": g("x", "y", "z"),
        "rgb": np.maximum(0.5 + SH_C0 * g("f_dc_0", "f_dc_1", "f_dc_2"), 0.0),
        "opacity": 1.0 / (1.0 + np.exp(-np.asarray(v["opacity"], np.float64))),
        "scale": np.exp(g("scale_0", "scale_1", "scale_2")),
        "quat": g("rot_0", "rot_1", "rot_2", "rot_3"),
    }


def _rotmat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = (q / np.linalg.norm(q, axis=-1, keepdims=True)).T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def render(ply: dict[str, np.ndarray], K: np.ndarray, w2c: np.ndarray, width: int, height: int) -> np.ndarray:
    R, t = w2c[:3, :3], w2c[:3, 3]
    p = ply["xyz"] @ R.T + t
    z = p[:, 2]
    ok = z > 0.01
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    Rq = _rotmat(ply["quat"])
    M = Rq * ply["scale"][:, None, :]
    cov = R @ (M @ np.swapaxes(M, 1, 2)) @ R.T
    zz = np.where(ok, z, 1.0)
    tx = zz * np.clip(p[:, 0] / zz, -(cx / fx + 0.3 * width / fx), (width - cx) / fx + 0.3 * width / fx)
    ty = zz * np.clip(p[:, 1] / zz, -(cy / fy + 0.3 * height / fy), (height - cy) / fy + 0.3 * height / fy)
    J = np.zeros((len(z), 2, 3))
    J[:, 0, 0] = fx / zz
    J[:, 0, 2] = -fx * tx / zz**2
    J[:, 1, 1] = fy / zz
    J[:, 1, 2] = -fy * ty / zz**2
    c2 = J @ cov @ np.swapaxes(J, 1, 2) + 0.3 * np.eye(2)
    mu = np.stack([fx * p[:, 0] / zz + cx, fy * p[:, 1] / zz + cy], -1)
    img = np.zeros((height, width, 3))
    T = np.ones((height, width))
    done = np.zeros((height, width), bool)
    for i in np.argsort(z, kind="stable"):
        o = ply["opacity"][i]
        if not ok[i] or o < 1 / 255:
            continue
        a, b, c = c2[i, 0, 0], c2[i, 0, 1], c2[i, 1, 1]
        det = a * c - b * b
        if det <= 0:
            continue
        ext = min(3.33, np.sqrt(2 * np.log(255 * o)))
        rx, ry = np.ceil(ext * np.sqrt(a)), np.ceil(ext * np.sqrt(c))
        x0, x1 = int(max(0, np.floor(mu[i, 0] - rx))), int(min(width, np.ceil(mu[i, 0] + rx) + 1))
        y0, y1 = int(max(0, np.floor(mu[i, 1] - ry))), int(min(height, np.ceil(mu[i, 1] + ry) + 1))
        if x0 >= x1 or y0 >= y1:
            continue
        xs, ys = np.meshgrid(np.arange(x0, x1) + 0.5 - mu[i, 0], np.arange(y0, y1) + 0.5 - mu[i, 1])
        sigma = 0.5 * (c * xs**2 + a * ys**2 - 2 * b * xs * ys) / det
        alpha = np.minimum(0.999, o * np.exp(-sigma))
        alpha[(sigma < 0) | (alpha < 1 / 255)] = 0.0
        Tw = T[y0:y1, x0:x1]
        nT = Tw * (1 - alpha)
        stop = (nT <= 1e-4) & (alpha > 0)
        live = ~done[y0:y1, x0:x1] & ~stop & (alpha > 0)
        img[y0:y1, x0:x1] += np.where(live, alpha * Tw, 0.0)[..., None] * ply["rgb"][i]
        T[y0:y1, x0:x1] = np.where(live, nT, Tw)
        done[y0:y1, x0:x1] |= stop
    return img
