"""4D-GS style deformation field: a multi-resolution HexPlane and a tiny MLP.

It learns residuals on top of the explicit looping motion (``motion_field``). Each moving
Gaussian has two copies (forward from frame 0, backward from frame N) that sit at the same
place at the same frame yet need different corrections, so the field is queried, as in 4D-GS,
at the canonical (t = 0) position x0 and at the copy's own Lagrangian time tau: t for the
forward copy, t - N for the backward one, so tau spans [-N, N]. This is how the loop closes:
the visible copy at frame 0 (forward, tau = 0) and at frame N (backward, tau = 0) make the same
query, so deformation(frame 0) == deformation(frame N) exactly. Every residual is further
multiplied by tau / N: frame 0 is then exactly the stage-one 3D Gaussians that all views agreed
on, and a constant MLP output is a velocity correction (a trajectory error grows like tau * dv,
with opposite signs along the forward and the backward copy).

Features: six planes xy, xz, yz, xt, yt, zt per resolution, sampled bilinearly with
``grid_sample``, multiplied across planes (K-Planes / 4D-GS), concatenated over resolutions.

Given the camera the loop is supervised from (the input view), the planes span that view's
(u, v, disparity) instead of world xyz. Gaussians lifted from the photo are spread evenly in
those coordinates; a world box from the near water to the far sky shell gives most cells to empty
space. Position residuals are then kept perpendicular to the view's rays: the input view cannot
see motion along them, and the side views' pseudo truth is the explicit loop, so nothing would
constrain it (3D-MOM's motion along the rays is kept as it is).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backend.model.camera import Camera, project_points
from backend.model.gaussians import Gaussians
from backend.model.motion_field import LoopedGaussians

# (first axis, second axis) of each plane; axis 3 is time.
PLANES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))


@dataclass
class DeformConfig:
    features: int = 16  # channels per plane
    base_resolution: int = 32  # spatial plane resolution at the coarsest level
    multires: tuple[int, ...] = (1, 2)  # spatial resolution multipliers
    time_resolution: int = 0  # samples over tau in [-N, N]; 0 = N + 1 (one per two frames)
    hidden: int = 64
    margin: float = 0.05  # bounding-box padding, as a fraction of its size
    # Residual bounds (tanh) at |tau| = N: a stray gradient cannot fling a Gaussian off the scene.
    max_shift: float = 0.25  # fraction of the moving region's extent
    # ... and at most this many times the copies' mean travel over the loop. Adam's first steps move
    # every head weight by about the learning rate whatever the gradient, so the bound sets the
    # first steps' size: at a quarter of the extent, 15 steps threw the synthetic scenes' copies
    # (0.5-1 px/frame) from 0.1-0.2 to 0.5 px off their 2D-loop trajectories, and draft's 150 steps
    # went on recovering. Twice the travel still lets the field double, cancel or turn the explicit
    # velocity. 0 = the extent bound alone.
    max_shift_travel: float = 2.0
    max_log_scale: float = 1.0
    max_rot: float = 0.5  # quaternion residual per component (unit quaternions)


class HexPlane(nn.Module):
    """Multi-resolution six-plane feature grid over normalised (x, y, z, tau) in [-1, 1]^4."""

    def __init__(self, features: int, resolutions: list[int], time_resolution: int) -> None:
        super().__init__()
        self.features = features
        self.levels = nn.ModuleList()
        for r in resolutions:
            level = nn.ParameterList()
            for a, b in PLANES:
                ra = r if a < 3 else time_resolution
                rb = r if b < 3 else time_resolution
                # grid_sample indexes (W, H) with grid (x, y): width follows axis a, height axis b.
                if b == 3:  # space-time planes start at one: the product then ignores time
                    p = torch.ones(1, features, rb, ra)
                else:
                    p = torch.empty(1, features, rb, ra).uniform_(0.1, 0.5)
                level.append(nn.Parameter(p))
            self.levels.append(level)

    @property
    def out_dim(self) -> int:
        return self.features * len(self.levels)

    def forward(self, xyzt: Tensor) -> Tensor:
        """Features (P, F * levels) at points (P, 4) in [-1, 1]."""
        return self.sample_batched(xyzt) if xyzt.is_cuda else self.sample_per_plane(xyzt)

    def sample_per_plane(self, xyzt: Tensor) -> Tensor:
        """One ``grid_sample`` per plane (the CPU path: memory-bound, batching gained nothing there)."""
        outs = []
        for level in self.levels:
            feat = None
            for (a, b), plane in zip(PLANES, level):
                grid = xyzt[:, [a, b]].view(1, 1, -1, 2).to(plane.dtype)
                s = F.grid_sample(plane, grid, mode="bilinear", padding_mode="border", align_corners=True)
                s = s[0, :, 0].T  # (P, F)
                feat = s if feat is None else feat * s
            outs.append(feat)
        return torch.cat(outs, -1)

    def sample_batched(self, xyzt: Tensor) -> Tensor:
        """The same features with one batched ``grid_sample`` per group of same-shaped planes (the three
        space planes, the three space-time planes): 4 kernels for two levels instead of 12, forward and
        backward. On a GPU a 4D iteration at 1280x720 spent ~33 of its 37 ms outside the rasteriser,
        in small launches like these."""
        outs = []
        for level in self.levels:
            feat = None
            for group in ((0, 1, 2), (3, 4, 5)):
                planes = torch.cat([level[i] for i in group])  # (3, F, h, w)
                grid = torch.stack([xyzt[:, list(PLANES[i])] for i in group])[:, None].to(planes.dtype)  # (3, 1, P, 2)
                s = F.grid_sample(planes, grid, mode="bilinear", padding_mode="border", align_corners=True)[:, :, 0]
                prod = s[0] * s[1] * s[2]  # (F, P)
                feat = prod if feat is None else feat * prod
            outs.append(feat.T)
        return torch.cat(outs, -1)

    def regularisers(self) -> dict[str, Tensor]:
        """Total variation in space, second-difference smoothness in time, L1 of time planes from 1."""
        tv, smooth, l1 = [], [], []
        for level in self.levels:
            for (a, b), p in zip(PLANES, level):
                dx = (p[..., :, 1:] - p[..., :, :-1]).pow(2).mean()  # along axis a (always spatial)
                if b == 3:
                    tv.append(dx)
                    d2 = p[..., 2:, :] - 2 * p[..., 1:-1, :] + p[..., :-2, :]  # along time
                    smooth.append(d2.pow(2).mean())
                    l1.append((1.0 - p).abs().mean())
                else:
                    dy = (p[..., 1:, :] - p[..., :-1, :]).pow(2).mean()
                    tv.append(dx + dy)
        return {"tv": torch.stack(tv).mean(), "time_smooth": torch.stack(smooth).mean(),
                "time_l1": torch.stack(l1).mean()}


class Deformation4D(nn.Module):
    """Residual position, rotation (quaternion) and log-scale of moving Gaussians at time tau."""

    def __init__(self, bbox_min: Tensor, bbox_max: Tensor, n_frames: int, config: DeformConfig | None = None,
                 view: Camera | None = None, world_extent: float | None = None, travel: float | None = None) -> None:
        """``bbox_min``/``bbox_max`` bound the field's domain: world xyz, or with ``view`` that view's
        coordinates (``_to_view``). ``world_extent`` (default: the box's largest side), the moving
        region's size in world units, and ``travel``, the copies' mean path over the loop (world
        units; None: not used), bound the position residuals (``DeformConfig``)."""
        super().__init__()
        cfg = config or DeformConfig()
        self.config = cfg
        self.n_frames = int(n_frames)
        dev = bbox_min.device
        lo, hi = bbox_min.detach().float(), bbox_max.detach().float()
        pad = (hi - lo).clamp_min(1e-6) * cfg.margin
        self.register_buffer("lo", lo - pad)
        self.register_buffer("hi", hi + pad)
        ext = float((hi - lo).max()) if world_extent is None else float(world_extent)
        self.register_buffer("world_extent", torch.tensor(ext * (1 + 2 * cfg.margin), device=dev))
        bound = cfg.max_shift * float(self.world_extent)
        if travel is not None and travel > 0.0 and cfg.max_shift_travel > 0.0:
            bound = min(bound, cfg.max_shift_travel * float(travel))
        self.register_buffer("shift_bound", torch.tensor(bound, device=dev))
        self.view = view  # the supervising camera: view coordinates and ray-perpendicular residuals
        if view is not None:
            self.register_buffer("view_w2c", torch.as_tensor(view.w2c[:3], dtype=torch.float32, device=dev))
            self.register_buffer("view_K", torch.as_tensor(view.K, dtype=torch.float32, device=dev))
            self.register_buffer("view_origin", torch.as_tensor(view.center, dtype=torch.float32, device=dev))
        else:
            self.view_origin = None
        tres = cfg.time_resolution or self.n_frames + 1
        self.planes = HexPlane(cfg.features, [cfg.base_resolution * m for m in cfg.multires], max(tres, 3))
        self.trunk = nn.Sequential(nn.Linear(self.planes.out_dim, cfg.hidden), nn.ReLU(),
                                   nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU())
        self.head_pos = nn.Linear(cfg.hidden, 3)
        self.head_rot = nn.Linear(cfg.hidden, 4)
        self.head_scale = nn.Linear(cfg.hidden, 3)
        for h in (self.head_pos, self.head_rot, self.head_scale):  # start as the explicit motion
            nn.init.zeros_(h.weight)
            nn.init.zeros_(h.bias)

    @classmethod
    def for_loop(cls, looped: LoopedGaussians, config: DeformConfig | None = None,
                 view: Camera | None = None) -> "Deformation4D":
        """A field whose domain is the bounding box of the moving Gaussians at t = 0 (in ``view``'s
        coordinates when one is given).

        With a view, only the Gaussians it sees inside its image span the domain: the fluid past
        the photo's edge (the margin ring's) would widen the grid by the ring on every side and
        coarsen it over the photo, where all the supervision is. Those Gaussians take the field's
        values at the domain's edge (``normalise`` clamps), as they take the edge's velocity."""
        x0 = looped.base.means[looped.moving_idx]
        m, n = looped.n_moving, looped.n_frames
        if m == 0:
            lo = hi = torch.zeros(3, device=x0.device)
            return cls(lo, hi, n, config, view, 0.0).to(x0.device)
        y = x0 if view is None else _to_view(x0, view)
        inside = torch.ones(m, dtype=torch.bool, device=x0.device)
        if view is not None:
            inside = (y[:, :2] >= 0).all(-1) & (y[:, :2] <= 1).all(-1)
            if not bool(inside.any()):  # nothing in view (not a loop the pipeline makes): the whole set
                inside[:] = True
        x0, y = x0[inside], y[inside]
        extent = float((x0.max(0).values - x0.min(0).values).max())
        # the forward copies' summed steps: the path length, not the (possibly curved) chord
        travel = float((looped.means[1:, :m][:, inside] - looped.means[:-1, :m][:, inside]).norm(dim=-1).sum(0).mean())
        return cls(y.min(0).values, y.max(0).values, n, config, view, extent, travel).to(x0.device)

    def normalise(self, x0: Tensor, tau: Tensor) -> Tensor:
        y = x0 if self.view is None else _to_view(x0, self.view, self.view_w2c, self.view_K)
        xyz = 2.0 * (y - self.lo) / (self.hi - self.lo) - 1.0
        t = tau / self.n_frames
        return torch.cat([xyz.clamp(-1, 1), t[:, None].clamp(-1, 1)], -1)

    def forward(self, x0: Tensor, tau: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(dx (P,3) world units, dq (P,4) added to wxyz, ds (P,3) added to log-scales)."""
        h = self.trunk(self.planes(self.normalise(x0, tau)))
        gate = (tau / self.n_frames)[:, None]
        c = self.config
        dx = self.shift_bound * torch.tanh(self.head_pos(h))
        dq = c.max_rot * torch.tanh(self.head_rot(h))
        ds = c.max_log_scale * torch.tanh(self.head_scale(h))
        return gate * dx, gate * dq, gate * ds

    def regularisers(self) -> dict[str, Tensor]:
        return self.planes.regularisers()


def _to_view(x: Tensor, view: Camera, w2c: Tensor | None = None, K: Tensor | None = None) -> Tensor:
    """World points (P, 3) as (u / W, v / H, 1 / z) in ``view`` (z clamped in front of the camera)."""
    uv, z = project_points(x, view, w2c, K)
    return torch.stack([uv[:, 0] / view.width, uv[:, 1] / view.height, 1.0 / z.clamp_min(1e-6)], -1)


def _canonical(looped: LoopedGaussians) -> tuple[Tensor, Tensor, Tensor]:
    """Both copies' t = 0 position, unit quaternion and log-scales (2M, ...)."""
    canon = looped.base.subset(looped.moving_idx)
    q = canon.quats / canon.quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return canon.means.repeat(2, 1), q.repeat(2, 1), canon.log_scales.repeat(2, 1)


def deformed_state(looped: LoopedGaussians, deform: Deformation4D, t: int,
                   canonical: tuple[Tensor, Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The 2M moving copies at integer frame t in [0, N] with the learnt residuals: (means, unit-ish
    quaternions, log-scales), forward copies first (differentiable)."""
    if not 0 <= t <= looped.n_frames:
        raise ValueError(f"frame {t} is outside the loop [0, {looped.n_frames}]")
    x0, q0, s0 = canonical if canonical is not None else _canonical(looped)
    dx, dq, ds = deform(x0, looped.copy_times(t))
    x = looped.means[t]
    if deform.view_origin is not None:  # residuals across the supervising view's rays (module doc)
        ray = x - deform.view_origin
        ray = ray / ray.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        dx = dx - (dx * ray).sum(-1, keepdim=True) * ray
    return x + dx, q0 + dq, s0 + ds


def deform_frame(looped: LoopedGaussians, deform: Deformation4D, t: int) -> Gaussians:
    """Integer frame t in [0, N] of ``looped`` with the learnt residuals on its moving copies, as one
    exported set (differentiable)."""
    return looped.assemble(t, *deformed_state(looped, deform, t))


def deform_layers(looped: LoopedGaussians, deform: Deformation4D, t: int) -> tuple[Gaussians, Gaussians]:
    """The (forward, backward) render layers of frame t in [0, N] with the learnt residuals (differentiable)."""
    return looped.layers_from(*deformed_state(looped, deform, t))


@torch.no_grad()
def bake(looped: LoopedGaussians, deform: Deformation4D) -> LoopedGaussians:
    """Evaluate the field at every integer frame 0..N into a plain per-frame LoopedGaussians."""
    canonical = _canonical(looped)
    means, quats, scales = [], [], []
    for t in range(looped.n_frames + 1):
        x, q, sc = deformed_state(looped, deform, t, canonical)
        means.append(x)
        quats.append(q)
        scales.append(sc)
    return LoopedGaussians(looped.base, looped.n_frames, looped.moving_idx, torch.stack(means),
                           torch.stack(quats), torch.stack(scales))
