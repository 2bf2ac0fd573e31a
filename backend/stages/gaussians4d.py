"""4D training: learn the deformation residuals on top of the explicit looping motion.

Stage one (the static 3D Gaussians at t = 0 over all views) happens upstream in ``train3d``;
its result comes in as ``gaussians``. Stage two, here, fits the HexPlane deformation, and with it
the moving Gaussians' canonical colour and opacity (4D-GS also trains its canonical Gaussians in
this stage), to videos from a few views: at the input view the 2D loop's two copies
(``loop2d.loop_copies``, the real training signal), each against its own render layer, and a few
side views whose pseudo ground truth is the explicit 3D loop's layers rendered from them. The side
views keep the corrections consistent with the 3D motion where the input view cannot see depth.

Why per copy: a frame of the 2D loop blends its copies per pixel by splat density, a layered
render blends them by the frame's weights alone, so a loss on the blended frame asks for
distortions that fit the mix at the input view and show from every other camera. Each layer
against its own copy is an exact target. Each layer's error counts with the square of its blend
weight: the blended frame's squared error when the two layers' errors are independent (they show
different texture), so the copy a frame mostly shows is the one trained there. On the synthetic
evaluation (128 px, 3 scenes, keep-best on appearance alone) squared weights beat plain ones on all
five paths (masked PSNR up to +0.01 dB, masked LPIPS -0.0001 to -0.0003); with the blended target
draft's masked LPIPS was above preview's on three paths.

Why appearance: the 3D fit tunes the moving Gaussians to the photo at pixel centres, and alpha
compositing of overlapping one-pixel Gaussians interpolates poorly in between, so a copy moved by a
fraction of a pixel renders 2-3 dB further from the truth than the still image resampled (synthetic
scene 2, frame 1). The smooth deformation field cannot fix that per Gaussian; a colour and opacity
residual per moving Gaussian, shared by all frames and both copies, can. Frame 0 (the photo) stays
in the input view's training frames, so the still loop start keeps its fit.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from backend.model.camera import Camera, project_points
from backend.model.deform4d import DeformConfig, Deformation4D, bake, deformed_state
from backend.infra.device import seeded_generator
from backend.infra.errors import LoopscapeError
from backend.infra.events import EventSink, NullSink
from backend.model.gaussians import Gaussians
from backend.model.losses import photometric_loss, psnr
from backend.model.motion_field import LoopedGaussians, VelocityField, loop_gaussians, loop_weights
from backend.stages.loop2d import LoopCopies, loop_copies
from backend.stages.multiview import BACKGROUND_RATIO

STAGE = "gaussians4d"


@dataclass
class Train4DConfig:
    lr_planes: float = 1e-2
    lr_mlp: float = 2e-3
    # Canonical appearance of the moving Gaussians, half 3DGS's rates. On the synthetic evaluation
    # (128 px, draft) 3DGS's full rates left draft 0.004 dB behind preview on zoom-in, masked PSNR;
    # half rates put it ahead on every path and metric. 0 leaves that part of the appearance alone.
    lr_colour: float = 1.25e-3
    lr_opacity: float = 0.025
    # L1 alone, as 4D-GS trains its deformation: with 0.2 D-SSIM the field sharpened the loop's
    # backward copy and cost up to 0.02 dB masked PSNR on one synthetic scene.
    lambda_dssim: float = 0.0
    w_tv: float = 2e-4  # 4D-GS's plane TV weight
    w_time_smooth: float = 1e-3
    w_time_l1: float = 1e-4
    p_input_view: float = 0.7  # probability of sampling the input view (else a side view)
    # Copies' projected trajectories against the 2D loop's displacements at the input view, L1 in
    # pixels of a 256-px long side. Without it the photometric loss bought appearance with motion:
    # the trained forward copies ran 2-5% slow (the explicit ones within 1-3% of the flow).
    w_trajectory: float = 0.02
    # Schedule: a linear warm-up, then an exponential decay to lr * lr_final (4D-GS decays its
    # deformation rates the same way); constant rates left the loss bouncing to the end.
    warmup: float = 0.05  # fraction of the iterations
    lr_final: float = 0.3  # 0.05 lost 3 dB in a 100-step run; 0.3 matched constant rates there and damps long runs
    grad_clip: float = 1.0  # max gradient norm of the field: one bad frame pair cannot throw it
    check_every: float = 0.1  # held-out check period, as a fraction of the iterations
    # Stop once the held-out error has not improved for this many steps. Draft's 150 steps never
    # reach it; final at 96 px once kept step 600 of 3000 (2400 steps, 76 min on a CPU, for
    # nothing). On draft's scene it stopped at 1200-2400 (96 and 128 px synthetic scenes); with the
    # appearance residuals, at 2700 (96 px, step 2100 kept).
    patience: int = 600
    # Positions and rotations only: scale residuals shrank copies to sharpen the input view, which
    # opened gaps when the zoom-in path came close (synthetic scene 2, zoom-in: -0.027 dB
    # masked PSNR with them, -0.010 without).
    deform: DeformConfig = field(default_factory=lambda: DeformConfig(max_log_scale=0.0))

    def lr_factor(self, it: int, iters: int) -> float:
        warm = max(1, int(self.warmup * iters))
        if it < warm:
            return (it + 1) / warm
        return self.lr_final ** ((it - warm) / max(iters - warm, 1))


@dataclass
class Train4DReport:
    iters: int
    n_frames: int
    n_gaussians: int  # per frame, copies included
    n_moving: int
    loss_curve: list[float]  # total loss per iteration
    # Input view against the 2D loop's copies over frames 0..N-1: each render layer against its
    # copy, weighted by its squared blend weight (``layer_shares``), pooled MSE; "preview" is the
    # explicit motion only.
    psnr_preview: float
    psnr_trained: float  # the same after training
    psnr_preview_per_frame: list[float]
    psnr_trained_per_frame: list[float]
    loop_closure_psnr: float  # trained frame N vs frame 0 at the input view
    held_out_frames: list[int]  # input-view frames never trained on; keep-best watches them
    best_iter: int  # iteration whose state was kept (0 = the explicit loop itself)
    steps_run: int  # iterations actually run (fewer than iters when training stopped early)
    kept: str  # "trained", or "preview" when training did not beat the explicit loop
    seconds: float
    seconds_per_iter: float

    def to_dict(self) -> dict:
        return asdict(self)


def _checked_copies(copies: LoopCopies, n_frames: int, device: torch.device) -> LoopCopies:
    if not isinstance(copies, LoopCopies) or copies.forward.ndim != 4 or copies.forward.shape[-1] != 3:
        raise LoopscapeError("the 4D training target is not the 2D loop's copies.",
                             "Pass loop2d.loop_copies(...) of the input view's 2D loop.")
    if copies.n_frames < n_frames:
        raise LoopscapeError(f"the 2D loop has {copies.n_frames} frames but the 4D loop needs {n_frames}.",
                             "Render the 2D loop with the same frame count.")
    return LoopCopies(*(getattr(copies, f.name)[:n_frames].to(device=device, dtype=torch.float32)
                        for f in fields(LoopCopies)))


def _lost_from(flags: Tensor, m: int) -> Tensor:
    """(frames, 2M) ``flags`` held from the first flagged frame on, in each copy's own direction:
    forward copies (the first M) start at frame 0, backward ones at the last frame."""
    fwd = torch.cummax(flags[:, :m].to(torch.uint8), 0).values.bool()
    bwd = torch.cummax(flags[:, m:].flip(0).to(torch.uint8), 0).values.bool().flip(0)
    return torch.cat([fwd, bwd], 1)


@dataclass
class _Trajectories:
    """Where the input view's 2D loop puts each moving copy at each frame: its t = 0 pixel plus the
    copy's displacement there. Copies whose t = 0 pixel is off the image are not checked, nor, from
    the frame it passes behind a still occluder or out of the image on, a copy the 2D loop cannot
    follow: the 2D flow stops at the occluder's outline and at the image's edge, the 3D motion
    carries the copy on (``VelocityField``). Water that starts hidden is never checked."""

    cam: Camera
    target: Tensor  # (N, 2M, 2) pixels
    valid: Tensor  # (N, 2M) bool
    scale: float  # pixels -> pixels of a 256-px long side

    @classmethod
    def of(cls, preview: LoopedGaussians, cam: Camera, copies: LoopCopies,
           field: VelocityField | None = None) -> "_Trajectories":
        uv, z = project_points(preview.base.means[preview.moving_idx], cam)
        front = z > 1e-6
        W, H = cam.width, cam.height
        valid = front & (uv[:, 0] >= 0) & (uv[:, 0] <= W) & (uv[:, 1] >= 0) & (uv[:, 1] <= H)
        n, m = preview.n_frames, preview.n_moving
        valid = torch.cat([valid, valid])[None].expand(n, -1)
        if field is not None:
            hidden = field.hidden(preview.means.reshape(-1, 3)).view(n + 1, 2 * m)
            valid = valid & ~_lost_from(hidden, m)[:n]
        grid = torch.stack([2 * uv[:, 0] / W - 1, 2 * uv[:, 1] / H - 1], -1).view(1, 1, -1, 2)

        def at_uv(disp: Tensor) -> Tensor:  # (N, H, W, 2) -> (N, M, 2)
            d = torch.nn.functional.grid_sample(disp.permute(0, 3, 1, 2), grid.expand(len(disp), -1, -1, -1),
                                                mode="bilinear", padding_mode="border", align_corners=False)
            return d[:, :, 0].permute(0, 2, 1)

        target = torch.cat([uv, uv])[None] + torch.cat([at_uv(copies.forward_displacement), at_uv(copies.backward_displacement)], 1)
        # The 2D flow is zero past the image's edge, so the 2D loop stops a copy just outside it; the
        # 3D motion carries it on (VelocityField). Lost from the frame it leaves on, as when hidden.
        off = ((target < 0) | (target > torch.tensor([W, H], dtype=target.dtype, device=target.device))).any(-1)
        valid = valid & ~_lost_from(off, m)
        return cls(cam, target.detach(), valid.contiguous(), 256.0 / max(W, H))

    def error(self, means: Tensor, t: int) -> Tensor:
        if not bool(self.valid[t].any()):  # every moving copy is off the image or hidden: nothing to hold
            return means.new_zeros(())
        uv, _ = project_points(means, self.cam)
        return (uv - self.target[t]).abs().sum(-1)[self.valid[t]].mean() * self.scale


class Appearance(nn.Module):
    """Residuals on the moving Gaussians' canonical colour (SH DC) and opacity logit, shared by every
    frame and both copies; zero is the 3D fit itself."""

    def __init__(self, n_moving: int, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.sh0 = nn.Parameter(torch.zeros((n_moving, 3), device=device))
        self.logit_opacity = nn.Parameter(torch.zeros(n_moving, device=device))

    def apply(self, looped: LoopedGaussians) -> LoopedGaussians:
        """``looped`` with the residuals added to its moving Gaussians (differentiable)."""
        b, idx = looped.base, looped.moving_idx
        logits = b.logit_opacities.index_add(0, idx, self.logit_opacity.to(b.logit_opacities.dtype))
        base = Gaussians(means=b.means, quats=b.quats, log_scales=b.log_scales, logit_opacities=logits,
                         sh0=b.sh0.index_add(0, idx, self.sh0.to(b.sh0.dtype)), moving=b.moving)
        return LoopedGaussians(base, looped.n_frames, idx, looped.means, looped.quats, looped.log_scales)


class Residuals4D(nn.Module):
    """All the 4D training learns on top of the explicit loop: the deformation field and the moving
    Gaussians' appearance. Zero-initialised, so the untrained state renders the explicit loop."""

    def __init__(self, deform: Deformation4D, appearance: Appearance) -> None:
        super().__init__()
        self.deform = deform
        self.appearance = appearance

    def layers(self, preview: LoopedGaussians, t: int) -> tuple[tuple[Gaussians, Gaussians], Tensor]:
        """Frame t's (forward, backward) render layers and the copies' positions (differentiable)."""
        looped = self.appearance.apply(preview)
        means, quats, scales = deformed_state(looped, self.deform, t)
        return looped.layers_from(means, quats, scales), means

    @torch.no_grad()
    def bake(self, preview: LoopedGaussians) -> LoopedGaussians:
        return bake(self.appearance.apply(preview), self.deform)


@torch.no_grad()
def _input_view_errors(loop: LoopedGaussians, cam: Camera, copies: LoopCopies) -> list[float]:
    """Per frame, the mean squared error of the two render layers against the 2D loop's two copies
    at the input view, each weighted by its ``layer_shares``."""
    return [_layer_mse(loop.layers(t), copies, t, loop.n_frames, cam) for t in range(loop.n_frames)]


def _layer_mse(layers: tuple[Gaussians, Gaussians], copies: LoopCopies, t: int, n: int, cam: Camera) -> float:
    targets = ((copies.forward[t], copies.backward[t]), (None, None))
    return float(_per_layer(layers, targets, t, n, cam, lambda r, target, _: (r.clamp(0, 1) - target).pow(2).mean()))


def held_out_frames(n_frames: int) -> list[int]:
    """Every fourth frame of 1..N-1 (at least one) is held out of the input-view training."""
    held = list(range(3, n_frames, 4)) if n_frames >= 8 else [n_frames - 1]
    return [t for t in held if 0 < t < n_frames] or [max(1, n_frames - 1)]


@torch.no_grad()
def _held_out_error(preview: LoopedGaussians, model: Residuals4D, samples: "_TrainingSamples", held: list[int],
                    cfg: "Train4DConfig") -> float:
    """The training loss's data terms on frames it never sees: each layer against its copy (the same
    photometric loss and shares) plus the copies' trajectory error, weighted as in training. Judged
    on appearance alone, keep-best could stop on a step whose looks tied a later one's while the
    copies still ran slow (a test scene whose explicit motion is half the flow kept 12% of the gap,
    against 1% with the trajectories counted)."""
    n, cam, c = preview.n_frames, samples.cam_in, samples.copies
    errors = []
    for t in held:
        layers, means = model.layers(preview, t)
        errors.append(float(_layer_loss(layers, _copy_targets(c, t), t, n, cam, cfg.lambda_dssim))
                      + cfg.w_trajectory * float(samples.trajectories.error(means, t)))
    return float(np.mean(errors))


def _psnr_of(mse: float) -> float:
    return float(10.0 * np.log10(1.0 / max(mse, 1e-12)))


# (forward, backward) targets of one step, and their per-pixel weights (None: every pixel counts)
_Targets = tuple[tuple[Tensor, Tensor], tuple[Tensor | None, Tensor | None]]


def _copy_targets(copies: LoopCopies, t: int) -> "_Targets":
    """The input view's targets at frame t: the 2D loop's copies, their holes left out."""
    return (copies.forward[t], copies.backward[t]), (copies.forward_valid[t], copies.backward_valid[t])


@dataclass
class _TrainingSamples:
    """Where each step looks: the input view at a trained frame, or a side view at any frame
    1..N-1. Targets come per render layer (forward, backward): at the input view the 2D loop's
    copies, with their holes (filled, not observed) left out; at a side view the explicit loop's
    layers rendered there (made on first use)."""

    preview: LoopedGaussians
    cam_in: Camera
    copies: LoopCopies
    trajectories: _Trajectories
    side_cameras: list[Camera]
    train_frames: list[int]
    p_input_view: float
    gen: torch.Generator
    side_cache: dict[tuple[int, int], tuple[Tensor, Tensor]] = field(default_factory=dict)

    def draw(self) -> tuple[int, Camera, _Targets]:
        n = self.preview.n_frames
        # Frame 0 carries no motion residual (the gate is zero there): side views sample 1 .. N-1;
        # the input view's ``train_frames`` hold it when the appearance is trained.
        t = int(torch.randint(1, n, (1,), generator=self.gen))
        if not self.side_cameras or float(torch.rand(1, generator=self.gen)) < self.p_input_view:
            t = self.train_frames[int(torch.randint(0, len(self.train_frames), (1,), generator=self.gen))]
            return t, self.cam_in, _copy_targets(self.copies, t)
        v = int(torch.randint(0, len(self.side_cameras), (1,), generator=self.gen))
        if (v, t) not in self.side_cache:
            with torch.no_grad():
                cam = self.side_cameras[v]
                fwd, bwd = self.preview.layers(t)
                self.side_cache[(v, t)] = (fwd.render(cam).colors.clamp(0, 1), bwd.render(cam).colors.clamp(0, 1))
        return t, self.side_cameras[v], (self.side_cache[(v, t)], (None, None))


def layer_shares(t: int, n: int) -> tuple[float, float]:
    """How much each layer's error counts at frame t: its blend weight squared. A frame is
    w_f R_f + w_b R_b, so with independent layer errors its expected squared error is
    w_f^2 e_f + w_b^2 e_b (plain weights would bound it by convexity, but over-train the copy a
    frame barely shows)."""
    wf, wb = loop_weights(t, n)
    return wf * wf, wb * wb


def _per_layer(layers: tuple[Gaussians, Gaussians], targets: _Targets, t: int, n: int, cam: Camera,
               error: Callable[[Tensor, Tensor, Tensor | None], Tensor]) -> Tensor:
    """Sum over the two layers of ``layer_shares`` x ``error(render, target, pixel weights)``; a
    layer with no share is not rendered."""
    (tf, tb), (vf, vb) = targets
    total = torch.zeros((), device=tf.device)
    for w, layer, target, valid in zip(layer_shares(t, n), layers, (tf, tb), (vf, vb)):
        if w > 0.0:
            total = total + w * error(layer.render(cam).colors, target, valid)
    return total


def _layer_loss(layers: tuple[Gaussians, Gaussians], targets: _Targets, t: int, n: int, cam: Camera,
                lambda_dssim: float) -> Tensor:
    """Each layer against its own target, weighted by its ``layer_shares``."""
    return _per_layer(layers, targets, t, n, cam,
                      lambda r, target, valid: photometric_loss(r, target, valid, lambda_dssim=lambda_dssim))


@dataclass
class _KeepBest:
    """The learnt state with the lowest ``_held_out_error`` on held-out input-view frames.

    The zero-initialised residuals make the untrained state the explicit loop, so that is the state
    to beat (iteration 0) on frames the optimiser never sees.
    """

    held: list[int]
    error: float
    state: dict[str, Tensor]
    iteration: int = 0

    def offer(self, model: Residuals4D, error: float, iteration: int) -> None:
        if np.isfinite(error) and error < self.error:
            self.error, self.iteration = error, iteration
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}


def _optimise(model: Residuals4D, preview: LoopedGaussians, samples: _TrainingSamples, best: _KeepBest,
              cfg: Train4DConfig, iters: int, events: EventSink) -> tuple[list[float], int]:
    """The training loop: returns the loss per applied step and the count of skipped (non-finite) steps."""
    deform, app = model.deform, model.appearance
    plane_params = list(deform.planes.parameters())
    mlp_params = [p for n, p in deform.named_parameters() if not n.startswith("planes.")]
    opt = torch.optim.Adam([{"params": plane_params, "lr": cfg.lr_planes}, {"params": mlp_params, "lr": cfg.lr_mlp},
                            {"params": [app.sh0], "lr": cfg.lr_colour},
                            {"params": [app.logit_opacity], "lr": cfg.lr_opacity}])
    base_lrs = [g["lr"] for g in opt.param_groups]
    check_every = max(1, int(cfg.check_every * iters))
    report_every = max(1, iters // 50)
    n = preview.n_frames
    losses: list[float] = []
    skipped = 0
    for it in range(iters):
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * cfg.lr_factor(it, iters)
        t, cam, targets = samples.draw()
        layers, means = model.layers(preview, t)
        reg = deform.regularisers()
        loss = (_layer_loss(layers, targets, t, n, cam, cfg.lambda_dssim)
                + cfg.w_trajectory * samples.trajectories.error(means, t)
                + cfg.w_tv * reg["tv"] + cfg.w_time_smooth * reg["time_smooth"] + cfg.w_time_l1 * reg["time_l1"])
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):  # one bad sample must not poison Adam's moments
            skipped += 1
            continue
        loss.backward()
        torch.nn.utils.clip_grad_norm_(deform.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if (it + 1) % check_every == 0 or it + 1 == iters:
            best.offer(model, _held_out_error(preview, model, samples, best.held, cfg), it + 1)
            if it + 1 - best.iteration >= cfg.patience and it + 1 < iters:
                events.log(f"4D training stopped at step {it + 1} of {iters}: no held-out improvement since "
                           f"step {best.iteration}", stage=STAGE)
                events.progress(STAGE, 1.0, **({"loss": round(losses[-1], 5)} if losses else {}))
                break
        if (it + 1) % report_every == 0 or it + 1 == iters:
            events.progress(STAGE, (it + 1) / iters, loss=round(losses[-1], 5))
    return losses, skipped


def train_4d(
    gaussians: Gaussians,
    velocity_map: np.ndarray | Tensor | VelocityField,
    input_camera: Camera,
    side_cameras: list[Camera],
    copies: LoopCopies,
    n_frames: int,
    iters: int,
    device: str | torch.device = "cpu",
    events: EventSink | None = None,
    *,
    mask: np.ndarray | Tensor | None = None,
    config: Train4DConfig | None = None,
    seed: int = 0,
) -> tuple[LoopedGaussians, Train4DReport]:
    """Fit the deformation residuals; returns the baked per-frame loop and a report.

    ``velocity_map`` is the 3D motion as an (H, W, 3) map over the input view (world units per
    frame, zero outside ``mask``) or a ready :class:`VelocityField`. ``copies`` (N' >= N frames)
    are the input view's 2D loop copies (``loop2d.loop_copies``); the input camera is rescaled to
    their size. The result is never worse at the input view than the explicit loop it starts from.
    """
    events = events or NullSink()
    cfg = config or Train4DConfig()
    dev = torch.device(device)
    t_start = time.perf_counter()
    copies = _checked_copies(copies, n_frames, dev)
    H, W = int(copies.forward.shape[1]), int(copies.forward.shape[2])
    cam_in = input_camera if (input_camera.width, input_camera.height) == (W, H) else input_camera.scaled(W, H)
    field_ = velocity_map if isinstance(velocity_map, VelocityField) else VelocityField(velocity_map, input_camera, mask, dev)

    preview = loop_gaussians(gaussians.to(dev), field_, n_frames)
    if preview.n_moving == 0:
        raise LoopscapeError("no Gaussian is marked as moving, so there is nothing to animate.",
                             "Paint a motion mask over the water, clouds or smoke.")
    gen = seeded_generator(seed)  # CPU: frame and view choices are host decisions, the same on every device
    torch.manual_seed(seed)
    model = Residuals4D(Deformation4D.for_loop(preview, cfg.deform, view=cam_in), Appearance(preview.n_moving, dev))
    held = held_out_frames(n_frames)
    moved = [t for t in range(1, n_frames) if t not in held] or list(range(1, n_frames))
    # The still frame holds the appearance to the photo; without an appearance to train it teaches nothing.
    still = [0] if cfg.lr_colour > 0 or cfg.lr_opacity > 0 else []
    samples = _TrainingSamples(preview, cam_in, copies, _Trajectories.of(preview, cam_in, copies, field_), side_cameras,
                               still + moved, cfg.p_input_view, gen)

    events.progress(STAGE, 0.0, message="rendering the preview loop at the input view")
    mse_before = _input_view_errors(preview, cam_in, copies)
    best = _KeepBest(held, _held_out_error(preview, model, samples, held, cfg),
                     {k: v.detach().clone() for k, v in model.state_dict().items()})
    t_loop = time.perf_counter()
    losses, skipped = _optimise(model, preview, samples, best, cfg, iters, events)
    steps_run = len(losses) + skipped
    t_iters = time.perf_counter() - t_loop
    if skipped:
        events.warning(f"4D training skipped {skipped} of {iters} steps whose loss was not finite.")

    model.load_state_dict(best.state)
    result, kept, best_iter = model.bake(preview), "trained", best.iteration
    mse_after = _input_view_errors(result, cam_in, copies)
    if best_iter == 0 or not np.isfinite(np.mean(mse_after)) or np.mean(mse_after) > np.mean(mse_before):
        # Never end worse than the start: the explicit loop is a complete, valid result.
        events.warning("4D training did not improve on the explicit loop at the input view; the explicit loop is kept.")
        result, kept, best_iter, mse_after = preview, "preview", 0, mse_before
    with torch.no_grad():
        last = result.render(result.n_frames, cam_in, wrap=False).colors  # frame N from its own state
        closure = psnr(last.clamp(0, 1), result.render(0, cam_in).colors.clamp(0, 1))
    report = Train4DReport(
        iters=iters, n_frames=n_frames, n_gaussians=result.n_gaussians, n_moving=result.n_moving,
        loss_curve=losses,
        psnr_preview=_psnr_of(float(np.mean(mse_before))), psnr_trained=_psnr_of(float(np.mean(mse_after))),
        psnr_preview_per_frame=[_psnr_of(e) for e in mse_before], psnr_trained_per_frame=[_psnr_of(e) for e in mse_after],
        loop_closure_psnr=closure, held_out_frames=held, best_iter=best_iter, kept=kept, steps_run=steps_run,
        seconds=time.perf_counter() - t_start, seconds_per_iter=t_iters / max(steps_run, 1),
    )
    events.log(f"4D training: input-view PSNR {report.psnr_preview:.2f} dB (preview) -> "
               f"{report.psnr_trained:.2f} dB ({kept}, best at iteration {best_iter} of {iters}), "
               f"{report.seconds_per_iter:.3f} s/iter")
    return result, report


# ----------------------------------------------------------------------------- the stage

INPUTS = ("image", "depth", "gaussians3d", "multiview", "mom3d", "loop2d", "mask")
SIDE_VIEWS = 4  # fan views whose explicit loop holds the correction in 3D
BACKDROP_PUSH = 1.15  # backdrop depth factor: behind the moving layer, beyond its depth spread


RECIPE = "per-copy-traj-l1-sq-travel-4-warp-appearance-hidden-fluid-coloured-flows-past-edge-photo-domain"  # bump when training changes, so cached trained loops are not reused


@dataclass
class Loop4D:
    loop: LoopedGaussians  # a trained loop is on the CPU (cached); its users move it to the job's device
    report: Train4DReport | None  # None for the explicit (untrained) loop


def params(ctx) -> dict:
    return {"recipe": RECIPE, "iters": ctx.preset.iters_4d, "frames": ctx.job.frames, "seed": ctx.job.seed,
            "device": str(ctx.device)}


def cached(ctx) -> bool:
    """A trained loop is kept, so a new camera path or frame rate reuses minutes of training; the
    explicit loop takes a second to rebuild and would only fill the work folder."""
    return ctx.preset.iters_4d > 0


def run(ctx, image, depth, gaussians3d, multiview, mom3d, loop2d, mask) -> Loop4D:
    cam = image.camera
    H, W = image.rgb.shape[:2]
    field_ = VelocityField(mom3d.velocity_map(H, W), cam, mask, ctx.device, depth=depth.depth, behind_ratio=BACKGROUND_RATIO)
    g = with_backdrop(fluid_coloured_behind(gaussians3d.gaussians.to(ctx.device), field_))
    if ctx.preset.iters_4d == 0:
        return Loop4D(loop_gaussians(g, field_, ctx.job.frames), None)
    cams = multiview.cameras
    side = [c for i, c in enumerate(cams) if i != 0][:: max(1, (len(cams) - 1) // SIDE_VIEWS)][:SIDE_VIEWS]
    copies = loop_copies(image.rgb, loop2d, mask, ctx.device)
    loop, rep = train_4d(g, field_, cam, side, copies, ctx.job.frames, ctx.preset.iters_4d, ctx.device,
                         ctx.events, mask=mask, seed=ctx.job.seed)
    return Loop4D(loop.to("cpu"), rep)


def report(out: Loop4D) -> dict:
    m: dict = {"n_gaussians_per_frame": out.loop.n_gaussians}
    r = out.report
    if r is None:
        return m
    m.update(train4d_psnr_preview=round(r.psnr_preview, 3), train4d_psnr_trained=round(r.psnr_trained, 3),
             loop_closure_psnr=round(r.loop_closure_psnr, 3), train4d_best_iter=r.best_iter, train4d_kept=r.kept,
             train4d_steps_run=r.steps_run)
    curve = np.asarray(r.loss_curve, np.float64)
    if len(curve):  # every step can have been skipped (non-finite losses)
        m.update(train4d_loss_first=round(float(curve[:10].mean()), 5), train4d_loss_last=round(float(curve[-10:].mean()), 5),
                 train4d_loss_curve_tenths=[round(float(c.mean()), 5) for c in np.array_split(curve, 10) if len(c)])
    return m


def with_backdrop(g: Gaussians) -> Gaussians:
    """Add a static copy of the moving Gaussians 15% farther along the input camera's rays.

    Positions and scales scale together about the camera (at the origin), so the copy projects
    where the original does in the input view. It fills what the moving layer uncovers with the
    t = 0 appearance, as the 2D loop's splatting falls back to the still image in its holes, and
    it never moves, so the loop still closes. Measured on synthetic scene 0 (preview, input view):
    - Trained Gaussians scatter a few % in depth about their surface: a copy only 3% farther
      interleaved with the moving layer and froze half the water (DIS speed 0.47 of the requested;
      0.78 at 15%).
    - Pulling the moving layer 1% nearer (to settle depth ties with static content) hid the static
      edges behind it: 32.7 dB outside the mask against the true video, 36.9 dB without the pull.
    """
    g = g.detach()
    idx = torch.nonzero(g.moving).squeeze(1)
    if idx.numel() == 0:
        return g
    back = g.subset(idx)
    back.means = back.means * BACKDROP_PUSH
    back.log_scales = back.log_scales + float(np.log(BACKDROP_PUSH))
    back.moving = torch.zeros_like(back.moving)
    return Gaussians.concat([g, back])


def fluid_coloured_behind(g: Gaussians, field: VelocityField) -> Gaussians:
    """The moving Gaussians hidden behind a still occluder, coloured like the nearest visible fluid.

    Their colour comes from the fill behind the occluder's soft rim and from the 3D fit, which saw
    them past the rim as scenery: greyer than the water (boulder scene 0: blue minus red 0.06
    against 0.17). Moving, they would carry that grey out from under the boulder."""
    g = g.detach()  # a copy: the colours below are set in place
    moving = torch.nonzero(g.moving).squeeze(1)
    if moving.numel() == 0:
        return g
    hidden = field.hidden(g.means[moving])
    if not bool(hidden.any()) or bool(hidden.all()):
        return g
    behind, seen = moving[hidden], moving[~hidden]
    nearest = torch.cat([torch.cdist(chunk, g.means[seen]).argmin(1) for chunk in g.means[behind].split(4096)])
    g.sh0[behind] = g.sh0[seen[nearest]]
    return g
