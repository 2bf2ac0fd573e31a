"""Depth sources (tiny offline model, files, geometric prior, auto fallback) and normalisation."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.stages.depth import (FAR_SHELL_MAX, DepthSpec, FluidMotion, depth_prior, disparity_to_depth, estimate_depth,
                           model_input_size, motion_horizon, normalise_depth, skyline_dp)
from backend.infra.errors import LoopscapeError
from backend.infra.events import NullSink

SCENES = Path(__file__).resolve().parents[2] / "shared" / "data" / "scenes"


def _check_normalised(depth: np.ndarray, sky: np.ndarray) -> None:
    assert depth.dtype == np.float32 and np.all(np.isfinite(depth)) and depth.min() > 0
    ground = depth[~sky]
    assert np.percentile(ground, 10) == pytest.approx(1.0, rel=1e-4)
    # the far shell bounds everything; sky sits exactly on it
    far = min(FAR_SHELL_MAX, 2.0 * float(np.percentile(ground, 98)))
    assert depth.max() <= far * (1 + 1e-4)
    if sky.any():
        np.testing.assert_allclose(depth[sky], far, rtol=1e-4)


# ----------------------------------------------------------------------------- tiny model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised Depth Anything with a 4-layer, 32-wide Dinov2 backbone, saved like a hub model."""
    torch = pytest.importorskip("torch")
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2, image_size=56,
                            patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                              fusion_hidden_size=16, head_hidden_size=8, patch_size=14)
    folder = tmp_path_factory.mktemp("tiny_depth_anything")
    DepthAnythingForDepthEstimation(cfg).eval().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "DPTImageProcessor", "do_resize": True, "size": {"height": 56, "width": 56},
        "keep_aspect_ratio": True, "ensure_multiple_of": 14, "resample": 3, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225], "do_pad": False}))
    return folder


def test_model_from_local_folder_offline(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rng = np.random.default_rng(0)
    rgb = rng.random((48, 80, 3), dtype=np.float32)
    dm = estimate_depth(rgb, DepthSpec(source="model", model=str(tiny_model)))
    assert dm.source == f"model:{tiny_model}"
    assert dm.depth.shape == (48, 80) and dm.sky.shape == (48, 80) and dm.sky.dtype == bool
    _check_normalised(dm.depth, dm.sky)
    # the same folder through "auto" is used, not the prior, and warns about nothing
    sink = NullSink()
    auto = estimate_depth(rgb, DepthSpec(source="auto", model=str(tiny_model)), sink)
    assert auto.source == dm.source and not sink.warnings
    np.testing.assert_allclose(auto.depth, dm.depth)


def test_model_input_size_multiple_of_patch() -> None:
    assert model_input_size(1024, 1024, (518, 518), 14, True) == (518, 518)
    # 16:9 landscape: the short side goes to ~518, the long side keeps the aspect ratio
    h, w = model_input_size(720, 1280, (518, 518), 14, True)
    assert h % 14 == 0 and w % 14 == 0 and h == 518 and abs(w / h - 1280 / 720) < 0.03
    assert model_input_size(48, 64, (56, 56), 14, True) == (42, 56)
    assert model_input_size(48, 64, (56, 56), 14, False) == (56, 56)


def test_disparity_to_depth_inverts_and_marks_zero_as_sky() -> None:
    disp = np.array([[0.0, 1e-4, 0.5], [1.0, 2.0, 4.0]])
    depth, sky = disparity_to_depth(disp)
    assert sky.tolist() == [[True, True, False], [False, False, False]]
    np.testing.assert_allclose(depth[~sky], [2.0, 1.0, 0.5, 0.25])


def test_auto_falls_back_to_prior_with_warning(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    rgb = _synthetic_landscape()
    sink = NullSink()
    dm = estimate_depth(rgb, DepthSpec(source="auto", model="loopscape-tests/no-such-depth-model"), sink)
    assert dm.source == "prior"
    assert len(sink.warnings) == 1 and "loopscape-tests/no-such-depth-model" in sink.warnings[0]
    assert "prior" in sink.warnings[0]


def test_explicit_model_not_loadable_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    rgb = _synthetic_landscape()
    with pytest.raises(LoopscapeError) as err:
        estimate_depth(rgb, DepthSpec(source="model", model="loopscape-tests/no-such-depth-model"))
    assert "loopscape-tests/no-such-depth-model" in err.value.message
    assert "local folder" in err.value.hint and "internet" in err.value.hint
    with pytest.raises(LoopscapeError, match="does not exist"):
        estimate_depth(rgb, DepthSpec(source="model", model=str(tmp_path / "missing" / "model")))


# ----------------------------------------------------------------------------- normalisation


def test_normalise_depth_contract() -> None:
    rng = np.random.default_rng(1)
    d = rng.uniform(2.0, 30.0, size=(40, 50))
    sky = np.zeros_like(d, dtype=bool)
    sky[:8] = True
    d[:8] = 1e6  # sky values must not influence the scale
    d[20, 20] = np.inf  # missing depth goes to the shell too
    out = normalise_depth(d, sky)
    valid = ~sky
    valid[20, 20] = False
    scaled = d / np.percentile(d[valid], 10)
    far = min(FAR_SHELL_MAX, 2 * np.percentile(scaled[valid], 98))
    np.testing.assert_allclose(out[valid], np.minimum(scaled[valid], far), rtol=1e-5)
    assert np.all(out[sky] == np.float32(far)) and out[20, 20] == np.float32(far)
    assert np.percentile(out[valid], 10) == pytest.approx(1.0, rel=1e-5)
    # a wide range is capped at FAR_SHELL_MAX and near content clipped to it
    wide = np.geomspace(1, 1000, 2000).reshape(40, 50)
    out = normalise_depth(wide, np.zeros_like(wide, dtype=bool))
    assert out.max() == pytest.approx(FAR_SHELL_MAX)
    with pytest.raises(LoopscapeError):
        normalise_depth(np.zeros((4, 4)), np.zeros((4, 4), bool))


# ----------------------------------------------------------------------------- files


def _ramp_depth(h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return (2.0 + 0.1 * x + 0.3 * (h - y)).astype(np.float32)


def test_depth_files_npy_png16_exr(tmp_path: Path) -> None:
    d = _ramp_depth()
    expected = d / np.percentile(d, 10)
    np.save(tmp_path / "d.npy", d)
    cv2.imwrite(str(tmp_path / "d.png"), np.round(d * 1000).astype(np.uint16))
    assert cv2.imwrite(str(tmp_path / "d.exr"), d)
    rgb = np.zeros((48, 64, 3), np.float32)
    for name, tol in (("d.npy", 1e-5), ("d.png", 1e-3), ("d.exr", 1e-5)):
        dm = estimate_depth(rgb, DepthSpec(source=str(tmp_path / name)))
        assert dm.source == f"file:{name}" and not dm.sky.any()
        far = min(FAR_SHELL_MAX, 2 * np.percentile(expected, 98))
        np.testing.assert_allclose(dm.depth, np.minimum(expected, far), rtol=tol)


def test_disparity_file_and_sky(tmp_path: Path) -> None:
    d = _ramp_depth()
    disp = 1.0 / d
    disp[:5] = 0.0  # sky rows
    np.save(tmp_path / "disp.npy", disp)
    dm = estimate_depth(np.zeros((48, 64, 3), np.float32), DepthSpec(source=str(tmp_path / "disp.npy"), kind="disparity"))
    assert dm.sky[:5].all() and not dm.sky[5:].any()
    ground = d[5:]
    np.testing.assert_allclose(dm.depth[5:], ground / np.percentile(ground, 10), rtol=1e-5)
    _check_normalised(dm.depth, dm.sky)
    # read as depth instead, the same file is inverted: the far rows become the near rows
    as_depth = estimate_depth(np.zeros((48, 64, 3), np.float32), DepthSpec(source=str(tmp_path / "disp.npy")))
    assert as_depth.depth[47, 0] > as_depth.depth[6, 63]


def test_depth_file_resized_to_image(tmp_path: Path) -> None:
    d = _ramp_depth(96, 128)
    d[:10] = 0.0  # "no depth" in the file is sky
    np.save(tmp_path / "big.npy", d)
    dm = estimate_depth(np.zeros((48, 64, 3), np.float32), DepthSpec(source=str(tmp_path / "big.npy")))
    assert dm.depth.shape == (48, 64)
    assert dm.sky[:4].all() and not dm.sky[6:].any()
    _check_normalised(dm.depth, dm.sky)
    # depth still grows towards the top (far rows) and to the right
    assert dm.depth[10, 60] > dm.depth[40, 60] > dm.depth[40, 2]


def test_depth_file_errors(tmp_path: Path) -> None:
    rgb = np.zeros((48, 64, 3), np.float32)
    bad = _ramp_depth()
    bad[3, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    np.save(tmp_path / "shape.npy", np.ones((2, 48, 64), np.float32))
    np.save(tmp_path / "aspect.npy", np.ones((48, 48), np.float32))
    cv2.imwrite(str(tmp_path / "d8.png"), np.full((48, 64), 100, np.uint8))
    (tmp_path / "junk.exr").write_bytes(b"not an exr")
    (tmp_path / "d.tif").write_bytes(b"x")
    cases = {"nan.npy": "NaN", "shape.npy": "shape", "aspect.npy": "aspect", "d8.png": "16-bit",
             "junk.exr": "could not read", "d.tif": "unsupported", "missing.npy": "not found"}
    for name, words in cases.items():
        with pytest.raises(LoopscapeError, match=words):
            estimate_depth(rgb, DepthSpec(source=str(tmp_path / name)))
    np.save(tmp_path / "zeros.npy", np.zeros((48, 64), np.float32))
    with pytest.raises(LoopscapeError, match="no valid depth"):
        estimate_depth(rgb, DepthSpec(source=str(tmp_path / "zeros.npy")))
    with pytest.raises(LoopscapeError, match="kind"):
        estimate_depth(rgb, DepthSpec(source=str(tmp_path / "nan.npy"), kind="metres"))


# ----------------------------------------------------------------------------- prior


def _synthetic_landscape(h: int = 96, w: int = 128, horizon: int = 38, seed: int = 0) -> np.ndarray:
    """Smooth blue sky gradient above a textured green/brown ground with a hill."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    t = np.linspace(0, 1, horizon)[:, None]
    img[:horizon] = np.stack([0.35 + 0.35 * t, 0.55 + 0.3 * t, 0.95 - 0.05 * t], -1)
    ground = np.array([0.35, 0.45, 0.2]) + 0.12 * rng.standard_normal((h - horizon, w, 3))
    img[horizon:] = ground
    # a hill rising above the horizon on the left third
    for x in range(w // 3):
        top = horizon - int(12 * np.sin(np.pi * x / (w // 3)))
        img[top:horizon, x] = np.array([0.3, 0.35, 0.25]) + 0.1 * rng.standard_normal((horizon - top, 3))
    return np.clip(img, 0, 1)


def test_skyline_dp_finds_step() -> None:
    score = -np.ones((20, 30), np.float32)
    score[:8, :15] = 1.0
    score[:12, 15:] = 1.0
    b = skyline_dp(score, jump_cost=0.5)
    assert b[:15].tolist() == [8] * 15 and b[15:].tolist() == [12] * 15
    # a large jump cost prefers a flat skyline
    assert len(set(skyline_dp(score, jump_cost=50.0).tolist())) == 1


def test_prior_on_synthetic_landscape() -> None:
    rgb = _synthetic_landscape()
    dm = depth_prior(rgb)
    assert dm.source == "prior"
    truth = np.zeros((96, 128), bool)
    truth[:38] = True
    truth[:, : 128 // 3] = False
    truth[:26, : 128 // 3] = True
    iou = (dm.sky & truth).sum() / (dm.sky | truth).sum()
    assert iou > 0.85
    _check_normalised(dm.depth, dm.sky)
    col = dm.depth[:, 100]
    ground = col[45:]
    # ground depth grows towards the horizon (up the image), strictly in the lower part
    assert np.all(np.diff(ground) <= 1e-6) and ground[0] > 3 * ground[-1]
    assert dm.depth[95, 64] == pytest.approx(dm.depth[95].min(), rel=1e-3)
    # the hill sits in front of the sky but behind the near ground
    assert dm.depth[95, 20] < dm.depth[34, 20] < dm.depth[5, 20]


def _valley(h: int = 96, w: int = 128, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A V of light sky between smooth green slopes that reach the top corners, above blue-grey
    water: the bottom band looks more like the sky than the slopes do. Returns (rgb, true sky)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sky = yy < 0.45 * h - 0.9 * np.abs(xx - w / 2)
    img = np.empty((h, w, 3), np.float32)
    img[...] = np.array([0.42, 0.5, 0.25]) + 0.03 * rng.standard_normal((h, w, 3))  # olive slopes
    img[sky] = (np.array([0.6, 0.75, 0.95]) + 0.04 * rng.standard_normal((h, w, 3)))[sky]
    water = yy > 0.55 * h
    img[water] = (np.array([0.55, 0.62, 0.72]) + 0.08 * rng.standard_normal((h, w, 3)))[water]
    return np.clip(img, 0, 1), sky


def test_prior_keeps_slopes_out_of_the_sky_above_water() -> None:
    rgb, truth = _valley()
    dm = depth_prior(rgb)
    iou = (dm.sky & truth).sum() / (dm.sky | truth).sum()
    assert iou > 0.8, f"sky IoU {iou:.2f}: slopes taken for sky ({dm.sky.mean():.2f} of the frame, truth {truth.mean():.2f})"
    # the slopes stand in front of the far shell
    assert dm.depth[10, 5] < 0.9 * dm.far_shell


def _plane_flow(h: int, w: int, y_h: float, fx: float, vx: float, vz: float, top: int) -> tuple[np.ndarray, np.ndarray]:
    """The flow of water moving uniformly (vx across, vz towards the camera) on a level ground plane
    that vanishes at row ``y_h``, below row ``top``: depth ~ 1 / (y - y_h)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    mask = yy >= top
    inv_z = (yy - y_h) / (fx * 0.1)  # a camera 0.1 units above the water
    flow = np.zeros((h, w, 2), np.float32)
    flow[..., 0] = fx * vx * inv_z - (xx - w / 2) * vz * inv_z
    flow[..., 1] = -(yy - y_h) * vz * inv_z  # towards the camera (vz < 0) is down the image
    return flow * mask[..., None], mask


@pytest.mark.parametrize("vx, vz", [(0.01, 0.0), (0.0, 0.01), (0.006, -0.008)])
def test_motion_horizon_is_where_the_water_flow_vanishes(vx: float, vz: float) -> None:
    K = np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])
    flow, mask = _plane_flow(48, 64, y_h=17.0, fx=60.0, vx=vx, vz=vz, top=22)
    assert motion_horizon(flow, mask, K) == pytest.approx(17.0, abs=0.5)
    # Arrows drawn at one speed carry no perspective: the skyline keeps the horizon.
    uniform = np.where(mask[..., None], np.float32([0.7, 0.1]), 0).astype(np.float32)
    assert motion_horizon(uniform, mask, K) is None
    noisy = uniform + 0.2 * np.random.default_rng(0).standard_normal(uniform.shape).astype(np.float32) * mask[..., None]
    assert motion_horizon(noisy, mask, K) is None


def test_prior_takes_a_valley_horizon_from_the_water() -> None:
    """The V of sky puts the skyline's horizon high; the water's perspective puts it where the
    flow vanishes, and the far water moves back to where that plane puts it."""
    rgb, _ = _valley()
    h, w = rgb.shape[:2]
    K = np.array([[110.0, 0, w / 2], [0, 110.0, h / 2], [0, 0, 1]])
    y_true = 0.5 * h
    flow, mask = _plane_flow(h, w, y_h=y_true, fx=110.0, vx=0.01, vz=0.0, top=int(0.55 * h) + 1)
    skyline_only = depth_prior(rgb)
    with_motion = depth_prior(rgb, FluidMotion(flow, mask, K))
    ratio = lambda d: d[int(0.56 * h), w // 2] / d[h - 1, w // 2]  # noqa: E731  far water over near water
    truth = (h - 0.5 - y_true) / (int(0.56 * h) + 0.5 - y_true)
    assert abs(np.log(ratio(with_motion.depth) / truth)) < 0.5 * abs(np.log(ratio(skyline_only.depth) / truth))
    assert np.array_equal(with_motion.sky, skyline_only.sky)


def test_prior_without_sky_is_a_tilted_plane() -> None:
    rng = np.random.default_rng(3)
    rgb = np.clip(np.array([0.4, 0.35, 0.25]) + 0.15 * rng.standard_normal((64, 80, 3)), 0, 1).astype(np.float32)
    dm = depth_prior(rgb)
    assert dm.sky.mean() < 0.05
    _check_normalised(dm.depth, dm.sky)
    assert dm.depth[2, 40] > 1.5 * dm.depth[62, 40]


@pytest.mark.skipif(not SCENES.is_dir(), reason="shared test scenes not available")
def test_prior_on_real_scenes() -> None:
    from backend.io.image import load_image

    for scene in sorted(SCENES.iterdir()):
        if not (scene / "image.png").exists():
            continue
        im = load_image(scene / "image.png", 256)
        dm = estimate_depth(im.rgb, DepthSpec(source="prior"))
        _check_normalised(dm.depth, dm.sky)
        h = dm.depth.shape[0]
        assert 0.05 < dm.sky.mean() < 0.75, scene.name
        assert not dm.sky[-h // 5:].any(), scene.name  # no sky in the bottom fifth of a landscape
        assert dm.sky[0].mean() > 0.5, scene.name  # these photos all show sky along the top
        # near ground at the bottom, farther content halfway up, sky on the shell
        first = int(np.argmax((~dm.sky).any(axis=1)))  # first row with ground
        band = slice(first, first + max(2, (h - first) // 5))
        mid = dm.depth[band][~dm.sky[band]]
        assert mid.size and np.median(dm.depth[-1]) < 0.8 * np.median(mid), scene.name
        assert np.median(dm.depth[-1]) < 1.5, scene.name


# ----------------------------------------------------------------------------- offline without waiting


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # bound and closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("block", ["closed-port", "hung-resolver"])
def test_auto_offline_falls_back_within_two_seconds(block: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No HF_HUB_OFFLINE, no network: one quick probe, then the prior with the usual warning (issue 9:
    31 s went on the hub's retries)."""
    import socket
    import time

    from backend.stages import depth as depth_mod

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    if block == "closed-port":
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    else:  # a resolver that never answers: the connect timeout alone does not bound it
        monkeypatch.setenv("HF_ENDPOINT", "https://huggingface.co")
        monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: time.sleep(30))
    monkeypatch.setattr(depth_mod, "_MODEL_CACHE", {})
    import transformers  # noqa: F401  (its first import is not the hub's wait)

    rgb = _synthetic_landscape()
    sink = NullSink()
    t0 = time.perf_counter()
    dm = estimate_depth(rgb, DepthSpec(source="auto"), sink)
    took = time.perf_counter() - t0
    assert dm.source == "prior"
    assert len(sink.warnings) == 1 and "offline geometric depth prior" in sink.warnings[0]
    assert took < 2.0, f"the fallback took {took:.1f} s"


def test_a_still_island_in_the_fluid_stands_at_its_foot() -> None:
    """On a ground plane, a still block the fluid encloses takes the depth of the fluid just below
    it, nearer than the fluid beside its top; one joined to the frame's edge by a channel narrower
    than the mask snap's band is an island too; a still region that reaches the frame is not."""
    from backend.stages.depth import stand_islands

    h, w, y_h = 96, 128, 20.0
    rows = np.arange(h)[:, None] + 0.5
    plane = np.broadcast_to(1.0 / ((rows - y_h) / h), (h, w)).astype(np.float64)
    moving = np.ones((h, w), bool)
    moving[:21] = False  # the far bank, at the top: reaches the frame
    moving[50:60, 30:42] = False  # a boulder
    moving[70:80, 90:100] = False  # a boulder joined to the right edge by a 1-px channel
    moving[75, 100:] = False
    moving[40:90, :6] = False  # a bank at the left edge
    sky = np.zeros((h, w), bool)
    out = stand_islands(plane, moving, sky)
    np.testing.assert_allclose(out[50:60, 30:42], plane[60, 36])  # the boulder stands on its foot's row
    assert out[50, 36] < 0.85 * plane[50, 44]  # in front of the fluid beside its top: a depth edge
    np.testing.assert_allclose(out[70:80, 90:100], plane[80, 95])
    np.testing.assert_array_equal(out[:21], plane[:21])  # the far bank lies on the plane still
    np.testing.assert_array_equal(out[40:90, :6], plane[40:90, :6])
    np.testing.assert_array_equal(out[moving], plane[moving])
    np.testing.assert_array_equal(stand_islands(plane, np.ones((h, w), bool), sky), plane)  # nothing still
    # the edge snap joins a painted island to the bank by a channel wider than its band: the mask
    # as painted still encloses it
    snapped = moving.copy()
    snapped[50:60, 6:30] = False
    flat = stand_islands(plane, snapped, sky)
    np.testing.assert_array_equal(flat[50:60, 30:42], plane[50:60, 30:42])
    stood = stand_islands(plane, snapped, sky, painted=moving)
    np.testing.assert_allclose(stood[50:60, 30:42], plane[60, 36])
    np.testing.assert_array_equal(stood[50:60, 6:24], plane[50:60, 6:24])  # the channel beyond the band lies flat
