"""The add-on's PLY frames without bpy: activated attributes from the contract's layout, and frame packing."""
from __future__ import annotations

import numpy as np
import pytest

from loopscape_addon.blender_addon import ply_read
from loopscape_addon.contract import LoopscapeError
from loopscape_addon.contract.splats import PLY_DTYPE, ply_bytes, rgb_to_sh0


def _vertices(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = np.zeros(n, dtype=PLY_DTYPE)
    for k in ("x", "y", "z", "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"):
        v[k] = rng.normal(size=n)
    for i in range(3):
        v[f"f_dc_{i}"] = rgb_to_sh0(rng.uniform(0.1, 0.9, n))
    return v


def test_gaussians_are_activated(tmp_path):
    v = _vertices(5)
    (tmp_path / "f.ply").write_bytes(ply_bytes(v))
    g = ply_read.read_gaussians(tmp_path / "f.ply")
    assert set(g) == set(ply_read.ATTRIBUTES) and all(a.dtype == np.float32 for a in g.values())
    np.testing.assert_allclose(g["position"], np.stack([v["x"], v["y"], v["z"]], 1))
    rgb = 0.5 + 0.28209479177387814 * np.stack([v[f"f_dc_{i}"] for i in range(3)], 1)
    np.testing.assert_allclose(g["color"], rgb, rtol=1e-5)
    np.testing.assert_allclose(g["opacity"], 1 / (1 + np.exp(-v["opacity"].astype(np.float64))), rtol=1e-6)
    np.testing.assert_allclose(g["scales"], np.exp(np.stack([v[f"scale_{i}"] for i in range(3)], 1)), rtol=1e-6)
    q = np.stack([v[f"rot_{i}"] for i in range(4)], 1)
    np.testing.assert_allclose(g["orientations"], q / np.linalg.norm(q, axis=1, keepdims=True), rtol=1e-5)


def test_other_point_clouds_get_defaults(tmp_path):
    ply = ("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
           "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
           "0 0 1 255 0 51\n1 2 3 0 255 0\n")
    (tmp_path / "pc.ply").write_text(ply)
    g = ply_read.read_gaussians(tmp_path / "pc.ply")
    np.testing.assert_allclose(g["color"], [[1.0, 0.0, 0.2], [0.0, 1.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(g["opacity"], [1.0, 1.0])
    np.testing.assert_allclose(g["scales"], np.full((2, 3), 0.01))
    np.testing.assert_allclose(g["orientations"], [[1, 0, 0, 0], [1, 0, 0, 0]])


def test_refusals_carry_a_hint(tmp_path):
    with pytest.raises(LoopscapeError, match="lack x, y, z"):
        ply_read.gaussians_from_vertices({"red": np.zeros(2)})
    (tmp_path / "bad.ply").write_bytes(b"not a ply")
    with pytest.raises(LoopscapeError) as exc:
        ply_read.read_gaussians(tmp_path / "bad.ply")
    assert exc.value.hint


def _frame(pos: np.ndarray) -> dict[str, np.ndarray]:
    n = len(pos)
    return {"position": pos.astype(np.float32), "color": np.full((n, 3), 0.5, np.float32),
            "opacity": np.ones(n, np.float32), "scales": np.full((n, 3), 0.1, np.float32),
            "orientations": np.tile(np.float32([1, 0, 0, 0]), (n, 1))}


def test_points_still_in_every_frame_are_stored_once():
    pos = np.arange(12, dtype=np.float32).reshape(4, 3)
    frames = []
    for i in range(3):
        p = pos.copy()
        p[:2, 0] += i  # points 0 and 1 move
        frames.append(_frame(p))
    cat = ply_read.pack_frames(frames)
    assert cat["frame"].tolist() == [-1, -1, 0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(cat["position"][:2], pos[2:])
    np.testing.assert_array_equal(cat["position"][6:], frames[2]["position"][:2])


def test_frames_of_different_sizes_are_kept_whole_and_one_frame_is_static():
    cat = ply_read.pack_frames([_frame(np.zeros((2, 3))), _frame(np.ones((3, 3)))])
    assert cat["frame"].tolist() == [0, 0, 1, 1, 1]
    assert ply_read.pack_frames([_frame(np.zeros((2, 3)))])["frame"].tolist() == [-1, -1]
