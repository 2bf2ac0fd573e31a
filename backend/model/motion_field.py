"""Eulerian 3D motion and the looping time model: the explicit "preview" 4D result.

The 3D motion (3D-MOM) is one velocity per pixel of the input view. :class:`VelocityField`
turns it into a field V(x) over all of space by projecting x into the input camera and sampling
the map bilinearly, so densified Gaussians that no longer map 1:1 to pixels still move.

The loop is the paper's symmetric splatting done in 3D. Every moving Gaussian gets two copies:
one advected forward from frame 0, x_f(t) = Phi^t(x0), and one advected backward from frame N,
x_b(t) = Phi^{-(N-t)}(x0), blended (1 - t/N) : t/N. At t = N the forward copy has no weight and
the backward copy sits at x0, so frame N renders like frame 0 and the video loops. Static
Gaussians are a single copy that never moves.

The backend renders a frame as the paper's blend in image space: the scene with the forward
copies and the scene with the backward copies, each at full opacity, mixed (1 - t/N) : t/N
(:meth:`LoopedGaussians.render`). Alpha compositing cannot do that blend inside one Gaussian set:
the copies of an opaque surface interleave in depth, and whichever sorts first hides the other.
On synthetic scene 0 the one-set blend cost 4.5 dB in the moving region at the input view.

The export keeps the two layers apart (:meth:`LoopedGaussians.loop_layers`, the compact layout of
``backend.io.loop_export``), so Blender blends them like the backend. The optional full per-frame
PLY sequence (:meth:`LoopedGaussians.frame`) is one set per frame, so there the copies split the
transmittance instead: opacity 1 - (1 - o)^(1 - t/N) and
1 - (1 - o)^(t/N). Frames 0 and N are exact; in between, the front copy dominates. Every
exported frame holds the same Gaussians in the same order (importers rely on it):

    [all input Gaussians, moving ones as their forward copy] + [backward copies of the moving ones]
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from backend.model.camera import Camera, project_points
from backend.infra.errors import LoopscapeError
from backend.model.gaussians import Gaussians
from backend.render.rasterize import RenderOutput
from contract.splats import backward_weight

_OPACITY_FLOOR = 1e-7  # activated opacity of a hidden copy: far below the 1/255 render cut


class VelocityField:
    """V(x): the input view's velocity map (H, W, 3), world units per frame, zero outside the mask.

    Past the image's edge a point takes the velocity of the edge pixel nearest its projection, so
    the fluid goes on there: water that leaves the frame keeps flowing instead of piling up just
    outside it, and the margin ring's water (``lift.lift_margin``) flows in and out of the frame
    with it. A side camera sees both.

    With the photo's ``depth``, a point hidden behind a still occluder (deeper than ``1 / behind_ratio``
    times the photo's surface where it projects) moves with the fluid it continues: the velocity of
    the nearest masked pixel. Water behind a boulder then flows on behind it and comes out below it,
    instead of stopping at the boulder's outline, where the masked map is zero.
    """

    def __init__(self, velocity_map: np.ndarray | Tensor, camera: Camera, mask: np.ndarray | Tensor | None = None,
                 device: str | torch.device = "cpu", depth: np.ndarray | Tensor | None = None,
                 behind_ratio: float = 0.85) -> None:
        vel = torch.as_tensor(np.asarray(velocity_map) if not isinstance(velocity_map, Tensor) else velocity_map,
                              dtype=torch.float32, device=device)
        if vel.ndim != 3 or vel.shape[-1] != 3:
            raise LoopscapeError(f"velocity map has shape {tuple(vel.shape)}, expected (H, W, 3).",
                                 "Pass the 3D motion as one xyz velocity per input pixel.")
        if not torch.isfinite(vel).all():
            raise LoopscapeError("velocity map holds NaN or infinite values.", "Re-run the 3D motion stage.")
        if mask is None:
            m = vel.abs().sum(-1) > 0
        else:
            m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask, device=device).bool()
            if m.shape != vel.shape[:2]:
                raise LoopscapeError(f"motion mask {tuple(m.shape)} and velocity map {tuple(vel.shape[:2])} differ in size.",
                                     "Give both at the working resolution.")
        self.camera = camera
        self.mask = m
        # Masking before sampling makes the bilinear weights fade the motion out at the mask edge.
        self.velocity = vel * m[..., None].to(vel.dtype)
        self._grid = self.velocity.permute(2, 0, 1)[None].contiguous()  # (1, 3, H, W)
        self._w2c = torch.as_tensor(camera.w2c, dtype=torch.float32, device=device)
        self._K = torch.as_tensor(camera.K, dtype=torch.float32, device=device)
        self._behind: tuple[Tensor, Tensor] | None = None  # (continued velocity (1, 3, H, W), depth (1, 1, H, W))
        self.behind_ratio = float(behind_ratio)
        if depth is not None and bool(m.any()) and not bool(m.all()):
            d = torch.as_tensor(np.asarray(depth) if not isinstance(depth, Tensor) else depth, dtype=torch.float32,
                                device=device)
            if d.shape != vel.shape[:2]:
                raise LoopscapeError(f"depth {tuple(d.shape)} and velocity map {tuple(vel.shape[:2])} differ in size.",
                                     "Give both at the working resolution.")
            self._behind = (_continued(self.velocity, m).permute(2, 0, 1)[None].contiguous(), d[None, None])

    @property
    def device(self) -> torch.device:
        return self.velocity.device

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Sampling grid (1, 1, N, 2) of world points x (N, 3) over the map, and their depth (N,)."""
        uv, z = project_points(x, self.camera, self._w2c, self._K)
        # Pixel centres sit at +0.5, so with align_corners=False the image spans [-1, 1] exactly,
        # whatever the map's resolution relative to the camera's.
        gx = 2.0 * uv[:, 0] / self.camera.width - 1.0
        gy = 2.0 * uv[:, 1] / self.camera.height - 1.0
        return torch.stack([gx, gy], -1).view(1, 1, -1, 2).to(self._grid.dtype), z

    def _hidden(self, grid: Tensor, z: Tensor) -> Tensor:
        """(N,) bool: inside the image and behind the photo's surface there (False without a depth)."""
        if self._behind is None:
            return torch.zeros(len(z), dtype=torch.bool, device=z.device)
        surface = F.grid_sample(self._behind[1], grid, mode="nearest", padding_mode="zeros", align_corners=False)[0, 0, 0]
        return (surface > 0) & (z.to(surface.dtype) * self.behind_ratio > surface)

    def hidden(self, x: Tensor) -> Tensor:
        """(N,) bool: world points x (N, 3) that the photo's camera cannot see, behind its surface."""
        grid, z = self._project(x)
        return self._hidden(grid, z)

    def __call__(self, x: Tensor) -> Tensor:
        """Velocity (N, 3) at world points x (N, 3); zero behind the camera, the edge's past the image."""
        dt = x.dtype
        grid, z = self._project(x)
        vel = F.grid_sample(self._grid, grid, mode="bilinear", padding_mode="border", align_corners=False)
        vel = vel[0, :, 0].T.to(dt)  # (N, 3)
        if self._behind is not None:
            on = F.grid_sample(self._behind[0], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            vel = torch.where(self._hidden(grid, z)[:, None], on[0, :, 0].T.to(dt), vel)
        return vel * (z > 1e-6)[:, None].to(dt)

    def integrate(self, x0: Tensor, steps: int, direction: float = 1.0) -> Tensor:
        """Euler trajectory (steps + 1, N, 3): x_{k+1} = x_k + direction * V(x_k)."""
        out = [x0]
        x = x0
        for _ in range(int(steps)):
            x = x + direction * self(x)
            out.append(x)
        return torch.stack(out)


def _continued(velocity: Tensor, mask: Tensor) -> Tensor:
    """The masked velocity map (H, W, 3) continued outside the mask: each pixel the nearest masked one's."""
    m = mask.cpu().numpy()
    _, labels = cv2.distanceTransformWithLabels((~m).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    my, mx = np.nonzero(m)
    source = np.zeros(labels.max() + 1, np.int64)  # label -> flat index of its masked pixel
    source[labels[my, mx]] = my * m.shape[1] + mx
    flat = velocity.reshape(-1, 3)
    return flat[torch.as_tensor(source[labels], device=velocity.device)].reshape(velocity.shape)


def loop_weights(t: int | float, n_frames: int) -> tuple[float, float]:
    """Opacity multipliers (forward copy, backward copy) at frame t of an N-frame loop."""
    s = backward_weight(t, n_frames)  # the contract's rule, which Blender's compositor keyframes too
    return 1.0 - s, s


def scale_opacity_logits(logits: Tensor, factor: Tensor | float) -> Tensor:
    """Raw logits of the opacity 1 - (1 - o)^factor: the copy's share of the original's coverage.

    Splitting transmittance instead of opacity keeps two overlapping copies exactly as opaque as
    the original ((1 - o)^(1-s) (1 - o)^s = 1 - o), so the blend does not thin out mid-loop; a
    factor of 0 gives an invisible Gaussian and 1 the original.
    """
    a = torch.nn.functional.logsigmoid(-logits) * factor  # log of the copy's transmittance
    o = (-torch.expm1(a)).clamp(_OPACITY_FLOOR, 1.0 - _OPACITY_FLOOR)
    return torch.log(o) - torch.log1p(-o)


def render_blend(layers: tuple[Gaussians, Gaussians], t: float, n_frames: int, camera: Camera,
                 background: Tensor | None = None) -> RenderOutput:
    """Loop frame t from its (forward, backward) layers: (1 - t/N) R(forward) + (t/N) R(backward).

    Differentiable; a layer with zero weight is not rendered at all."""
    wf, wb = loop_weights(t, n_frames)
    if wb == 0.0:
        return layers[0].render(camera, background=background)
    if wf == 0.0:
        return layers[1].render(camera, background=background)
    a = layers[0].render(camera, background=background)
    b = layers[1].render(camera, background=background)
    return RenderOutput(colors=wf * a.colors + wb * b.colors, alpha=wf * a.alpha + wb * b.alpha,
                        depth=wf * a.depth + wb * b.depth)


@dataclass
class LoopedGaussians:
    """A seamless N-frame loop of Gaussians: frame t for t in [0, N], frame N equal to frame 0.

    ``base`` is the t = 0 set (static and moving). The per-frame state of the 2M moving copies is
    stored as (N + 1, 2M, ...) tensors, forward copies first; rotations and scales are per frame
    only when a deformation changed them (else None: the canonical values).
    """

    base: Gaussians
    n_frames: int
    moving_idx: Tensor  # (M,) indices of the moving Gaussians in ``base``
    means: Tensor  # (N + 1, 2M, 3)
    quats: Tensor | None = None  # (N + 1, 2M, 4)
    log_scales: Tensor | None = None  # (N + 1, 2M, 3)

    @property
    def n_moving(self) -> int:
        return int(self.moving_idx.numel())

    @property
    def n_gaussians(self) -> int:
        """Gaussians in every frame: all base Gaussians plus one backward copy per moving one."""
        return len(self.base) + self.n_moving

    def frame_index(self, t: int) -> int:
        """Integer frame t wrapped into [0, N); N itself maps to 0, which it renders like."""
        return int(t) % self.n_frames

    def copy_times(self, t: float) -> Tensor:
        """Lagrangian time of each copy (2M,): t along the forward trajectory, t - N backward."""
        m = self.n_moving
        dev = self.means.device
        return torch.cat([torch.full((m,), float(t), device=dev), torch.full((m,), float(t) - self.n_frames, device=dev)])

    def assemble(self, t: float, means: Tensor, quats: Tensor | None = None, log_scales: Tensor | None = None) -> Gaussians:
        """Frame-t Gaussians from the copies' state (2M, ...); differentiable in the copies' state."""
        b, idx, m = self.base, self.moving_idx, self.n_moving
        canon = b.subset(idx)
        q = quats if quats is not None else canon.quats.repeat(2, 1)
        s = log_scales if log_scales is not None else canon.log_scales.repeat(2, 1)
        wf, wb = loop_weights(t, self.n_frames)
        logits = torch.cat([scale_opacity_logits(canon.logit_opacities, wf), scale_opacity_logits(canon.logit_opacities, wb)])

        def place(base_t: Tensor, copies: Tensor) -> Tensor:
            out = base_t.index_copy(0, idx, copies[:m].to(base_t.dtype))
            return torch.cat([out, copies[m:].to(base_t.dtype)])

        return Gaussians(
            means=place(b.means, means),
            quats=place(b.quats, q),
            log_scales=place(b.log_scales, s),
            logit_opacities=place(b.logit_opacities, logits),
            sh0=torch.cat([b.sh0, canon.sh0]),
            moving=torch.cat([b.moving, torch.ones(m, dtype=torch.bool, device=b.moving.device)]),
        )

    def layers_from(self, means: Tensor, quats: Tensor | None = None,
                    log_scales: Tensor | None = None) -> tuple[Gaussians, Gaussians]:
        """(forward, backward) layers from the copies' state (2M, ...): the whole scene with the moving
        Gaussians at their forward (resp. backward) copy, full opacity. Differentiable."""
        b, idx, m = self.base, self.moving_idx, self.n_moving

        def layer(sl: slice) -> Gaussians:
            return Gaussians(
                means=b.means.index_copy(0, idx, means[sl].to(b.means.dtype)),
                quats=b.quats if quats is None else b.quats.index_copy(0, idx, quats[sl].to(b.quats.dtype)),
                log_scales=(b.log_scales if log_scales is None
                            else b.log_scales.index_copy(0, idx, log_scales[sl].to(b.log_scales.dtype))),
                logit_opacities=b.logit_opacities, sh0=b.sh0, moving=b.moving)

        return layer(slice(0, m)), layer(slice(m, 2 * m))

    def layers(self, t: int, wrap: bool = True) -> tuple[Gaussians, Gaussians]:
        """The (forward, backward) layers of integer frame t (wrapped unless ``wrap`` is False)."""
        k = self.frame_index(t) if wrap else int(t)
        return self.layers_from(self.means[k], None if self.quats is None else self.quats[k],
                                None if self.log_scales is None else self.log_scales[k])

    def render(self, t: int, camera: Camera, background: Tensor | None = None, wrap: bool = True) -> RenderOutput:
        """Render integer frame t as the image-space blend of its two layers (see the module doc).

        ``wrap=False`` with t = N renders frame N from its own state, for loop-closure checks."""
        k = self.frame_index(t) if wrap else int(t)
        return render_blend(self.layers(k, wrap=False), k, self.n_frames, camera, background)

    def frame(self, t: int) -> Gaussians:
        """The exported one-set Gaussians of integer frame t (wrapped into the loop)."""
        k = self.frame_index(t)
        return self.assemble(
            k, self.means[k],
            None if self.quats is None else self.quats[k],
            None if self.log_scales is None else self.log_scales[k],
        )

    def frames(self) -> list[Gaussians]:
        """Frames 0 .. N-1: one full period (frame N would repeat frame 0)."""
        return [self.frame(t) for t in range(self.n_frames)]

    def loop_layers(self) -> "LoopLayers":
        """The loop as the compact export stores it: static Gaussians once, moving ones per frame.

        Frame t (0 <= t < N) renders exactly like :meth:`render`: the blend of R(static + forward
        layer t) and R(static + backward layer t), each layer at full opacity."""
        b, idx, m, n = self.base, self.moving_idx, self.n_moving, self.n_frames
        static = torch.ones(len(b), dtype=torch.bool, device=b.means.device)
        static[idx] = False
        canon = b.subset(idx)

        def per_frame(x: Tensor | None, sl: slice) -> Tensor | None:
            return None if x is None else x[:n, sl]

        return LoopLayers(static=b.subset(torch.nonzero(static).squeeze(1)), moving=canon,
                          means=(self.means[:n, :m], self.means[:n, m:]),
                          quats=(per_frame(self.quats, slice(0, m)), per_frame(self.quats, slice(m, 2 * m))),
                          log_scales=(per_frame(self.log_scales, slice(0, m)), per_frame(self.log_scales, slice(m, 2 * m))))

    def to(self, device: str | torch.device) -> "LoopedGaussians":
        opt = lambda x: None if x is None else x.to(device)  # noqa: E731
        return LoopedGaussians(self.base.to(device), self.n_frames, self.moving_idx.to(device), self.means.to(device),
                               opt(self.quats), opt(self.log_scales))


@dataclass
class LoopLayers:
    """Static Gaussians once, plus the moving Gaussians' (forward, backward) state for frames 0..N-1.

    ``moving`` holds the moving Gaussians' canonical values (colour, opacity at full strength, and
    rotation/scale where the per-frame ones are None)."""

    static: Gaussians
    moving: Gaussians
    means: tuple[Tensor, Tensor]  # (N, M, 3) each
    quats: tuple[Tensor | None, Tensor | None]  # (N, M, 4) each, or None: the canonical rotation
    log_scales: tuple[Tensor | None, Tensor | None]  # (N, M, 3) each, or None: the canonical scale

    def layer(self, which: int, t: int) -> Gaussians:
        """The moving Gaussians of layer ``which`` (0 forward, 1 backward) at frame t, full opacity."""
        c = self.moving
        q, s = self.quats[which], self.log_scales[which]
        return Gaussians(means=self.means[which][t], quats=c.quats if q is None else q[t],
                         log_scales=c.log_scales if s is None else s[t], logit_opacities=c.logit_opacities,
                         sh0=c.sh0, moving=c.moving)


def loop_gaussians(gaussians: Gaussians, field: VelocityField, n_frames: int) -> LoopedGaussians:
    """The explicit looping animation of ``gaussians`` under ``field`` over ``n_frames`` frames.

    Only Gaussians flagged ``moving`` are advected; the result is the preview-quality 4D scene.
    """
    if n_frames < 2:
        raise LoopscapeError(f"a loop needs at least 2 frames, got {n_frames}.", "Ask for 2 or more frames.")
    g = gaussians.to(field.device).detach()
    idx = torch.nonzero(g.moving).squeeze(1)
    with torch.no_grad():
        x0 = g.means[idx]
        fwd = field.integrate(x0, n_frames, +1.0)  # fwd[t] = Phi^t(x0)
        bwd = field.integrate(x0, n_frames, -1.0)  # bwd[j] = Phi^{-j}(x0)
        means = torch.cat([fwd, bwd.flip(0)], dim=1)  # backward copy at t uses j = N - t
    return LoopedGaussians(base=g, n_frames=int(n_frames), moving_idx=idx, means=means)
