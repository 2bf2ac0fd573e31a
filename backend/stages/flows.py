"""Per-view motion masks and 2D Eulerian flows for the multi-view training cameras.

Each view gets its own mask (the moving points rendered with a z-buffer) and its own 2D flow,
estimated in that view independently, exactly as the paper does. That independence is what
makes the per-view flows disagree with each other in 3D; 3D-MOM (``mom3d.py``) then fits one
3D motion to all of them.

- Hint arrows: each arrow's start is lifted into 3D at the depth of its start pixel in the input
  view and its end onto the surface (below), both are projected into the view, and the view's
  flow is densified from the projected arrows inside the view's own mask by a :class:`FlowEstimator`.
- A dense flow (px/frame in the input view): every point's start is lifted at the point's depth
  and its end onto the surface, both are projected into the view, and the differences are
  z-buffer rendered.

Surface-following lift: a 2D motion says where a point goes in the photo, not how its depth
changes. Water, clouds on the sky and smoke over a slope move along the surface the photo shows,
so the end of one frame's motion is lifted at the depth the input view's surface has there:
z exp(grad(log z) . flow), with the log-depth slope taken one-sided (minmod) so that it does not
jump across an occlusion edge. Lifting both ends at the same depth, as this stage did before,
moves water that flows away from the camera off its surface: on a synthetic scene the copies sat
9% short of the true depth after eight frames, which shows as parallax error from every camera
that moves towards them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from backend.model.camera import Camera
from backend.infra.errors import LoopscapeError
from backend.io.motion_inputs import MotionInputs
from backend.stages.multiview import render_points_zbuffer

ZTEST_REL = 0.03  # a point is visible when its depth is within 3 % of the z-buffer depth
# Largest change of log-depth in one frame of the surface-following lift: the slope is steep only
# at the horizon, where a surface's depth (and any estimate of it) is least reliable.
MAX_SURFACE_STEP = 0.1


class FlowEstimator(Protocol):
    """Single-image 2D flow: dense (H, W, 2) px/frame, zero outside ``mask``.

    ``hint_xy`` (K, 2) are arrow start pixels, ``hint_vel`` (K, 2) their velocities in px/frame,
    ``anchors`` (A, 2) pixels that must stay still, all in this image's pixels. A learned model
    loaded from a local checkpoint can implement this and use ``image``.
    """

    def estimate(self, image: np.ndarray | None, mask: np.ndarray, hint_xy: np.ndarray, hint_vel: np.ndarray,
                 anchors: np.ndarray) -> np.ndarray: ...


@dataclass
class HintFlowEstimator:
    """Gaussian kernel regression of the arrows: D(p) = sum w_i v_i / sum w_i, w_i = exp(-(|p-h_i|/s)^2).

    s = ``sigma_scale`` * H / K for K arrows (the prior tools use H/(2K)..H/K); anchors scale the
    flow down by (1 - exp(-(|p-a|/s_a)^2)) with s_a = ``anchor_scale`` * s.
    """

    sigma_scale: float = 0.75
    anchor_scale: float = 0.5
    min_sigma_px: float = 2.0

    def sigma(self, height: int, n_hints: int) -> float:
        return max(self.min_sigma_px, self.sigma_scale * height / max(n_hints, 1))

    def estimate(self, image: np.ndarray | None, mask: np.ndarray, hint_xy: np.ndarray, hint_vel: np.ndarray,
                 anchors: np.ndarray) -> np.ndarray:
        H, W = mask.shape
        hint_xy = np.asarray(hint_xy, np.float64).reshape(-1, 2)
        hint_vel = np.asarray(hint_vel, np.float64).reshape(-1, 2)
        if len(hint_xy) == 0:
            raise LoopscapeError("no hint arrow is available to derive the motion direction.", "Draw at least one arrow inside the moving region.")
        s = self.sigma(H, len(hint_xy))
        ys, xs = np.mgrid[0:H, 0:W]
        px = np.stack([xs + 0.5, ys + 0.5], axis=-1).reshape(-1, 2)
        d2 = ((px[:, None, :] - hint_xy[None, :, :]) ** 2).sum(-1) / (s * s)  # (HW, K)
        # normalised weights via a shifted exponent: far from every arrow the nearest one still wins
        logw = -d2 - (-d2).max(axis=1, keepdims=True)
        w = np.exp(logw)
        flow = (w @ hint_vel) / w.sum(axis=1, keepdims=True)
        anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
        if len(anchors):
            sa = self.anchor_scale * s
            da2 = ((px[:, None, :] - anchors[None, :, :]) ** 2).sum(-1) / (sa * sa)
            flow *= np.prod(1.0 - np.exp(-da2), axis=1, keepdims=True)
        flow = flow.reshape(H, W, 2) * mask[:, :, None]
        return flow.astype(np.float32)


@dataclass
class ViewFlows:
    """Per-view motion data, one entry per camera (same order)."""

    masks: np.ndarray  # (V, H, W) bool: a moving point is the visible surface here
    flows: np.ndarray  # (V, H, W, 2) float32 px/frame in each view's pixels, zero outside masks
    visible: np.ndarray  # (V, H, W) bool: some point covers the pixel (z-buffer coverage)
    depth: np.ndarray  # (V, H, W) float32 camera z of the visible surface (inf where none)


def unproject(camera: Camera, uv: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Pixels (N, 2) at camera depth z (N,) to world points (N, 3)."""
    uv = np.asarray(uv, np.float64).reshape(-1, 2)
    rays = np.concatenate([uv, np.ones((len(uv), 1))], 1) @ np.linalg.inv(camera.K).T
    pc = rays * (np.asarray(z, np.float64).reshape(-1) / rays[:, 2])[:, None]
    c2w = camera.c2w
    return pc @ c2w[:3, :3].T + c2w[:3, 3]


def sample_bilinear(field: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample an (H, W, C) field at pixel coordinates uv (N, 2) (pixel centres at +0.5), edge-clamped."""
    H, W = field.shape[:2]
    x = np.clip(uv[:, 0] - 0.5, 0, W - 1)
    y = np.clip(uv[:, 1] - 0.5, 0, H - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), W - 2 if W > 1 else 0)
    y0 = np.minimum(np.floor(y).astype(np.int64), H - 2 if H > 1 else 0)
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    f = field.reshape(H, W, -1)
    out = (f[y0, x0] * (1 - fx) * (1 - fy) + f[y0, x1] * fx * (1 - fy) + f[y1, x0] * (1 - fx) * fy + f[y1, x1] * fx * fy)
    return out


def surface_slope(depth: np.ndarray) -> np.ndarray:
    """(H, W, 2) slope of log-depth per pixel along x and y of an (H, W) depth map: the minmod
    of the one-sided differences, so a pixel next to an occlusion edge takes its own side's slope
    (or none where the two sides disagree in sign). Pixels without a finite positive depth: 0."""
    d = np.asarray(depth, np.float64)
    ok = np.isfinite(d) & (d > 0)
    log_d = np.log(np.where(ok, d, 1.0))
    slope = np.zeros(d.shape + (2,))
    for axis in (1, 0):
        diff = np.diff(log_d, axis=axis)
        valid = np.logical_and(np.take(ok, range(0, d.shape[axis] - 1), axis), np.take(ok, range(1, d.shape[axis]), axis))
        diff = np.where(valid, diff, np.nan)
        pad = [(0, 0), (0, 0)]
        pad[axis] = (1, 0)
        before = np.pad(diff, pad, constant_values=np.nan)  # the difference to the previous pixel
        pad[axis] = (0, 1)
        after = np.pad(diff, pad, constant_values=np.nan)  # ... and to the next
        one = np.where(np.isnan(before), after, np.where(np.isnan(after), before, np.nan))  # image edges, holes
        both = np.where(np.sign(before) == np.sign(after), np.sign(before) * np.minimum(np.abs(before), np.abs(after)), 0.0)
        slope[..., 0 if axis == 1 else 1] = np.nan_to_num(np.where(np.isnan(one), both, one))
    return slope.astype(np.float32)


def surface_end_depth(slope: np.ndarray, uv: np.ndarray, flow: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Depth (N,) at which points at pixels ``uv`` (N, 2) and depth ``z`` that move by ``flow`` (N, 2)
    px stay on the surface whose ``surface_slope`` is ``slope`` (module doc)."""
    step = (sample_bilinear(slope, uv) * np.asarray(flow, np.float64)).sum(-1)
    return np.asarray(z, np.float64) * np.exp(np.clip(step, -MAX_SURFACE_STEP, MAX_SURFACE_STEP))


def lift_onto_surface(camera: Camera, slope: np.ndarray, uv: np.ndarray, flow: np.ndarray, z: np.ndarray) -> np.ndarray:
    """World end points (N, 3) of motions ``flow`` (N, 2) px from pixels ``uv`` (N, 2) at depth ``z`` of
    ``camera``: the end pixel lifted at :func:`surface_end_depth`."""
    return unproject(camera, np.asarray(uv, np.float64) + flow, surface_end_depth(slope, uv, flow, z))


def input_view_flow(inputs: MotionInputs, image: np.ndarray | None = None, estimator: FlowEstimator | None = None) -> np.ndarray:
    """The input view's dense flow (H, W, 2) px/frame: the given dense flow, or the densified hints."""
    if inputs.flow is not None:
        return inputs.flow.astype(np.float32)
    est = estimator or HintFlowEstimator()
    pts, vel = inputs.hint_arrays()
    return est.estimate(image, inputs.mask, pts, vel, inputs.anchor_array())


def estimate_view_flows(points_xyz: np.ndarray, point_moving: np.ndarray, point_size: float | np.ndarray,
                        cameras: Sequence[Camera], inputs: MotionInputs, images: np.ndarray | None = None,
                        estimator: FlowEstimator | None = None, input_index: int = 0) -> ViewFlows:
    """Masks and 2D flows for every camera; ``cameras[input_index]`` is the input camera."""
    est = estimator or HintFlowEstimator()
    xyz = np.asarray(points_xyz, np.float64)
    moving = np.asarray(point_moving, bool)
    cam0 = cameras[input_index]
    uv0, z0 = cam0.project(xyz)
    if inputs.mask.shape != (cam0.height, cam0.width):
        raise ValueError(f"motion inputs are {inputs.mask.shape[::-1]} but the input camera is {cam0.width}x{cam0.height}")

    _, depth0, valid0 = render_points_zbuffer(xyz, moving[:, None].astype(np.float32), cam0, point_size)
    slope = surface_slope(depth0)
    per_point_end: np.ndarray | None = None
    if inputs.flow is not None:
        # dense flow: each moving point's end position, lifted onto the surface
        f0 = sample_bilinear(inputs.flow, uv0) * moving[:, None]
        per_point_end = lift_onto_surface(cam0, slope, uv0, f0, z0)
    else:
        hint_xy, hint_vel = inputs.hint_arrays()
        hz = _depth_at(depth0, valid0, hint_xy)
        hint_s3 = unproject(cam0, hint_xy, hz)
        hint_e3 = lift_onto_surface(cam0, slope, hint_xy, hint_vel, hz)
        anc = inputs.anchor_array()
        anc3 = unproject(cam0, anc, _depth_at(depth0, valid0, anc)) if len(anc) else np.zeros((0, 3))

    V = len(cameras)
    H, W = cam0.height, cam0.width
    masks = np.zeros((V, H, W), bool)
    flows = np.zeros((V, H, W, 2), np.float32)
    visible = np.zeros((V, H, W), bool)
    depths = np.full((V, H, W), np.inf, np.float32)
    for v, cam in enumerate(cameras):
        if (cam.width, cam.height) != (W, H):
            raise ValueError("all cameras must share the input camera's resolution")
        if per_point_end is not None:
            uv_s, _ = cam.project(xyz)
            uv_e, _ = cam.project(per_point_end)
            vals = np.concatenate([moving[:, None], (uv_e - uv_s) * moving[:, None]], 1).astype(np.float32)
            img, depth, valid = render_points_zbuffer(xyz, vals, cam, point_size)
            m = valid & (img[..., 0] > 0.5)
            flows[v] = img[..., 1:3] * m[..., None]
        else:
            img, depth, valid = render_points_zbuffer(xyz, moving[:, None].astype(np.float32), cam, point_size)
            m = valid & (img[..., 0] > 0.5)
            s_uv, s_z = cam.project(hint_s3)
            e_uv, _ = cam.project(hint_e3)
            keep = _unoccluded(s_uv, s_z, depth)
            if not keep.any():
                keep[:] = True  # kernel regression still works from arrows that are hidden or off-image
            a_uv = cam.project(anc3)[0] if len(anc3) else np.zeros((0, 2))
            image_v = images[v] if images is not None else None
            if m.any():
                flows[v] = est.estimate(image_v, m, s_uv[keep], (e_uv - s_uv)[keep], a_uv) * m[..., None]
        masks[v], visible[v], depths[v] = m, valid, depth
    return ViewFlows(masks=masks, flows=flows, visible=visible, depth=depths)


def _depth_at(depth: np.ndarray, valid: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """z-buffer depth at pixels xy (K, 2); a hole takes the nearest covered pixel's depth."""
    H, W = depth.shape
    out = np.empty(len(xy))
    vy, vx = np.nonzero(valid)
    for i, (x, y) in enumerate(np.asarray(xy).reshape(-1, 2)):
        xi, yi = min(max(int(x), 0), W - 1), min(max(int(y), 0), H - 1)
        if valid[yi, xi]:
            out[i] = depth[yi, xi]
        else:
            j = np.argmin((vx - xi) ** 2 + (vy - yi) ** 2)
            out[i] = depth[vy[j], vx[j]]
    return out


def _unoccluded(uv: np.ndarray, z: np.ndarray, depth: np.ndarray) -> np.ndarray:
    H, W = depth.shape
    xi, yi = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    inside = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H) & (z > 0)
    out = np.zeros(len(uv), bool)
    d = depth[yi[inside], xi[inside]]
    out[inside] = z[inside] <= d * (1 + ZTEST_REL)
    return out


# ----------------------------------------------------------------------------- the stage

INPUTS = ("image", "lift", "multiview", "motion")


@dataclass
class Flows:
    views: ViewFlows  # per training view
    input_view: np.ndarray  # (H, W, 2) px/frame: the requested motion at the input view
    requested_speed_px: float  # its mean length inside the mask


def run(ctx, image, lift, multiview, motion) -> Flows:
    moving = motion.mask.reshape(-1)[lift.pixel]
    vf = estimate_view_flows(lift.xyz, moving, lift.pixel_size, multiview.cameras, motion, multiview.images)
    flow0 = input_view_flow(motion, image.rgb)
    return Flows(vf, flow0, float(np.linalg.norm(flow0[motion.mask], axis=-1).mean()))


def report(flows: Flows) -> dict:
    return {"requested_speed_px_mean": round(flows.requested_speed_px, 4)}
