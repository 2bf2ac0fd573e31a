"""3D Motion Optimisation Module (3D-MOM): one 3D velocity per moving point, fitted to all views.

Every view carries its own 2D flow, estimated independently, so the flows disagree about the
same point's motion. 3D-MOM finds, for each moving point p, the displacement d (world units per
frame) whose projection P_v(p + d) - P_v(p) matches each view's flow F_v(P_v(p)) under L1, over
the views where p is the visible surface (z-buffer test) and inside that view's mask.

Compared with the reference code (mean L1 over all pixels, SGD, ~200 steps, all points) we
normalise per point (each point's loss is the mean over *its* visible views), fit only the masked
points, optimise a per-point pixel-scaled parameter (d = theta * z / f, so one unit of theta is
about one input pixel and one learning rate fits near and far points) with Adam and a plateau
schedule, and stop on convergence. The start is the input view's flow lifted onto the surface
(``flows.lift_onto_surface``).

Consistency metric (pixels at the working resolution), one operator for before and after: a
view's 2D flow g at a point p says only that p ends up on the view ray through P_v(p) + g. We lift
it onto the plane of constant input-camera depth through the fitted end point p + d (our best
estimate of the end point's depth) and project that into the input view: e_v. The views agree
when all e_v coincide; the per-point EPE is the mean |e_v - e_w| over pairs of views that see p,
averaged over points. ``consistency_epe_before`` uses each view's own flow;
``consistency_epe_after`` uses the fitted d re-projected into every view. The after value is
computed through the same code path (a re-projection bug shows up there) and is ~0 when the
motion is one 3D motion; how far that motion is from each view's own flow is
``fit_residual_px`` (mean L1 per point and view). ``*_flat`` variants lift onto the plane through
p itself, ignoring the fitted depth motion, so they charge any depth component of d to "after".
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from backend.model.camera import Camera
from backend.infra.events import EventSink
from backend.stages.flows import ViewFlows, lift_onto_surface, sample_bilinear, surface_slope

ZTEST_REL = 0.03  # visible when within 3 % of the z-buffer depth at the projected pixel


@dataclass
class Motion3D:
    """Per-point 3D velocity in world units per frame (zeros for static points)."""

    velocity: np.ndarray  # (N, 3) float32
    moving: np.ndarray  # (N,) bool
    metrics: dict = field(default_factory=dict)

    def velocity_map(self, height: int, width: int) -> np.ndarray:
        """(H, W, 3) map of the velocities, for points lifted one per pixel in raster order."""
        if self.velocity.shape[0] != height * width:
            raise ValueError(f"velocity_map: {self.velocity.shape[0]} points are not one per pixel of {width}x{height}")
        return self.velocity.reshape(height, width, 3)


@dataclass
class _Observations:
    """What each view says about each moving point (fixed during the fit)."""

    uv: torch.Tensor  # (V, M, 2) projection of p in each view
    target: torch.Tensor  # (V, M, 2) view flow at that pixel
    vis: torch.Tensor  # (V, M) float 0/1: p is the visible masked surface in the view


def optimize_3d_motion(points_xyz: np.ndarray, moving: np.ndarray, cameras: Sequence[Camera], view_flows: ViewFlows,
                       input_index: int = 0, iters: int = 3000, device: str = "cpu", events: EventSink | None = None,
                       lr: float = 0.05, smooth_weight: float = 0.0, depth_weight: float = 0.005, rel_tol: float = 1e-3, min_lr: float = 1e-3) -> Motion3D:
    """Fit one 3D displacement per moving point to every view's flow (see the module docstring).

    ``lr`` is in input pixels per Adam step. Every 25 steps the loss is compared with the last
    check; when it improved by less than ``rel_tol`` (relative) the rate drops by 3x, and the fit
    stops once the rate is under ``min_lr`` px or after ``iters`` steps. ``smooth_weight`` adds an
    L1 penalty between 4-neighbours in the input view (in pixel units). ``depth_weight`` is a
    light L1 prior on motion along the input camera's axis, towards the surface-following start:
    the views' baselines observe that direction only weakly, and without a prior Adam lets it
    drift on noise (water surfaces rising and sinking); strong multi-view evidence still overrides it.
    """
    t_start = time.perf_counter()
    xyz = np.asarray(points_xyz, np.float64)
    moving = np.asarray(moving, bool)
    N = len(xyz)
    idx = np.nonzero(moving)[0]
    M = len(idx)
    dev = torch.device(device)
    cam0 = cameras[input_index]
    velocity = np.zeros((N, 3), np.float32)
    if M == 0:
        return Motion3D(velocity, moving, {"moving_points": 0})

    p = xyz[idx]
    uv0, z0 = cam0.project(p)
    f0 = float(np.sqrt(cam0.K[0, 0] * cam0.K[1, 1]))
    scale = np.abs(z0) / f0  # world units per input pixel at each point's depth
    init_flow = _masked_sample(view_flows.flows[input_index], view_flows.masks[input_index], uv0)
    d_init = lift_onto_surface(cam0, surface_slope(view_flows.depth[input_index]), uv0, init_flow, z0) - p

    obs = _observations(p, cameras, view_flows, dev)
    P = torch.as_tensor(p, dtype=torch.float64, device=dev)
    S = torch.as_tensor(scale, dtype=torch.float64, device=dev)[:, None]
    Rt = _stack_cameras(cameras, dev)
    nvis = obs.vis.sum(0)  # (M,)
    fitted = nvis > 0
    wpt = torch.where(fitted, 1.0 / nvis.clamp(min=1), torch.zeros_like(nvis))
    n_fit = int(fitted.sum())
    pairs = _neighbour_pairs(uv0, cam0.width, cam0.height, dev) if smooth_weight > 0 else None

    axis0 = torch.as_tensor(cam0.w2c[2, :3], dtype=torch.float64, device=dev)  # input camera's viewing axis
    theta_init = torch.as_tensor(d_init / scale[:, None], dtype=torch.float64, device=dev)
    theta = theta_init.clone().requires_grad_(True)

    def data_loss(th: torch.Tensor) -> torch.Tensor:
        r = (_project(Rt, P + th * S) - obs.uv - obs.target).abs().sum(-1)  # (V, M) L1 in px
        return ((r * obs.vis).sum(0) * wpt).sum() / max(n_fit, 1)

    def total_loss(th: torch.Tensor) -> torch.Tensor:
        loss = data_loss(th)
        if pairs is not None:
            loss = loss + smooth_weight * (th[pairs[0]] - th[pairs[1]]).abs().sum(-1).mean()
        if depth_weight > 0:
            loss = loss + depth_weight * ((th - theta_init) @ axis0).abs().mean()
        return loss

    with torch.no_grad():
        loss_init = float(data_loss(theta))
    step = _adam_on_plateau(theta, total_loss, loss_init, lr, iters, rel_tol, min_lr, events)

    with torch.no_grad():
        th = theta.detach()
        loss_final = float(data_loss(th))
        d = (th * S).cpu().numpy()
    # Points no view sees as moving keep the input view's lift (the best information we have).
    d = np.where(fitted.cpu().numpy()[:, None], d, d_init)
    velocity[idx] = d.astype(np.float32)
    metrics = _fit_metrics(d, cam0, scale, M, n_fit, len(cameras), nvis[fitted], loss_init, loss_final, step,
                           time.perf_counter() - t_start)
    metrics.update(consistency_metrics(p, cameras, view_flows, obs, d, input_index))
    return Motion3D(velocity=velocity, moving=moving, metrics=metrics)


def _fit_metrics(d: np.ndarray, cam0: Camera, scale: np.ndarray, n_moving: int, n_fit: int, n_views: int,
                 views_per_point: torch.Tensor, loss_init: float, loss_final: float, steps: int, seconds: float) -> dict:
    d_cam0 = (d @ cam0.w2c[:3, :3].T) / scale[:, None]  # in the input camera's axes, in input pixels
    return {
        "moving_points": int(n_moving),
        "fitted_points": n_fit,
        "views": n_views,
        "mean_views_per_point": round(float(views_per_point.mean()) if n_fit else 0.0, 3),
        "loss_initial_px": round(loss_init, 6),
        "fit_residual_px": round(loss_final, 6),
        "iterations": steps,
        "optimize_seconds": round(seconds, 3),
        "mean_speed_px": round(float(np.linalg.norm(d_cam0[:, :2], axis=1).mean()), 6),
        "mean_depth_speed_px": round(float(np.abs(d_cam0[:, 2]).mean()), 6),
    }


def _adam_on_plateau(theta: torch.Tensor, loss_fn, start_loss: float, lr: float, iters: int, rel_tol: float,
                     min_lr: float, events: EventSink | None) -> int:
    """Adam on ``theta``; every 25 steps a relative gain under ``rel_tol`` cuts the rate by 3x, and the fit
    stops once it is under ``min_lr`` or after ``iters`` steps. Returns the steps taken."""
    opt = torch.optim.Adam([theta], lr=lr)
    last_check, cur_lr, step = start_loss, lr, 0
    for step in range(1, iters + 1):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(theta)
        loss.backward()
        opt.step()
        if step % 25 == 0:
            cur = float(loss.detach())
            if events is not None:
                events.progress("mom3d", min(step / iters, 1.0), loss_px=round(cur, 5))
            if last_check - cur < rel_tol * max(last_check, 1e-12):
                cur_lr /= 3.0
                if cur_lr < min_lr:
                    break
                for g in opt.param_groups:
                    g["lr"] = cur_lr
            last_check = cur
    return step


def consistency_metrics(p: np.ndarray, cameras: Sequence[Camera], view_flows: ViewFlows, obs: _Observations,
                        d: np.ndarray, input_index: int = 0) -> dict:
    """``consistency_epe_before`` / ``_after`` in input-view pixels (see the module docstring)."""
    Rt = _stack_cameras(cameras, obs.uv.device)
    P = torch.as_tensor(p, dtype=torch.float64, device=obs.uv.device)
    with torch.no_grad():
        fitted_flow = _project(Rt, P + torch.as_tensor(d, dtype=torch.float64, device=P.device)) - obs.uv
        cam0 = cameras[input_index]
        z_plane = (p + d) @ cam0.w2c[2, :3] + cam0.w2c[2, 3]  # input-camera depth of the fitted end point
        out = {}
        # flat: the plane through p itself, a lift that knows nothing about the fitted depth motion
        for key, zp in (("", z_plane), ("_flat", p @ cam0.w2c[2, :3] + cam0.w2c[2, 3])):
            for when, g in (("before", obs.target), ("after", fitted_flow)):
                out[f"consistency_epe_{when}{key}"] = round(_pairwise_epe(_to_input_view(p, cameras, obs.uv, g, zp, input_index), obs.vis), 6)
    return out


# --- internals ---------------------------------------------------------------------------------

def _masked_sample(flow: np.ndarray, mask: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear flow sample that ignores pixels outside the mask (no bleeding of zeros at edges)."""
    num = sample_bilinear(flow * mask[..., None], uv)
    den = sample_bilinear(mask[..., None].astype(np.float64), uv)
    return np.where(den > 1e-6, num / np.maximum(den, 1e-6), 0.0)


def _observations(p: np.ndarray, cameras: Sequence[Camera], vf: ViewFlows, dev: torch.device) -> _Observations:
    V, M = len(cameras), len(p)
    uv_all = np.zeros((V, M, 2))
    tgt = np.zeros((V, M, 2))
    vis = np.zeros((V, M))
    for v, cam in enumerate(cameras):
        uv, z = cam.project(p)
        H, W = vf.masks[v].shape
        xi, yi = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
        inside = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H) & (z > 0)
        ok = np.zeros(M, bool)
        xi_c, yi_c = np.clip(xi, 0, W - 1), np.clip(yi, 0, H - 1)
        ok[inside] = vf.masks[v][yi_c[inside], xi_c[inside]] & (z[inside] <= vf.depth[v][yi_c[inside], xi_c[inside]] * (1 + ZTEST_REL))
        uv_all[v] = uv
        tgt[v] = _masked_sample(vf.flows[v], vf.masks[v], uv)
        vis[v] = ok
    f = lambda a: torch.as_tensor(a, dtype=torch.float64, device=dev)  # noqa: E731
    return _Observations(uv=f(uv_all), target=f(tgt), vis=f(vis))


def _stack_cameras(cameras: Sequence[Camera], dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    R = torch.as_tensor(np.stack([c.w2c[:3, :3] for c in cameras]), dtype=torch.float64, device=dev)
    t = torch.as_tensor(np.stack([c.w2c[:3, 3] for c in cameras]), dtype=torch.float64, device=dev)
    K = torch.as_tensor(np.stack([c.K for c in cameras]), dtype=torch.float64, device=dev)
    return R, t, K


def _project(Rt: tuple[torch.Tensor, torch.Tensor, torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    """World points (M, 3) into every camera: pixels (V, M, 2). One GEMM plus elementwise ops
    (einsum with batched small matrices is an order of magnitude slower on CPU)."""
    R, t, K = Rt
    V, M = R.shape[0], X.shape[0]
    pc = (X @ R.reshape(V * 3, 3).T).reshape(M, V, 3).transpose(0, 1) + t[:, None, :]
    x = pc[..., 0] / pc[..., 2].clamp(min=1e-9)
    y = pc[..., 1] / pc[..., 2].clamp(min=1e-9)
    u = K[:, None, 0, 0] * x + K[:, None, 0, 1] * y + K[:, None, 0, 2]
    v = K[:, None, 1, 0] * x + K[:, None, 1, 1] * y + K[:, None, 1, 2]
    return torch.stack([u, v], dim=-1)


def _to_input_view(p: np.ndarray, cameras: Sequence[Camera], uv: torch.Tensor, g: torch.Tensor, z_plane: np.ndarray,
                   input_index: int) -> torch.Tensor:
    """Each view's 2D flow g (V, M, 2) lifted onto the plane of input-camera depth ``z_plane`` (M,)
    (the view ray through the flow's end pixel meets that plane), seen in the input view."""
    cam0 = cameras[input_index]
    n = cam0.w2c[2, :3]  # input camera's z axis in world
    uv0, _ = cam0.project(p)
    out = np.zeros(tuple(g.shape))
    q = (uv + g).cpu().numpy()
    for v, cam in enumerate(cameras):
        c = cam.center
        Kinv = np.linalg.inv(cam.K)
        rays_c = np.concatenate([q[v], np.ones((len(p), 1))], 1) @ Kinv.T
        rays = rays_c @ cam.c2w[:3, :3].T  # world directions
        denom = rays @ n
        s = (z_plane - cam0.w2c[2, 3] - c @ n) / np.where(np.abs(denom) < 1e-12, 1e-12, denom)
        X = c[None, :] + s[:, None] * rays
        out[v] = cam0.project(X)[0] - uv0
    return torch.as_tensor(out, dtype=torch.float64, device=uv.device)


def _pairwise_epe(e: torch.Tensor, vis: torch.Tensor, chunk: int = 4096) -> float:
    """Mean over points (seen by >= 2 views) of the mean |e_v - e_w| over pairs of views seeing it."""
    V, M, _ = e.shape
    total, count = 0.0, 0
    for s in range(0, M, chunk):
        ev = e[:, s:s + chunk].transpose(0, 1)  # (m, V, 2)
        w = vis[:, s:s + chunk].transpose(0, 1)  # (m, V)
        dist = (ev[:, :, None, :] - ev[:, None, :, :]).norm(dim=-1)  # (m, V, V); cdist's mm path is inexact
        pw = w[:, :, None] * w[:, None, :]
        npairs = pw.sum((1, 2)) - w.sum(1)  # ordered pairs v != w
        ok = npairs > 0
        per_point = (dist * pw).sum((1, 2)) / npairs.clamp(min=1)
        total += float(per_point[ok].sum())
        count += int(ok.sum())
    return total / max(count, 1)


def _neighbour_pairs(uv0: np.ndarray, W: int, H: int, dev: torch.device) -> torch.Tensor:
    """Index pairs (2, P) of moving points that are right/down neighbours in the input view."""
    xi = np.clip(np.floor(uv0[:, 0]).astype(np.int64), 0, W - 1)
    yi = np.clip(np.floor(uv0[:, 1]).astype(np.int64), 0, H - 1)
    grid = np.full((H, W), -1, np.int64)
    grid[yi, xi] = np.arange(len(uv0))
    a = np.concatenate([grid[:, :-1].ravel(), grid[:-1, :].ravel()])
    b = np.concatenate([grid[:, 1:].ravel(), grid[1:, :].ravel()])
    ok = (a >= 0) & (b >= 0)
    return torch.as_tensor(np.stack([a[ok], b[ok]]), device=dev)


# ----------------------------------------------------------------------------- the stage

INPUTS = ("image", "lift", "multiview", "flows", "mask")
CACHED = True
# Neighbour smoothness of the 3D-MOM fit (L1, input pixels): without it, per-point noise makes
# neighbouring Gaussians drift at slightly different speeds and tears textures into streaks.
SMOOTH = 0.2
LIFT = "surface"  # how the 2D motion's end is lifted (flows module doc); part of the cache key


def params(ctx) -> dict:
    return {"mom3d": ctx.job.mom3d, "iters": ctx.preset.mom3d_iters, "smooth": SMOOTH, "lift": LIFT}


def run(ctx, image, lift, multiview, flows, mask) -> Motion3D:
    moving = mask.reshape(-1)[lift.pixel]
    if not ctx.job.mom3d:
        return input_view_motion(lift.xyz, moving, image.camera, flows.input_view, flows.views.depth[0])
    return optimize_3d_motion(lift.xyz, moving, multiview.cameras, flows.views, iters=ctx.preset.mom3d_iters,
                              device=str(ctx.device), events=ctx.events, smooth_weight=SMOOTH)


def report(motion: Motion3D) -> dict:
    return {k: round(float(v), 5) if isinstance(v, (float, np.floating)) else v for k, v in motion.metrics.items()}


def input_view_motion(xyz: np.ndarray, moving: np.ndarray, cam: Camera, flow0: np.ndarray, depth0: np.ndarray) -> Motion3D:
    """The "without 3D-MOM" ablation: the input view's 2D flow lifted onto the surface of the input
    view's depth ``depth0`` (H, W), no multi-view fit."""
    uv, z = cam.project(xyz.astype(np.float64))
    f = sample_bilinear(flow0, uv) * moving[:, None]
    vel = (lift_onto_surface(cam, surface_slope(depth0), uv, f, z) - xyz).astype(np.float32) * moving[:, None]
    return Motion3D(vel, moving, {"mom3d": False})
