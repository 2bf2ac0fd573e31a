"""Per-view masks and flows: hint densification, projection of hints and dense flows, z-test."""
from __future__ import annotations

import numpy as np
import pytest

from backend.model.camera import Camera, intrinsics_from_fov
from backend.stages.flows import HintFlowEstimator, estimate_view_flows, render_points_zbuffer
from backend.stages.lift import lift_to_points
from backend.io.motion_inputs import Hint, MotionInputs

W, H = 48, 32


def _scene(depth: np.ndarray) -> tuple[Camera, object]:
    cam = Camera(intrinsics_from_fov(W, H), W, H)
    pc = lift_to_points(np.zeros((H, W, 3), np.float32), depth, cam)
    return cam, pc


def _moved(cam: Camera, t: tuple[float, float, float]) -> Camera:
    """The input camera with its centre moved to ``t`` (no rotation)."""
    w2c = np.eye(4)
    w2c[:3, 3] = -np.asarray(t, float)
    return cam.with_pose(w2c)


def test_hint_estimator_interpolates_hints_and_respects_mask_and_anchors() -> None:
    mask = np.zeros((H, W), bool)
    mask[4:28, 4:44] = True
    est = HintFlowEstimator()
    one = est.estimate(None, mask, np.array([[20.0, 16.0]]), np.array([[0.6, -0.2]]), np.zeros((0, 2)))
    np.testing.assert_allclose(one[mask], np.broadcast_to([0.6, -0.2], (mask.sum(), 2)), atol=1e-6)
    assert np.all(one[~mask] == 0)
    two = est.estimate(None, mask, np.array([[8.5, 16.5], [40.5, 16.5]]), np.array([[1.0, 0.0], [0.0, 1.0]]), np.zeros((0, 2)))
    assert two[16, 8] == pytest.approx([1.0, 0.0], abs=0.02)
    assert two[16, 40] == pytest.approx([0.0, 1.0], abs=0.02)
    assert two[16, 24] == pytest.approx([0.5, 0.5], abs=0.05)  # halfway: an even blend
    anch = est.estimate(None, mask, np.array([[8.0, 16.0]]), np.array([[1.0, 0.0]]), np.array([[30.5, 16.5]]))
    assert np.linalg.norm(anch[16, 30]) < 0.01 and anch[16, 8, 0] > 0.95


def test_zbuffer_keeps_the_nearest_point() -> None:
    cam = Camera(intrinsics_from_fov(W, H), W, H)
    xyz = np.array([[0.01, 0.01, 2.0], [0.005, 0.005, 1.0], [0.015, 0.015, 3.0]])  # one pixel, three depths
    img, depth, valid = render_points_zbuffer(xyz, np.array([[1.0], [2.0], [3.0]]), cam, 0.01)
    u, v = cam.project(xyz[:1])[0][0]
    assert valid[int(v), int(u)] and valid.sum() == 1
    assert img[int(v), int(u), 0] == 2.0 and depth[int(v), int(u)] == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["dense", "hint"])
def test_flow_is_carried_into_views_with_the_right_magnification(kind: str) -> None:
    depth = np.full((H, W), 2.0)
    cam, pc = _scene(depth)
    mask = np.zeros((H, W), bool)
    mask[8:24, 12:36] = True
    if kind == "dense":
        flow = np.zeros((H, W, 2), np.float32)
        flow[mask] = [1.0, 0.5]
        inputs = MotionInputs(mask=mask, flow=flow)
    else:
        inputs = MotionInputs(mask=mask, hints=[Hint((24.0, 16.0), (74.0, 41.0))])  # 50 px arrow -> (1, 0.5)/frame
    cams = [cam, _moved(cam, (0.0, 0.0, 0.5)), _moved(cam, (0.2, 0.0, 0.0))]
    vf = estimate_view_flows(pc.xyz, mask.reshape(-1), pc.pixel_size, cams, inputs)
    assert vf.masks.shape == (3, H, W) and vf.flows.shape == (3, H, W, 2)
    assert np.array_equal(vf.masks[0], mask)
    np.testing.assert_allclose(np.median(vf.flows[0][mask], 0), [1.0, 0.5], atol=1e-4)
    # camera 0.5 closer to a plane at depth 2: everything is magnified by 2 / 1.5
    np.testing.assert_allclose(np.median(vf.flows[1][vf.masks[1]], 0), [4 / 3, 2 / 3], atol=0.02)
    assert vf.masks[1].sum() == pytest.approx(mask.sum() * (4 / 3) ** 2, rel=0.15)
    # sideways: same flow, the mask shifts left by f * 0.2 / 2 px
    np.testing.assert_allclose(np.median(vf.flows[2][vf.masks[2]], 0), [1.0, 0.5], atol=0.02)
    shift = cam.K[0, 0] * 0.2 / 2.0
    cols = np.nonzero(vf.masks[2].any(0))[0]
    assert cols.min() == pytest.approx(12 - shift, abs=1.0)
    assert np.all(vf.flows[2][~vf.masks[2]] == 0)


def test_occluded_moving_points_leave_the_view_mask() -> None:
    depth = np.full((H, W), 2.0)
    depth[:, 20:28] = 1.0  # a near static strip
    cam, pc = _scene(depth)
    mask = np.zeros((H, W), bool)
    mask[:, 28:40] = True  # moving, just right of the strip
    flow = np.zeros((H, W, 2), np.float32)
    flow[mask] = [0.5, 0.0]
    left = _moved(cam, (-0.3, 0.0, 0.0))  # camera moves left: the near strip slides right over the moving region
    vf = estimate_view_flows(pc.xyz, mask.reshape(-1), pc.pixel_size, [cam, left], MotionInputs(mask=mask, flow=flow))
    f = cam.K[0, 0]
    near_cols = np.arange(int(np.ceil(20 + f * 0.3 + 0.5)), int(28 + f * 0.3 - 0.5))  # strip after the shift
    far_cols = np.arange(int(np.ceil(28 + f * 0.15)), min(W, int(40 + f * 0.15)))  # moving region after the shift
    hidden = np.intersect1d(near_cols, far_cols)
    assert len(hidden) >= 4
    assert not vf.masks[1][:, hidden].any()  # covered by the nearer static strip
    assert vf.masks[1][:, far_cols[-1]].all()
    assert np.all(vf.depth[1][:, hidden] < 1.1)


def test_surface_slope_stays_on_each_side_of_an_occlusion_edge():
    """A near box in front of a far wall: the minmod slope next to the edge is its own side's (flat)
    one, so a point moving across the edge keeps its depth instead of jumping to the other surface;
    on a slanted surface the slope is the true log-depth slope."""
    from backend.stages.flows import surface_end_depth, surface_slope

    depth = np.full((16, 24), 10.0)
    depth[:, :12] = 2.0  # the box's edge between columns 11 and 12
    s = surface_slope(depth)
    assert np.allclose(s, 0.0)
    uv = np.array([[11.5, 8.5], [12.5, 8.5]])
    assert np.allclose(surface_end_depth(s, uv, np.array([[1.0, 0.0], [-1.0, 0.0]]), np.array([2.0, 10.0])), [2.0, 10.0])
    ramp = np.exp(0.02 * np.arange(24))[None, :] * np.ones((16, 1))
    s = surface_slope(ramp)
    assert np.allclose(s[..., 0], 0.02, atol=1e-6) and np.allclose(s[..., 1], 0.0)
    assert np.isclose(surface_end_depth(s, np.array([[6.5, 4.5]]), np.array([[2.0, 0.0]]), np.array([3.0]))[0], 3.0 * np.exp(0.04))
