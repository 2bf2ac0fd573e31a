"""The mask's edge snaps to the photo: static pixels a brush took along stop moving, and nothing
else does (``backend.model.mask_edges``, applied by the ``load`` stage)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from backend.infra.events import NullSink
from backend.io.image import load_image
from backend.job import JobSpec
from backend.model.camera import Camera, intrinsics_from_fov
from backend.model.gaussians import from_points
from backend.model.losses import psnr
from backend.model.mask_edges import MAX_RELEASED_SHARE, band_px, moving_clean_plate, snap_mask_edges
from backend.pipeline import run_job
from backend.stages.gaussians3d import TrainConfig, TrainViews, train_gaussians


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator, sigma: float) -> np.ndarray:
    n = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), sigma)
    return (n - n.min()) / max(float(np.ptp(n)), 1e-6)


def _skyline_layers(W: int = 64, H: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A cloudy sky over a jagged grey ridge, anti-aliased (drawn 4x larger, then shrunk); the true
    sky mask (pixels more sky than rock); and the sky alone, as if the ridge were not there."""
    s = 4
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:H * s, 0:W * s].astype(np.float32) / s
    ridge = 0.5 * H + 5.0 * np.sin(xs / 4.0) + 3.0 * np.sin(xs / 1.7 + 1.0)
    sky_part = ys < ridge
    clouds = _smooth_noise((H * s, W * s), rng, 3.0 * s)[..., None]
    sky = np.stack([0.45 + 0.2 * ys / H, 0.6 + 0.2 * ys / H, np.full_like(ys, 0.95)], -1) * (1 - clouds) + 0.97 * clouds
    rock = (0.42 + 0.12 * _smooth_noise((H * s, W * s), rng, 1.0 * s))[..., None] * np.array([1.0, 1.02, 1.1])
    img = np.where(sky_part[..., None], sky, rock).astype(np.float32)
    small = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)
    share = cv2.resize(sky_part.astype(np.float32), (W, H), interpolation=cv2.INTER_AREA)
    sky_alone = cv2.resize(sky.astype(np.float32), (W, H), interpolation=cv2.INTER_AREA)
    return np.clip(small, 0, 1), share > 0.5, np.clip(sky_alone, 0, 1)


def _skyline(W: int = 64, H: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return _skyline_layers(W, H, seed)[:2]


def _grow(mask: np.ndarray, px: int) -> np.ndarray:
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), disc) > 0


def test_a_brush_over_the_skyline_is_snapped_back_to_it():
    rgb, sky = _skyline()
    painted = _grow(sky, 2)
    snap = snap_mask_edges(rgb, painted, band=3)
    released = painted & ~snap.mask
    assert snap.released == int(released.sum()) > 0
    rock_taken = painted & ~sky
    # nearly every released pixel is rock, and most of the rock the brush took is released
    assert (released & ~sky).sum() >= 0.95 * released.sum()
    assert (snap.mask & ~sky).sum() <= 0.2 * rock_taken.sum()
    # the sky keeps its interior: nothing more than a pixel inside the true edge is released
    inner_sky = cv2.erode(sky.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert not (released & inner_sky).any()


def test_a_mask_on_the_edge_already_is_left_almost_as_it_is():
    rgb, sky = _skyline(seed=1)
    snap = snap_mask_edges(rgb, sky, band=3)
    ring = sky & ~(cv2.erode(sky.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    assert snap.released <= 0.1 * ring.sum()


def test_textured_water_by_a_dark_bank_keeps_its_ripples():
    """A dark ripple next to a dark bank is still water: each side's model carries its variance."""
    W, H = 64, 48
    rng = np.random.default_rng(4)
    ripples = _smooth_noise((H, W), rng, 1.0)
    water = np.stack([0.15 + 0.5 * ripples, 0.25 + 0.5 * ripples, 0.35 + 0.5 * ripples], -1)
    bank = np.stack([np.full((H, W), 0.22), np.full((H, W), 0.2), np.full((H, W), 0.12)], -1)
    bank += 0.02 * rng.standard_normal((H, W, 1))
    mask = np.zeros((H, W), bool)
    mask[:, 20:44] = True
    rgb = np.where(mask[..., None], water, bank).astype(np.float32)
    snap = snap_mask_edges(rgb, mask, band=3)
    assert snap.released <= 0.1 * 2 * H  # of the two edge columns' pixels


def test_thin_moving_structures_and_small_masks_are_not_peeled_away():
    W, H = 64, 48
    rgb, _ = _skyline()
    strip = np.zeros((H, W), bool)
    strip[5:40, 30:33] = True  # a 3-px waterfall over rock and sky: no deep pixels, no model of it
    assert snap_mask_edges(rgb, strip, band=3).released == 0
    # a blob that looks like its surroundings would lose more than MAX_RELEASED_SHARE: kept whole
    flat = np.full((H, W, 3), 0.5, np.float32) + 0.01 * np.random.default_rng(0).standard_normal((H, W, 1)).astype(np.float32)
    blob = np.zeros((H, W), bool)
    blob[20:28, 28:36] = True
    kept = snap_mask_edges(flat, blob, band=3)
    assert kept.released == 0 and kept.mask.sum() == blob.sum()
    assert 0 < MAX_RELEASED_SHARE < 1


def _edge_ring(mask: np.ndarray) -> np.ndarray:
    return mask & ~(cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)


def test_the_clean_plate_unmixes_the_skyline_and_touches_nothing_else():
    rgb, sky, sky_alone = _skyline_layers(seed=3)
    plate = moving_clean_plate(rgb, sky)
    ring = _edge_ring(sky)
    before = np.abs(rgb - sky_alone)[ring].mean()
    after = np.abs(plate - sky_alone)[ring].mean()
    assert before > 0.02 and after < 0.4 * before, (before, after)  # the ridge's grey is gone from the edge
    assert np.array_equal(plate[~ring], rgb[~ring])  # the interior and the static side are the photo's


def test_the_clean_plate_leaves_a_thin_strand_its_own_colour():
    rgb = np.random.default_rng(0).random((24, 32, 3)).astype(np.float32)
    strand = np.zeros((24, 32), bool)
    strand[:, 10] = True  # one pixel wide: no interior to borrow from
    assert np.array_equal(moving_clean_plate(rgb, strand), rgb)


def test_the_moving_gaussians_alone_show_the_sky_at_the_skyline():
    """Composited, a half-hidden sky Gaussian can take any colour that, mixed with the ridge's
    spill, fits the photo; moved into open sky it then traces the skyline. The 3D fit draws the
    moving Gaussians alone too, against the clean plate, so they keep the sky's own colour."""
    rgb, sky, sky_alone = _skyline_layers()
    H, W = sky.shape
    cam = Camera(intrinsics_from_fov(W, H, 50.0), W, H)
    K = cam.K
    ys, xs = np.mgrid[0:H, 0:W]
    z = np.where(sky, 10.0, 3.0)  # the sky far behind the ridge
    xyz = np.stack([(xs + 0.5 - K[0, 2]) / K[0, 0] * z, (ys + 0.5 - K[1, 2]) / K[1, 1] * z, z], -1).reshape(-1, 3)
    views = TrainViews([cam], torch.as_tensor(rgb)[None], torch.ones((1, H, W), dtype=torch.bool),
                       moving_mask=torch.as_tensor(sky), moving_target=torch.as_tensor(moving_clean_plate(rgb, sky)))
    ring = _edge_ring(sky)
    results = {}
    on = TrainConfig().moving_layer_weight  # the default
    for weight in (0.0, on):
        runs = []
        # A 60-step fit's edge error varies with the view and background sequence (seed) and with the
        # CPU's float reductions: the mean of three seeds, not one run, is what the term moves.
        for seed in range(3):
            start = from_points(xyz, rgb.reshape(-1, 3), (z / K[0, 0]).reshape(-1) * 0.3, opacity=0.9,
                                moving=sky.reshape(-1))
            g, report = train_gaussians(start, views, TrainConfig(iters=60, moving_layer_weight=weight, seed=seed))
            with torch.no_grad():
                alone = g.subset(torch.nonzero(g.moving).squeeze(1)).render(cam, background=torch.zeros(3)).rgb.numpy()
            runs.append((np.abs(alone - sky_alone)[ring].mean(), report.psnr_input_view))
        results[weight] = tuple(np.mean(runs, axis=0))
    (err_off, psnr_off), (err_on, psnr_on) = results[0.0], results[on]
    photo_mix = np.abs(rgb - sky_alone)[ring].mean()
    # Without the layer the fit pushes the edge further from the sky than the photo's mix itself
    # (0.037 against 0.029, seeds 0-2); with it the edge is nearer the sky than the photo is (0.020;
    # single seeds 0.018-0.022, 0.48-0.60 of the run without).
    assert err_off > photo_mix
    assert err_on < 0.65 * err_off and err_on < 0.8 * photo_mix, results
    # The photo is still fitted. Some cost is expected: an edge pixel's mix of sky and ridge is now
    # left more to the ridge's spill (single seeds 40.4-41.4 dB against 40.8-42.1 without).
    assert psnr_on > 37.0 and psnr_on > psnr_off - 3.0, results


def test_band_grows_with_the_image():
    assert band_px(64, 48) == 3 and band_px(512, 320) == 5 and band_px(1280, 720) == 12


# ----------------------------------------------------------------------------- through the pipeline

def _hero_path(W: int, H: int, K: np.ndarray, n: int) -> dict:
    return {"width": W, "height": H, "frames": [{"K": K.tolist(), "w2c": np.eye(4).tolist()}] * n}


@pytest.fixture(scope="module")
def sloppy_runs(tmp_path_factory) -> dict:
    """Clouds drifting over a ridge, the sky mask grown by 2 px over the rock, run at the photo's
    camera with the snap and as painted."""
    folder = tmp_path_factory.mktemp("sloppy")
    rgb, sky = _skyline(seed=2)
    painted = _grow(sky, 2)
    cv2.imwrite(str(folder / "image.png"), np.round(rgb[..., ::-1] * 255).astype(np.uint8))
    cv2.imwrite(str(folder / "mask.png"), painted.astype(np.uint8) * 255)
    np.save(folder / "depth.npy", np.where(sky, 20.0, 4.0).astype(np.float32))  # the ridge well before the sky
    K = np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])
    hints = [{"start": [x, 6.5], "end": [x - 20.0, 6.5], "speed": 0.6} for x in (20.5, 50.5)]
    runs = {}
    for snap in (True, False):
        out = folder / f"out-{snap}"
        job = JobSpec.from_dict({"image": str(folder / "image.png"), "mask": str(folder / "mask.png"), "hints": hints,
                                 "max_side": 64, "quality": "preview", "frames": 8, "device": "cpu",
                                 "camera": {"K": K.tolist(), "width": 64, "height": 48},
                                 "path": _hero_path(64, 48, K, 8), "png_frames": True,
                                 "depth": str(folder / "depth.npy"), "snap_mask": snap})
        result = json.loads(run_job(job, out, NullSink()).read_text())
        frames = np.stack([load_image(p, 64).rgb for p in sorted((out / "frames").glob("*.png"))])
        runs[snap] = (result, frames)
    return {"runs": runs, "true_mask": sky, "painted": painted}


def test_snapped_edge_stays_still_while_the_clouds_move(sloppy_runs):
    true_mask, painted = sloppy_runs["true_mask"], sloppy_runs["painted"]
    band = painted & ~true_mask  # the rock the brush took along: static in the photo
    interior = cv2.erode(true_mask.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    change = {}
    for snap, (result, frames) in sloppy_runs["runs"].items():
        d = np.abs(frames[1:] - frames[:1]).mean(-1)  # (T-1, H, W): how far each frame is from the first
        change[snap] = (float(d[:, band].mean()), float(d[:, interior].mean()))
        assert (result["metrics"]["mask_edge_released_px"] > 0) == snap
    snapped, as_painted = change[True], change[False]
    # the ghost of the ridge drifting with the clouds: at most a quarter of it is left (0.0032 against 0.0178 here;
    # 0.0042 when pixels the moving layer left short of opaque were shown over black; 0.003 against 0.019
    # before the 3D fit drew the moving layer alone: its edge Gaussians now carry the sky's colour)
    assert snapped[0] < 0.25 * as_painted[0]
    # the sky still moves (0.0080 against 0.0093 here)
    assert snapped[1] > 0.8 * as_painted[1] and snapped[1] > 0.005


def test_the_snap_is_on_unless_the_job_turns_it_off(tmp_path):
    from backend.cli import build_parser, job_from_args

    args = ["run", "--out", str(tmp_path / "o"), "--image", str(tmp_path / "photo.png")]
    parse = lambda *a: job_from_args(build_parser().parse_args([*args, *a]))  # noqa: E731
    assert parse().snap_mask is True and JobSpec().snap_mask is True
    assert parse("--no-snap-mask").snap_mask is False
    with pytest.raises(Exception, match="snap_mask"):
        JobSpec.from_dict({"image": "x.png", "snap_mask": "yes"})


def test_the_snapped_motion_keeps_the_mask_as_painted():
    """The depth prior finds its islands in the mask as painted (``depth.stand_islands``)."""
    from backend.io.motion_inputs import MotionInputs
    from backend.stages.depth import fluid_motion
    from backend.stages.load import snap_motion_mask

    rgb, sky = _skyline()
    painted = _grow(sky, 2)
    flow = np.where(painted[..., None], np.float32(0.5), np.float32(0.0)) * np.array([1.0, 0.0], np.float32)
    motion = snap_motion_mask(MotionInputs(mask=painted, flow=flow), rgb, NullSink())
    assert motion.edge_released_px > 0 and not np.array_equal(motion.mask, painted)
    np.testing.assert_array_equal(motion.painted_mask, painted)

    class _Photo:  # what fluid_motion reads of the load stage's photo
        def __init__(self) -> None:
            self.rgb = rgb
            self.camera = Camera(intrinsics_from_fov(64, 48, 60.0), 64, 48)

    cue = fluid_motion(_Photo(), motion)
    np.testing.assert_array_equal(cue.mask, motion.mask)
    np.testing.assert_array_equal(cue.painted, painted)
