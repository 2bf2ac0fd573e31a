import math

import cv2
import numpy as np
import pytest

from backend.tools.metrics import image as I
from backend.tools.metrics import motion as M
from backend.tools.metrics.piqe import piqe


def _texture(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.5)
    return (t - t.min()) / (t.max() - t.min())


def test_psnr_known_values_and_mask():
    a = np.zeros((10, 10, 3))
    b = a + 0.1
    assert I.psnr(a, b) == pytest.approx(20.0)
    b2 = a.copy()
    b2[:5] = 0.1  # error only in the top half
    top = np.zeros((10, 10), bool)
    top[:5] = True
    assert I.psnr(a, b2, mask=top) == pytest.approx(20.0)
    assert I.psnr(a, b2) == pytest.approx(20.0 + 10 * math.log10(2))
    assert I.psnr(a, b2, mask=~top) == math.inf
    assert math.isnan(I.psnr(a, b2, mask=np.zeros((10, 10), bool)))


def test_ssim_matches_wang_formula_on_constant_images():
    # For constant images SSIM reduces to the luminance term (2 mx my + C1) / (mx^2 + my^2 + C1).
    a, b = np.full((32, 32), 0.4), np.full((32, 32), 0.6)
    c1 = (0.01) ** 2
    expect = (2 * 0.4 * 0.6 + c1) / (0.4 ** 2 + 0.6 ** 2 + c1)
    assert I.ssim(a, b) == pytest.approx(expect, rel=1e-9)
    t = _texture()
    assert I.ssim(t, t) == pytest.approx(1.0)
    noisy = np.clip(t + np.random.default_rng(0).normal(0, 0.1, t.shape), 0, 1)
    assert 0.2 < I.ssim(t, noisy) < 0.95


def test_masked_ssim_isolates_region():
    t = _texture()
    d = t.copy()
    d[:, 32:] = _texture(seed=5)[:, 32:]
    left = np.zeros(t.shape[:2], bool)
    left[:, :24] = True
    assert I.ssim(t, d, mask=left) == pytest.approx(1.0)
    assert I.ssim(t, d, mask=~left) < 0.7


def test_border_crop_scales_with_resolution():
    assert I.border_for(512, 384) == 32
    assert I.border_for(128, 96) == 8
    x = np.arange(20 * 30).reshape(20, 30)
    assert I.crop_border(x, 2).shape == (16, 26)
    with pytest.raises(ValueError):
        I.crop_border(x, 10)


def test_piqe_orders_clean_noisy():
    t = (_texture(128, 128, 3) * 0.8 + 0.1)
    noisy = np.clip(t + np.random.default_rng(0).normal(0, 0.08, t.shape), 0, 1)
    s_clean, s_noisy = piqe(t), piqe(noisy)
    assert 0 <= s_clean <= 100 and 0 <= s_noisy <= 100
    assert s_noisy > s_clean + 10


def _scroll_video(v=(1.5, -0.5), n=8, h=64, w=80):
    """A texture translating by v px/frame inside a band; static elsewhere."""
    base = _texture(h * 2, w * 2, seed=2)
    frames, mask = [], np.zeros((h, w), bool)
    mask[16:48, 10:70] = True
    for t in range(n):
        M_ = np.float32([[1, 0, v[0] * t], [0, 1, v[1] * t]])
        moved = cv2.warpAffine(base, M_, (w * 2, h * 2), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)[:h, :w]
        f = base[:h, :w].copy()
        f[mask] = moved[mask]
        frames.append(f)
    return np.stack(frames), mask


def test_motion_fidelity_recovers_known_translation():
    frames, mask = _scroll_video()
    target = np.zeros(mask.shape + (2,), np.float32)
    target[mask] = (1.5, -0.5)
    mf = M.motion_fidelity(frames, target, mask)
    assert mf.cosine > 0.97
    assert mf.epe < 0.15
    assert 0.9 < mf.speed_ratio < 1.1
    wrong = -target  # the opposite direction must score badly
    bad = M.motion_fidelity(frames, wrong, mask)
    assert bad.cosine < -0.9 and bad.epe > 2.5


def test_stillness_flicker_and_loop():
    frames, mask = _scroll_video()
    assert M.stillness(frames, mask) < 1e-6  # nothing outside the mask changes
    assert M.stillness(frames, np.zeros_like(mask)) > 0.005
    assert M.flicker(frames) < 0.01
    flick = frames * np.array([1.0, 0.8] * 4)[:, None, None, None]
    assert M.flicker(flick) > 0.05
    closed = np.concatenate([frames, frames[-2:0:-1]])  # ping-pong loop: wrap step equals a normal step
    lm = M.loop_metrics(closed)
    assert abs(lm["loop_gap_db"]) < 1.0
    lm_open = M.loop_metrics(frames)
    assert lm_open["loop_gap_db"] > 3.0
