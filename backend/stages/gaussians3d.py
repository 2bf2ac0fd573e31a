"""Stage 4: optimise 3D Gaussians on the input photo and the pseudo multi-view images at t = 0.

Adam on the raw parameters, L1 + D-SSIM (lambda 0.2), and gsplat-style adaptive density control
(clone small / split large Gaussians with high screen-space gradient, prune transparent ones),
with an opacity reset that actually fires (gsplat 1.5.3's ``step % n == 0 & step > 0`` never
does). The input view is drawn more often and weighs more than the synthesised views, and the
hole-filled pixels of synthesised views weigh less than observed ones.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch import Tensor

from backend.model.camera import Camera
from backend.infra.device import rand, randn, seeded_generator
from backend.infra.events import EventSink
from backend.model.gaussians import Gaussians
from backend.model.losses import photometric_loss, psnr
from backend.model.mask_edges import moving_clean_plate
from backend.render.raster_cpu import quat_to_rotmat
from contract.quality import PRESETS


@dataclass
class TrainConfig:
    iters: int = 300
    input_view_prob: float = 0.4  # fraction of steps spent on the real photo
    input_view_weight: float = 2.0
    filled_pixel_weight: float = 0.3  # hole-filled pixels of synthesised views are only plausible
    lambda_dssim: float = 0.2
    lr_means: float = 1.6e-4  # times the scene scale
    lr_quats: float = 1e-3
    lr_scales: float = 1e-2
    lr_opacities: float = 5e-2
    lr_sh0: float = 1e-2  # 4x 3DGS: our schedules are hundreds of steps, not 30k
    refine_start: int = 50
    refine_stop: int = 1_000_000  # set by the preset relative to iters
    refine_every: int = 50
    reset_every: int = 1_000_000
    grow_grad2d: float = 0.0002
    grow_scale3d: float = 0.01  # times the scene scale
    prune_opacity: float = 0.005
    prune_scale3d: float = 0.1  # times the scene scale
    max_gaussians: int = 400_000
    # A random background colour per step: every training pixel is scene content, so coverage must
    # reach 1. Over a fixed black background the fit leaves a few % transmittance and relies on the
    # black showing through; anything later put behind (the motion backdrop) then brightens it.
    random_background: bool = True
    # The moving Gaussians are also drawn alone at the input view, against the photo inside the
    # motion mask. Composited, a sky Gaussian half hidden by a ridge's edge can brighten to make up
    # for the ridge's spill and still fit the photo; once the motion carries it into open sky it
    # shows as a light line tracing the skyline. Alone it has to be the sky's own colour. At 1.0 the
    # composite fit lost 1-2 dB at the input view; 0.3 loses 0.1 dB on the demo and still gains on
    # the synthetic evaluation (docs/DESIGN.md, 'The moving layer's edge').
    moving_layer_weight: float = 0.3
    # Coverage seen from the preset paths' extremes: a camera moved closer magnifies the Gaussians
    # but not the renderer's screen-space dilation, so pixels between them turn partly transparent
    # (the backend fills them; Blender shows its world). Every other step renders one such camera
    # and asks its partly covered static pixels for full coverage (``coverage_loss``). No colour
    # target: the photometric views keep the colours. Docs: docs/DESIGN.md, 'Coverage from the paths'.
    coverage_weight: float = 1.0
    coverage_every: int = 2
    seed: int = 0


def preset_config(quality: str, n_points: int) -> TrainConfig:
    """The training config of a quality preset (``contract.quality``), sized for ``n_points`` input points."""
    s = PRESETS[quality].train3d
    return TrainConfig(iters=s.iters, refine_start=s.refine_start, refine_every=s.refine_every, refine_stop=s.refine_stop,
                       reset_every=s.reset_every, max_gaussians=s.gaussian_cap(n_points))


@dataclass
class TrainViews:
    cameras: list[Camera]
    images: Tensor  # (V, H, W, 3)
    valid: Tensor  # (V, H, W) bool, True where observed (not hole-filled)
    input_index: int = 0
    moving_mask: Tensor | None = None  # (H, W) bool at the input view: the motion mask
    moving_target: Tensor | None = None  # (H, W, 3): what the moving Gaussians alone should show there
    coverage_cameras: list[Camera] = field(default_factory=list)  # seen for coverage only (no image)


@dataclass
class TrainReport:
    losses: list[float] = field(default_factory=list)
    psnr_per_view: list[float] = field(default_factory=list)
    psnr_input_view: float = float("nan")
    psnr_synth_mean: float = float("nan")
    psnr_input_history: list[tuple[int, float]] = field(default_factory=list)
    n_gaussians: int = 0
    seconds: float = 0.0
    skipped_steps: int = 0  # steps whose loss was not finite (not applied)
    kept: str = "trained"  # "trained", "snapshot" (diverged: the last finite state) or "initial"


def _make_optimizer(g: Gaussians, cfg: TrainConfig, scene_scale: float) -> torch.optim.Adam:
    lrs = {"means": cfg.lr_means * scene_scale, "quats": cfg.lr_quats, "log_scales": cfg.lr_scales,
           "logit_opacities": cfg.lr_opacities, "sh0": cfg.lr_sh0}
    groups = [{"params": [getattr(g, k)], "lr": lr, "name": k} for k, lr in lrs.items()]
    return torch.optim.Adam(groups, eps=1e-15)


def _replace_params(g: Gaussians, opt: torch.optim.Adam, keep: Tensor, extra: dict[str, Tensor] | None) -> None:
    """Keep rows ``keep`` of every parameter, append ``extra`` rows, and carry Adam's moments along."""
    for group in opt.param_groups:
        name = group["name"]
        old = group["params"][0]
        new_data = old.data[keep]
        if extra is not None:
            new_data = torch.cat([new_data, extra[name]])
        new = torch.nn.Parameter(new_data)
        state = opt.state.pop(old, None)
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                v = state[key][keep]
                if extra is not None:
                    v = torch.cat([v, torch.zeros_like(extra[name])])
                state[key] = v
            opt.state[new] = state
        group["params"][0] = new
        setattr(g, name, new)
    moving = g.moving[keep]
    if extra is not None:
        moving = torch.cat([moving, extra["moving"]])
    g.moving = moving


class DensityControl:
    """Adaptive density control in the manner of 3DGS / gsplat's DefaultStrategy."""

    def __init__(self, cfg: TrainConfig, scene_scale: float) -> None:
        self.cfg = cfg
        self.scene_scale = scene_scale
        self.grad_acc: Tensor | None = None
        self.count: Tensor | None = None

    def accumulate(self, info: dict, n: int, width: int, height: int) -> None:
        means2d = info["means2d"]
        if means2d.grad is None:
            return
        grad = means2d.grad.reshape(-1, 2).detach().clone()
        # gsplat measures the gradient in normalised device units.
        grad[:, 0] *= width / 2.0
        grad[:, 1] *= height / 2.0
        visible = (info["radii"].reshape(n, -1) > 0).any(-1)
        if self.grad_acc is None or self.grad_acc.shape[0] != n:
            self.grad_acc = torch.zeros(n, device=grad.device)
            self.count = torch.zeros(n, device=grad.device)
        self.grad_acc[visible] += grad[visible].norm(dim=-1)
        self.count[visible] += 1

    @torch.no_grad()
    def refine(self, g: Gaussians, opt: torch.optim.Adam, step: int, gen: torch.Generator) -> dict[str, int]:
        cfg = self.cfg
        stats = {"cloned": 0, "split": 0, "pruned": 0}
        n = len(g)
        if self.grad_acc is not None and self.grad_acc.shape[0] == n and len(g) < cfg.max_gaussians:
            avg = self.grad_acc / self.count.clamp_min(1)
            high = avg > cfg.grow_grad2d
            max_scale = torch.exp(g.log_scales).max(-1).values
            small = max_scale <= cfg.grow_scale3d * self.scene_scale
            clone = high & small
            split = high & ~small
            budget = cfg.max_gaussians - n
            if int(clone.sum() + split.sum()) > budget:  # keep the strongest gradients within budget
                order = torch.argsort(avg, descending=True)
                allowed = torch.zeros(n, dtype=torch.bool, device=avg.device)
                allowed[order[:max(budget, 0)]] = True
                clone &= allowed
                split &= allowed
            extra = self._clone_rows(g, clone)
            split_rows = self._split_rows(g, split, gen)
            extra = {k: torch.cat([extra[k], split_rows[k]]) for k in extra}
            keep = ~split  # split parents are replaced by their two children
            _replace_params(g, opt, keep, extra)
            stats["cloned"], stats["split"] = int(clone.sum()), int(split.sum())
        # Prune what has become transparent or absurdly large.
        opacity = torch.sigmoid(g.logit_opacities)
        too_big = torch.exp(g.log_scales).max(-1).values > cfg.prune_scale3d * self.scene_scale * 10
        prune = (opacity < cfg.prune_opacity) | too_big
        if prune.any() and int((~prune).sum()) > 0:
            _replace_params(g, opt, ~prune, None)
            stats["pruned"] = int(prune.sum())
        self.grad_acc = None
        self.count = None
        return stats

    @staticmethod
    def _clone_rows(g: Gaussians, mask: Tensor) -> dict[str, Tensor]:
        rows = {k: getattr(g, k).data[mask].clone() for k in g.param_names}
        rows["moving"] = g.moving[mask].clone()
        return rows

    @staticmethod
    def _split_rows(g: Gaussians, mask: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
        scales = torch.exp(g.log_scales.data[mask])
        R = quat_to_rotmat(g.quats.data[mask])
        rows: dict[str, Tensor] = {}
        samples = [randn(scales.shape, gen, like=scales) * scales for _ in range(2)]
        rows["means"] = torch.cat([g.means.data[mask] + (R @ s[..., None])[..., 0] for s in samples])
        rows["log_scales"] = torch.log(scales / 1.6).repeat(2, 1)
        for k in ("quats", "logit_opacities", "sh0"):
            rows[k] = getattr(g, k).data[mask].repeat(2, *([1] * (getattr(g, k).dim() - 1)))
        rows["moving"] = g.moving[mask].repeat(2)
        return rows

    @staticmethod
    @torch.no_grad()
    def reset_opacity(g: Gaussians, opt: torch.optim.Adam, ceiling: float) -> None:
        logit_ceiling = math.log(ceiling / (1 - ceiling))
        g.logit_opacities.data.clamp_(max=logit_ceiling)
        for group in opt.param_groups:
            if group["name"] == "logit_opacities":
                state = opt.state.get(group["params"][0])
                if state:
                    state["exp_avg"].zero_()
                    state["exp_avg_sq"].zero_()


COVERAGE_FLOOR = 0.3  # alpha below this is a hole (disocclusion, beyond the scene), not a gap between Gaussians
MOVING_FOOTPRINT = 0.02  # pixels where the moving Gaussians reach this alpha are theirs, not the coverage term's


def coverage_loss(alpha: Tensor, keep: Tensor | None = None) -> Tensor:
    """Mean transparency of the partly covered pixels of ``alpha`` (..., 1), over all pixels; only
    where ``keep`` (...) is True, when given."""
    a = alpha[..., 0]
    sel = a > COVERAGE_FLOOR
    if keep is not None:
        sel = sel & keep
    return torch.where(sel, 1.0 - a, torch.zeros_like(a)).mean()


def _coverage_term(g: Gaussians, camera: Camera, background: Tensor) -> Tensor:
    """``coverage_loss`` of ``g`` seen from ``camera``, for the static Gaussians alone: away from the
    moving ones' footprint, and with the moving ones' parameters detached. Grown to cover the moving
    region, they took 0.34-0.71 dB from the draft's loop-truth PSNR on the synthetic paths; static
    Gaussians grown into it froze a part of the motion (0.15-0.54 dB)."""
    keep = None
    if bool(g.moving.any()):
        with torch.no_grad():
            moving_alpha = g.moving_part().render(camera).alpha[..., 0]
        keep = moving_alpha < MOVING_FOOTPRINT
    return coverage_loss(g.with_moving_detached().render(camera, background=background).alpha, keep)


def coverage_cameras(camera: Camera) -> list[Camera]:
    """The cameras at the preset paths' extremes: both ends of up-down and side, the end of zoom-in,
    and the circle's nearest point (scene units)."""
    from backend.model.camera_paths import PRESETS, preset_path

    cams = []
    for name in PRESETS:
        path = preset_path(name, camera)
        if name in ("zoom-in", "circle"):  # the nearest: the camera farthest forward (w2c's z most negative)
            cams.append(min(path, key=lambda c: c.w2c[2, 3]))
        else:
            cams += [path[0], path[-1]]
    return cams


def _all_finite(g: Gaussians) -> bool:
    return all(bool(torch.isfinite(getattr(g, k)).all()) for k in g.param_names)


def _view_psnrs(g: Gaussians, views: TrainViews, bg: Tensor) -> list[float]:
    with torch.no_grad():
        return [psnr(g.render(cam, background=bg).rgb.clamp(0, 1), views.images[vi]) for vi, cam in enumerate(views.cameras)]


def _weighted_mean(psnrs: list[float], input_index: int, cfg: TrainConfig) -> float:
    """Per-view PSNR averaged with the training's view weights: the input view counts as it did in training."""
    share = [cfg.input_view_prob * cfg.input_view_weight if i == input_index
             else (1.0 - cfg.input_view_prob) / max(len(psnrs) - 1, 1) for i in range(len(psnrs))]
    vals = np.nan_to_num(np.asarray(psnrs, float), nan=-np.inf)
    return float(np.dot(share, vals) / sum(share)) if np.all(np.isfinite(vals)) else -np.inf


def train_gaussians(g: Gaussians, views: TrainViews, cfg: TrainConfig, scene_scale: float = 1.0,
                    background: Tensor | None = None, events: EventSink | None = None,
                    stage: str = "gaussians3d") -> tuple[Gaussians, TrainReport]:
    """Optimise ``g`` in place (a trained copy is returned) and report losses and per-view PSNR.

    Guards: a step with a non-finite loss is skipped; parameters that turn non-finite end training
    with the last finite state (checked every tenth of the run); and a result whose view-weighted
    PSNR is below the starting Gaussians' returns the start. Each is reported as a warning event.
    """
    t0 = time.time()
    gen = seeded_generator(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    dev = views.images.device
    g = g.to(dev)
    for k in g.param_names:
        setattr(g, k, torch.nn.Parameter(getattr(g, k).detach().clone()))
    opt = _make_optimizer(g, cfg, scene_scale)
    density = DensityControl(cfg, scene_scale)
    bg = background if background is not None else torch.zeros(3, device=dev)
    V = len(views.cameras)
    others = [i for i in range(V) if i != views.input_index]
    report = TrainReport()
    weights = torch.where(views.valid, 1.0, cfg.filled_pixel_weight).to(views.images.dtype)
    layer_weight = None
    if views.moving_mask is not None and cfg.moving_layer_weight > 0 and bool(views.moving_mask.any()):
        layer_weight = views.moving_mask.to(views.images.dtype)
    initial = g.detach()
    snapshot, snapshot_step = initial, 0
    check_every = max(1, cfg.iters // 10)

    for step in range(1, cfg.iters + 1):
        use_input = not others or rng.random() < cfg.input_view_prob
        vi = views.input_index if use_input else int(rng.choice(others))
        cam = views.cameras[vi]
        step_bg = rand((3,), gen, like=views.images) if cfg.random_background and background is None else bg
        out = g.render(cam, background=step_bg)
        w = 1.0 if vi != views.input_index else cfg.input_view_weight
        loss = w * photometric_loss(out.rgb, views.images[vi], weights[vi], cfg.lambda_dssim)
        if layer_weight is not None and vi == views.input_index and bool(g.moving.any()):
            alone = g.moving_part().render(cam, background=step_bg)
            target = views.images[vi] if views.moving_target is None else views.moving_target
            loss = loss + w * cfg.moving_layer_weight * photometric_loss(alone.rgb, target, layer_weight, cfg.lambda_dssim)
        if views.coverage_cameras and cfg.coverage_weight > 0 and step % cfg.coverage_every == 0:
            # In turn, not drawn: a draw would change the photometric views' sequence, and on a 60-step
            # fit that alone moved the photo's PSNR by 3.7 dB (3dmom_scene_0, 256 px).
            cov_cam = views.coverage_cameras[(step // cfg.coverage_every) % len(views.coverage_cameras)]
            loss = loss + cfg.coverage_weight * _coverage_term(g, cov_cam, step_bg)
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):  # one bad step must not poison Adam's moments
            report.skipped_steps += 1
            continue
        loss.backward()
        if step < cfg.refine_stop:
            density.accumulate(out.info, len(g), cam.width, cam.height)
        opt.step()
        if step % check_every == 0 or step == cfg.iters:
            if not _all_finite(g):  # diverged: stop here and keep the last finite state
                report.kept = "snapshot"
                break
            snapshot, snapshot_step = g.detach(), step
        report.losses.append(float(loss.detach()) / w)
        if vi == views.input_index:
            report.psnr_input_history.append((step, psnr(out.rgb.detach().clamp(0, 1), views.images[vi])))

        if cfg.refine_start <= step < cfg.refine_stop and step % cfg.refine_every == 0:
            stats = density.refine(g, opt, step, gen)
            if events:
                events.log(f"densify at step {step}: {stats}, now {len(g)} Gaussians", stage=stage)
        if step > 0 and step % cfg.reset_every == 0 and step < cfg.refine_stop:
            DensityControl.reset_opacity(g, opt, 2 * cfg.prune_opacity)
        if events and (step % max(1, cfg.iters // 20) == 0 or step == cfg.iters):
            events.progress(stage, step / cfg.iters, loss=round(report.losses[-1], 5), gaussians=len(g))

    if report.kept == "trained" and not _all_finite(g):  # the last steps, after the last check
        report.kept = "snapshot"
    trained = snapshot if report.kept == "snapshot" else g.detach()
    report.psnr_per_view = _view_psnrs(trained, views, bg)
    if report.kept == "snapshot" and events:
        events.warning(f"3D training diverged (parameters became NaN or infinite); the Gaussians of step "
                       f"{snapshot_step} of {cfg.iters} are kept.", stage=stage)
    if report.skipped_steps and events:
        events.warning(f"3D training skipped {report.skipped_steps} of {cfg.iters} steps whose loss was not finite.",
                       stage=stage)
    start = _view_psnrs(initial, views, bg)
    if _weighted_mean(report.psnr_per_view, views.input_index, cfg) < _weighted_mean(start, views.input_index, cfg):
        # Never end worse than the start: the lifted photo is a complete, valid scene.
        report.kept, trained, report.psnr_per_view = "initial", initial, start
        if events:
            events.warning("3D training ended worse than the lifted photo it started from; the lifted Gaussians are kept.",
                           stage=stage)
    report.psnr_input_view = report.psnr_per_view[views.input_index]
    synth = [p for i, p in enumerate(report.psnr_per_view) if i != views.input_index]
    report.psnr_synth_mean = float(np.mean(synth)) if synth else float("nan")
    report.n_gaussians = len(trained)
    report.seconds = time.time() - t0
    return trained, report


# ----------------------------------------------------------------------------- the stage

INPUTS = ("image", "depth", "lift", "multiview", "mask")
CACHED = True
RECIPE = "margin-2-layer-plate-behind-edges-surfels-ray-cap-coverage-wide-moving-hidden-fluid-surface-margin-fluid"  # bump when training changes, so cached 3D Gaussians are not reused
INIT_SCALE = 0.3  # a lifted point's first footprint, as a share of its pixel's size
# Moving points inside the mask start wider: the loop carries them by fractions of a pixel, and a
# Gaussian fitted from a one-pixel start renders a half-pixel step of a texture worse than one fitted
# from a wider start (tests/test_train3d.py). On the synthetic evaluation 0.4 gained masked LPIPS and
# loop-truth PSNR on every path, 0.5 about as much, 0.7 lost on both (README, Results). At the mask's
# edge they keep INIT_SCALE: wider, they spill over the static pixels beside them and move them.
MOVING_INIT_SCALE = 0.4
# The margin ring is sampled every 2 px and seldom seen in training, so its Gaussians start wide
# enough to overlap: at 0.3 of their spacing a side camera saw them as a grid of dots.
MARGIN_INIT_SCALE = 0.6


@dataclass
class Gaussians3D:
    gaussians: Gaussians  # on the CPU: the artifact is cached and moved to the job's device by its users
    report: TrainReport


def params(ctx) -> dict:
    return {"recipe": RECIPE, "schedule": ctx.preset.train3d, "seed": ctx.job.seed, "device": str(ctx.device)}


def initial_gaussians(image, depth, lift, mask, plate: np.ndarray | None = None) -> Gaussians:
    """The photo's points, then ones where a moving camera sees what the photo does not: the far
    surface continued behind each depth edge, and a ring beyond the photo's frustum. They are
    Gaussians, so every renderer (Blender's included) shows that scenery, not its background; where
    they continue the fluid (behind a boulder, past the photo's edge) they move with it.
    ``plate``: the photo's ``moving_clean_plate`` when the caller has it (computed here otherwise)."""
    from backend.model.gaussians import from_points
    from backend.stages.lift import lift_behind_edges, lift_margin, surface_axes

    moving = np.zeros(len(lift), bool) if mask is None else mask.reshape(-1)[lift.pixel]
    rgb = lift.rgb
    if mask is not None:  # the moving Gaussians start from the unmixed colours they are trained towards
        plate = moving_clean_plate(image.rgb, mask) if plate is None else plate
        rgb = np.where(moving[:, None], plate.reshape(-1, 3)[lift.pixel], lift.rgb).astype(lift.rgb.dtype)
    # Not behind the moving region: its backdrop (gaussians4d.with_backdrop) fills what it uncovers. A second,
    # static layer there cost up to 0.07 dB against the loop truth on the synthetic paths.
    # Behind a still occluder standing in the fluid (a boulder in the river, a peak against the clouds)
    # the far surface is fluid too: those points move (motion_field.VelocityField carries them on).
    b_xyz, b_rgb, b_size, b_moving = lift_behind_edges(image.rgb, depth.depth, image.camera, exclude=mask)
    # The ring's fluid continues the moving Gaussians' unmixed colours, as the photo's own do.
    ring_rgb = image.rgb if mask is None else np.where(mask[..., None], plate, image.rgb)
    m_xyz, m_rgb, m_size, m_moving = lift_margin(ring_rgb, depth.depth, image.camera, mask=mask)
    # The photo's points lie flat on their surface (in footprints: the identity faces the camera).
    axes = np.concatenate([surface_axes(depth.depth, image.camera)[lift.pixel] / lift.pixel_size[:, None, None],
                           np.broadcast_to(np.eye(3, dtype=np.float32), (len(b_xyz) + len(m_xyz), 3, 3))])
    inner = np.zeros(len(lift), bool)
    if mask is not None:  # the mask's pixels whose four neighbours are in it too (or beyond the frame)
        cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
        inner = cv2.erode(mask.astype(np.uint8), cross, borderType=cv2.BORDER_CONSTANT, borderValue=1).reshape(-1)[lift.pixel] > 0
    scale = np.where(inner, MOVING_INIT_SCALE, INIT_SCALE)
    return from_points(np.concatenate([lift.xyz, b_xyz, m_xyz]), np.concatenate([rgb, b_rgb, m_rgb]),
                       np.concatenate([lift.pixel_size * scale, b_size * INIT_SCALE, m_size * MARGIN_INIT_SCALE]),
                       opacity=0.9, moving=np.concatenate([moving, b_moving, m_moving]),
                       axes=axes)


def run(ctx, image, depth, lift, multiview, mask) -> Gaussians3D:
    # One plate for both uses: the input view's training image is the photo (view 0 re-projects its points).
    plate = None if mask is None else moving_clean_plate(image.rgb, mask)
    init = initial_gaussians(image, depth, lift, mask, plate)
    cfg = preset_config(ctx.preset.name, len(lift))
    cfg.seed = ctx.job.seed
    views = TrainViews(multiview.cameras, torch.as_tensor(multiview.images, device=ctx.device),
                       torch.as_tensor(multiview.valid, device=ctx.device),
                       moving_mask=None if mask is None else torch.as_tensor(mask, device=ctx.device),
                       moving_target=None if plate is None else torch.as_tensor(plate, device=ctx.device),
                       coverage_cameras=coverage_cameras(image.camera))
    g, rep = train_gaussians(init, views, cfg, scene_scale=1.0, events=ctx.events)
    return Gaussians3D(g.to("cpu"), rep)


def report(out: Gaussians3D) -> dict:
    r = out.report
    return {"train_psnr_input_view": round(r.psnr_input_view, 3), "train_psnr_synth_mean": round(r.psnr_synth_mean, 3),
            "train_psnr_per_view": [round(p, 3) for p in r.psnr_per_view], "n_gaussians": r.n_gaussians,
            "train3d_kept": r.kept, "train3d_skipped_steps": r.skipped_steps}
