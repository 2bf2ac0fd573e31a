"""Video metrics for looping scene videos: motion fidelity, stillness, loop closure, flicker.

Flow is measured with OpenCV's DIS optical flow (no learned weights) on consecutive frames.
Frames are float (H, W, 3) in [0, 1]; flows are (H, W, 2) in pixels per frame, (dx, dy).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from backend.tools.metrics.image import psnr

ERODE_PX = 3   # ignore the mask's rim, where flow estimates bleed across the motion boundary
DILATE_PX = 5  # stillness is judged well away from anything that moves
MIN_SPEED = 0.05  # px/frame; directions of slower vectors are noise


def _gray8(frame: np.ndarray) -> np.ndarray:
    f = np.asarray(frame)
    if f.dtype != np.uint8:
        f = np.round(np.clip(f, 0, 1) * 255).astype(np.uint8)
    return cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) if f.ndim == 3 else f


def dis_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow from frame ``a`` to frame ``b`` (H, W, 2) with DIS.

    Medium preset, refined down to full resolution (finest scale 0, patch stride 2): at our small
    eval sizes the default finest scale under-reads speeds in narrow moving regions by ~20%.
    """
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0)
    dis.setPatchStride(2)
    return dis.calc(_gray8(a), _gray8(b), None)


def dis_flow_capped(a: np.ndarray, b: np.ndarray, max_side: int | None = None) -> np.ndarray:
    """:func:`dis_flow` measured at most ``max_side`` pixels along the long side, returned at full size
    in full-size pixels (DIS at 1280x720 costs ~0.25 s a pair; at 512 px a sixth of it)."""
    h, w = np.asarray(a).shape[:2]
    s = 1.0 if not max_side or max(h, w) <= max_side else max_side / max(h, w)
    if s == 1.0:
        return dis_flow(a, b)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    small = dis_flow(cv2.resize(_gray8(a), size, interpolation=cv2.INTER_AREA),
                     cv2.resize(_gray8(b), size, interpolation=cv2.INTER_AREA))
    full = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    full[..., 0] *= w / size[0]
    full[..., 1] *= h / size[1]
    return full


def pair_subset(n_pairs: int, max_pairs: int | None) -> np.ndarray:
    """Indices of at most ``max_pairs`` consecutive-frame pairs spread evenly over ``n_pairs``."""
    if not max_pairs or n_pairs <= max_pairs:
        return np.arange(n_pairs)
    return np.unique(np.round(np.linspace(0, n_pairs - 1, max_pairs)).astype(int))


def video_flows(frames: np.ndarray, pairs: np.ndarray | None = None, max_side: int | None = None) -> np.ndarray:
    """Flows between consecutive frames i -> i + 1 for i in ``pairs`` (default all): (P, H, W, 2)."""
    idx = range(len(frames) - 1) if pairs is None else pairs
    return np.stack([dis_flow_capped(frames[i], frames[i + 1], max_side) for i in idx])


def _morph(mask: np.ndarray, px: int, erode: bool) -> np.ndarray:
    m = np.asarray(mask, bool).astype(np.uint8)
    if px <= 0:
        return m.astype(bool)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return (cv2.erode(m, k) if erode else cv2.dilate(m, k)).astype(bool)


@dataclass
class MotionFidelity:
    cosine: float  # mean cosine similarity of direction (1 = same direction), inside the eroded mask
    epe: float     # mean end-point error, px/frame
    speed_ratio: float  # measured mean speed / requested mean speed
    n_pixels: int


def motion_fidelity(frames: np.ndarray, target_flow: np.ndarray, mask: np.ndarray,
                    flows: np.ndarray | None = None, erode_px: int = ERODE_PX) -> MotionFidelity:
    """Compare the flow measured in ``frames`` with the requested ``target_flow`` inside the mask.

    The measured flow of every consecutive pair is compared with the target, then averaged; the
    cosine only counts pixels where both vectors move faster than ``MIN_SPEED``.
    """
    flows = video_flows(frames) if flows is None else flows
    m = _morph(mask, erode_px, erode=True)
    if not m.any():
        m = np.asarray(mask, bool)
    tgt = np.asarray(target_flow, np.float64)[m]  # (P,2)
    meas = flows[:, m].astype(np.float64)           # (T-1,P,2)
    epe = float(np.linalg.norm(meas - tgt[None], axis=-1).mean()) if m.any() else float("nan")
    nt, nm = np.linalg.norm(tgt, axis=-1)[None], np.linalg.norm(meas, axis=-1)
    ok = (nt > MIN_SPEED) & (nm > MIN_SPEED)
    cos = (meas * tgt[None]).sum(-1) / np.maximum(nt * nm, 1e-12)
    cosine = float(cos[ok].mean()) if ok.any() else float("nan")
    speed_ratio = float(nm.mean() / max(float(nt.mean()), 1e-12)) if m.any() else float("nan")
    return MotionFidelity(cosine, epe, speed_ratio, int(m.sum()))


def stillness(frames: np.ndarray, mask: np.ndarray, dilate_px: int = DILATE_PX) -> float:
    """Mean absolute frame-to-frame change (0..1 units) outside the dilated motion mask."""
    outside = ~_morph(mask, dilate_px, erode=False)
    if not outside.any() or len(frames) < 2:
        return float("nan")
    d = np.abs(np.diff(np.asarray(frames, np.float32), axis=0)).mean(axis=-1)  # (T-1,H,W)
    return float(d[:, outside].mean())


def loop_closure_psnr(frames: np.ndarray) -> float:
    """PSNR of the wrap step, last frame -> frame 0 (see ``loop_metrics`` for the comparison)."""
    return psnr(frames[-1], frames[0])


def flicker(frames: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Temporal flicker: mean absolute change of the per-frame mean brightness (0..1 units).

    Motion moves content around but keeps the global (or masked-region) brightness steady, so
    frame-to-frame jumps of the mean are flicker, not motion.
    """
    f = np.asarray(frames, np.float32).mean(axis=-1)  # (T,H,W)
    if mask is not None and np.asarray(mask, bool).any():
        series = f[:, np.asarray(mask, bool)].mean(axis=1)
    else:
        series = f.reshape(len(f), -1).mean(axis=1)
    if len(series) < 2:
        return float("nan")
    return float(np.abs(np.diff(np.append(series, series[0]))).mean())


def loop_metrics(frames: np.ndarray) -> dict[str, float]:
    """Loop closure: the wrap step's PSNR and how it compares with the median ordinary step.

    A closed loop's wrap step looks like any other step, so ``loop_gap_db`` (median step PSNR
    minus wrap PSNR) is near 0; a visible jump at the wrap makes it large and positive.
    """
    steps = [psnr(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]
    wrap = loop_closure_psnr(frames)
    med = float(np.median(steps)) if steps else float("nan")
    return {"loop_psnr": wrap, "step_psnr": med, "loop_gap_db": med - wrap}


def video_metrics(frames: np.ndarray, mask: np.ndarray, target_flow: np.ndarray | None = None,
                  max_pairs: int | None = None, flow_max_side: int | None = None) -> dict[str, float]:
    """All no-reference video metrics of one rendered (fixed-camera) loop.

    ``max_pairs`` / ``flow_max_side`` bound the flow's cost (a subset of consecutive pairs, spread
    over the loop, measured at a capped size); stillness, flicker and loop closure use every frame."""
    frames = np.asarray(frames, np.float32)
    out: dict[str, float] = {}
    flows = video_flows(frames, pair_subset(len(frames) - 1, max_pairs), flow_max_side) if len(frames) > 1 else None
    if target_flow is not None and flows is not None:
        mf = motion_fidelity(frames, target_flow, mask, flows=flows)
        out.update({"motion_cos": mf.cosine, "motion_epe": mf.epe, "motion_speed_ratio": mf.speed_ratio})
    out["stillness"] = stillness(frames, mask)
    out["flicker"] = flicker(frames)
    out.update(loop_metrics(frames))
    return out


def as_dict(mf: MotionFidelity) -> dict:
    return asdict(mf)
