"""Evaluation harness: reference metrics, the 3D-photo baseline, and a tiny end-to-end run."""
import csv
import json
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.tools.baseline_3dphoto import render_3dphoto_baseline
from backend.model.camera import Camera, intrinsics_from_fov
from backend.tools.evaluate import COLUMNS, StageLog, hints_from_flow, main, reference_metrics, write_table
from contract.protocol import SETUP

needs_bpy = pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="bpy not installed")


def test_reference_metrics_crop_and_mask():
    rng = np.random.default_rng(0)
    gt = rng.random((3, 48, 64, 3)).astype(np.float32)
    pred = gt.copy()
    mask = np.zeros((48, 64), bool)
    mask[10:30, 10:50] = True
    pred[:, mask] = np.clip(pred[:, mask] + 0.1, 0, 1)  # error only inside the moving region
    m = reference_metrics(pred, gt, mask, lpips=False)
    assert m["m_psnr"] < 21.0 < m["psnr"]
    assert m["m_ssim"] < m["ssim"] <= 1.0
    pred2 = gt.copy()
    pred2[:, :4] = 0  # damage inside the 4-px border (32 px at 512 -> 4 px at 64) only: cropped away
    assert reference_metrics(pred2, gt, None, lpips=False)["psnr"] == float("inf")


def test_hints_sampled_from_a_flow_reproduce_it_when_densified():
    from backend.stages.flows import HintFlowEstimator

    H, W = 48, 64
    mask = np.zeros((H, W), bool)
    mask[:14, :] = True  # sky: drifts right
    mask[26:, 8:56] = True  # water: flows down-left, faster near the bottom
    flow = np.zeros((H, W, 2), np.float32)
    flow[:14, :, 0] = 0.5
    ys = np.arange(H, dtype=np.float32)[:, None]
    flow[26:, :, 0] = -0.3 - 0.02 * (ys[26:] - 26)
    flow[26:, :, 1] = 0.2
    flow *= mask[..., None]
    hints = hints_from_flow(flow, mask)
    assert 8 <= len(hints) <= 18  # a 3 x 3 lattice per component, duplicates dropped
    for h in hints:
        x, y = int(h["start"][0]), int(h["start"][1])
        assert mask[y, x]
        d = np.subtract(h["end"], h["start"])
        assert h["speed"] == pytest.approx(float(np.linalg.norm(flow[y, x])), rel=1e-5)
        assert d @ flow[y, x] / (np.linalg.norm(d) * np.linalg.norm(flow[y, x])) > 0.9999
    pts = np.array([h["start"] for h in hints])
    vel = np.array([np.subtract(h["end"], h["start"]) / np.linalg.norm(np.subtract(h["end"], h["start"])) * h["speed"]
                    for h in hints])
    dense = HintFlowEstimator().estimate(None, mask, pts, vel, np.zeros((0, 2)))
    epe = float(np.linalg.norm(dense[mask] - flow[mask], axis=-1).mean())
    speed = float(np.linalg.norm(flow[mask], axis=-1).mean())
    assert epe < 0.15 * speed, (epe, speed)


def test_video_psnr_is_finite_with_one_exact_frame():
    rng = np.random.default_rng(1)
    gt = rng.random((2, 48, 64, 3)).astype(np.float32)
    pred = gt.copy()
    pred[1] = np.clip(pred[1] + 0.1, 0, 1)  # frame 0 exact, frame 1 off by ~0.1 (MSE ~0.0089)
    p = reference_metrics(pred, gt, None, lpips=False)["psnr"]
    mse1 = float(((pred[1] - gt[1])[4:-4, 4:-4] ** 2).mean())
    assert p == pytest.approx(10 * np.log10(1 / (mse1 / 2)), abs=1e-6)  # from the mean MSE, not inf


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _feed_a_slow_3d_stage(sink: StageLog, clock: _Clock) -> None:
    sink.log("torch uses 1 CPU thread(s)", stage=SETUP)
    for f in (0.0, 0.5, 1.0):  # a quick (or cached) stage: silent
        sink.progress("render", f)
        clock.now += 1.0
    for f in (0.0, 0.05, 0.1, 0.3, 0.55, 0.8, 0.95):
        sink.progress("gaussians3d", f, loss=0.02, gaussians=900)
        if f == 0.3:
            sink.log("densify at step 300: {}", stage="gaussians3d")
        clock.now += 6.0
    sink.progress("gaussians3d", 1.0)
    sink.warning("3D training ended worse than the lifted photo it started from", stage="gaussians3d")


def test_stage_log_reports_slow_stages_by_quarters_and_stays_quiet_otherwise():
    lines: list[str] = []
    clock = _Clock()
    _feed_a_slow_3d_stage(StageLog(lines.append, "syn_000 ours-final hero:", every=0.0, clock=clock), clock)
    assert lines == [  # 5% came 6 s in (too early), 10% at 12 s
        "    syn_000 ours-final hero: gaussians3d 10% (loss 0.02, gaussians 900)",
        "    syn_000 ours-final hero: gaussians3d 30% (loss 0.02, gaussians 900)",
        "    syn_000 ours-final hero: gaussians3d 55% (loss 0.02, gaussians 900)",
        "    syn_000 ours-final hero: gaussians3d 80% (loss 0.02, gaussians 900)",
        "    syn_000 ours-final hero: gaussians3d done in 42 s",
        "    syn_000 ours-final hero: gaussians3d: 3D training ended worse than the lifted photo it started from",
    ]
    lines.clear()  # rate-limited: the first report and the end still show
    clock = _Clock()
    _feed_a_slow_3d_stage(StageLog(lines.append, "p:", every=3600.0, clock=clock), clock)
    assert [line.split(": ", 1)[1] for line in lines[:2]] == ["gaussians3d 10% (loss 0.02, gaussians 900)",
                                                             "gaussians3d done in 42 s"]


def test_write_table_files(tmp_path):
    rows = [{"scene": "a", "variant": "ours", "path": "side", "m_psnr": 20.0, "mf_epe": 0.5},
            {"scene": "b", "variant": "ours", "path": "side", "m_psnr": 22.0, "mf_epe": 0.7}]
    md = write_table(rows, tmp_path, "title")
    assert "| ours | side | 2 | 21.000 | 0.600 |" in md
    assert "| ours | all | 2 | 21.000 | 0.600 |" in md
    assert (tmp_path / "table.csv").read_text().count("\n") == 3
    assert (tmp_path / "plots.png").stat().st_size > 1000


def _camera(w=64, h=48):
    return Camera(intrinsics_from_fov(w, h, 60.0), w, h)


def test_baseline_identity_and_parallax():
    rng = np.random.default_rng(2)
    w, h = 64, 48
    rgb = rng.random((h, w, 3)).astype(np.float32)
    depth = np.full((h, w), 4.0, np.float32)
    depth[:, : w // 2] = 1.0  # left half near, right half far
    flow = np.zeros((h, w, 2), np.float32)
    cam = _camera(w, h)
    still = render_3dphoto_baseline(rgb, depth, cam, flow, [cam, cam], 2)
    assert still.frames.shape == (2, h, w, 3)
    assert np.abs(still.frames[0] - rgb).max() < 1e-5 and still.hole_fraction == 0.0
    # camera 0.1 units to the right: near content shifts by f*0.1/1, far by f*0.1/4 pixels (leftwards)
    moved = Camera(cam.K, w, h, np.array([[1, 0, 0, -0.1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    v = render_3dphoto_baseline(rgb, depth, cam, flow, [moved], 1).frames[0]
    f = cam.K[0, 0]
    for x0, z in ((10, 1.0), (50, 4.0)):
        shift = int(round(f * 0.1 / z))
        assert np.abs(v[10:30, x0 - shift] - rgb[10:30, x0]).max() < 1e-5
    # the 2D loop moves masked content by the flow before warping
    flow[10:40, 36:60] = (1.0, 0.0)
    mask = np.linalg.norm(flow, axis=2) > 0
    anim = render_3dphoto_baseline(rgb, depth, cam, flow, [cam, cam, cam, cam], 4, mask=mask).frames
    assert np.abs(anim[2] - anim[0])[mask].mean() > 0.05
    assert np.abs(anim[2] - anim[0])[~mask].max() < 1e-6


def _scene_folder(root):
    """A real-layout scene (no GT): the demo photo, its mask and a rightward flow in the mask."""
    from backend.tools.demo_scene import make_demo_scene

    s = make_demo_scene(width=96, height=64)
    d = root / "demo"
    d.mkdir(parents=True)
    cv2.imwrite(str(d / "image.png"), (s.rgb[..., ::-1] * 255 + 0.5).astype(np.uint8))
    mask = s.mask.copy()
    mask[: int(0.6 * 64)] = False  # only the lake moves: sky, mountains and shore stay still
    cv2.imwrite(str(d / "mask.png"), mask.astype(np.uint8) * 255)
    flow = np.zeros((2, 64, 96), np.float32)
    flow[0][mask] = 0.8
    np.save(d / "motion.npy", flow)
    return root


def test_end_to_end_real_scene_mode(tmp_path):
    scenes = _scene_folder(tmp_path / "scenes")
    out = tmp_path / "eval"
    assert main(["--scenes", str(scenes), "--max-side", "64", "--frames", "6", "--out", str(out), "--no-lpips"]) == 0
    rows = list(csv.DictReader(open(out / "table.csv")))
    assert {r["variant"] for r in rows} == {"ours-preview", "no-3dmom-preview", "as-painted-preview", "3dphoto-baseline"}
    assert {r["path"] for r in rows} == {"hero"}
    md = (out / "table.md").read_text()
    for k in ("piqe", "mf_cos", "mf_epe", "stillness", "loop_gap_db", "flicker"):
        assert k in md
    ours = next(r for r in rows if r["variant"] == "ours-preview")
    assert float(ours["mf_cos"]) > 0.8  # the video moves the way it was asked to
    assert 0.25 < float(ours["mf_speed"]) < 1.5  # DIS under-reads slow motion on a 64-px image
    assert float(ours["stillness"]) < 0.01  # static terrain stays put
    assert ours["epe_after"] != ""
    assert "psnr" not in rows[0] or rows[0]["psnr"] == ""  # no ground truth: no reference metrics


def test_mask_slop_grows_the_jobs_mask_and_keeps_the_true_one_for_the_metrics(tmp_path, capsys):
    from backend.tools.evaluate import Scene, variants_for

    folder = _scene_folder(tmp_path / "scenes") / "demo"
    before = sorted(p.name for p in folder.iterdir())
    exact = Scene(folder, 64)
    sloppy = Scene(folder, 64, mask_slop=2, inputs_dir=tmp_path / "inputs")
    assert np.array_equal(sloppy.mask, exact.mask)  # the metrics' moving region is the scene's own
    grown = sloppy.input_mask
    assert (grown >= exact.mask).all() and grown.sum() >= exact.mask.sum() + 2 * 64  # two rows more over the shore
    job_mask = Path(sloppy.motion_files()["mask"])
    assert job_mask.parent == tmp_path / "inputs" / "demo" and job_mask.is_file()
    assert sorted(p.name for p in folder.iterdir()) == before  # the scene folder is not written to
    names = {v["name"]: v for v in variants_for(sloppy, "preview", [], baseline=True, ablations=False)}
    assert names["as-painted-preview"]["snap_mask"] is False and "ours-preview" in names
    assert "as-painted-preview" not in {v["name"] for v in variants_for(exact, "preview", [], True, ablations=False)}
    assert main(["--scenes", str(folder.parent), "--mask-slop", "-1", "--out", str(tmp_path / "e")]) == 2
    assert "--mask-slop" in capsys.readouterr().err


@pytest.mark.parametrize("flags, word", [(["--rocks", "9"], "--rocks"), (["--rocks", "-1"], "--rocks"),
                                         (["--qualities", "best"], "best")])
def test_bad_options_are_one_line_and_write_nothing(tmp_path, capsys, flags, word):
    out = tmp_path / "eval"
    assert main(["--synthetic", "1", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and word in err and "\n" not in err
    assert not out.exists()


def test_a_scene_rendered_with_another_boulder_count_is_rendered_again(tmp_path, monkeypatch):
    import backend.tools.synthetic as synthetic
    from backend.infra.errors import LoopscapeError

    scene = tmp_path / "eval" / "scenes" / "syn_000"
    scene.mkdir(parents=True)
    (scene / "scene.json").write_text(json.dumps({"width": 64, "height": 48, "n_frames": 4, "loop_truth": True}))
    calls = []

    def generate(seed, folder, **kw):
        calls.append(kw)
        raise LoopscapeError("rendered", "nothing")  # stop before the pipeline runs

    monkeypatch.setattr(synthetic, "generate_scene", generate)
    assert main(["--synthetic", "1", "--max-side", "64", "--frames", "4", "--rocks", "2",
                 "--out", str(tmp_path / "eval")]) == 2
    assert [c["rocks"] for c in calls] == [2]


def _tiny_synthetic_eval(out, *flags: str) -> list[dict]:
    """One 48-px synthetic scene, 4 frames, the side path; returns table.csv's rows."""
    assert main(["--synthetic", "1", "--max-side", "48", "--frames", "4", "--paths", "side", "--samples", "4",
                 "--out", str(out), "--no-lpips", *flags]) == 0
    return list(csv.DictReader(open(out / "table.csv")))


@needs_bpy
def test_end_to_end_synthetic_reference_metrics(tmp_path):
    rows = _tiny_synthetic_eval(tmp_path / "eval", "--no-baseline")
    assert {(r["variant"], r["path"]) for r in rows} >= {("ours-preview", "side"), ("ours-preview-true-depth", "hero")}
    for r in rows:
        assert 15.0 < float(r["psnr"]) < 60.0 and 10.0 < float(r["m_psnr"]) < 60.0
        assert 0.2 < float(r["ssim"]) <= 1.0
    assert set(COLUMNS[:2]) <= set(rows[0])


@needs_bpy
def test_preset_comparison_without_ablations_writes_the_compare_sheet(tmp_path):
    out = tmp_path / "eval"
    rows = _tiny_synthetic_eval(out, "--no-ablations")
    assert {r["variant"] for r in rows} == {"ours-preview", "3dphoto-baseline"}
    sheet = cv2.imread(str(out / "compare.png"))
    # four tiles (ours, baseline, truth, loop truth) of 48 px at 3x with 4-px gaps, under a title and a label row
    assert sheet.shape[1] == 4 * 48 * 3 + 3 * 4 and sheet.shape[0] == 26 + 22 + 36 * 3
    tile = lambda k: sheet[48:, k * (48 * 3 + 4):k * (48 * 3 + 4) + 48 * 3][1::3, 1::3].astype(float)  # noqa: E731
    gt = cv2.imread(str(out / "scenes" / "syn_000" / "gt" / "side" / "0003.png")).astype(float)
    before = cv2.imread(str(out / "scenes" / "syn_000" / "gt" / "side" / "previous_loop" / "0003.png")).astype(float)
    assert np.abs(tile(2) - gt).mean() < 2.0
    assert np.abs(tile(3) - (0.25 * gt + 0.75 * before)).mean() < 2.0  # frame 3 of a 4-frame loop
    assert np.abs(gt - before).mean() > 3.0  # the two truths differ, so the check above can fail


def _loop_truth_scene(tmp_path, n=4, h=48, w=64):
    """A hand-made GT scene: a still photo, a moving square, the side path's true video (grey level
    10 t) and its previous-loop renders (grey level 200)."""
    d = tmp_path / "scene"
    (d / "gt" / "side" / "previous_loop").mkdir(parents=True)
    cv2.imwrite(str(d / "image.png"), np.full((h, w, 3), 90, np.uint8))
    mask = np.zeros((h, w), np.uint8)
    mask[8:40, 8:56] = 255
    cv2.imwrite(str(d / "mask.png"), mask)
    np.save(d / "motion.npy", np.zeros((1, 2, h, w), np.float32))
    (d / "camera.json").write_text(json.dumps({"K": intrinsics_from_fov(w, h, 50.0).tolist(), "width": w, "height": h}))
    (d / "gt" / "side" / "path.json").write_text(json.dumps(
        {"width": w, "height": h, "frames": [{"K": intrinsics_from_fov(w, h, 50.0).tolist(), "w2c": np.eye(4).tolist()}] * n}))
    for t in range(n):
        cv2.imwrite(str(d / "gt" / "side" / f"{t:04d}.png"), np.full((h, w, 3), 10 * t, np.uint8))
        if t:
            cv2.imwrite(str(d / "gt" / "side" / "previous_loop" / f"{t:04d}.png"), np.full((h, w, 3), 200, np.uint8))
    return d


def test_loop_truth_blends_the_true_video_into_the_previous_loop(tmp_path):
    from backend.tools.evaluate import Scene, score_video

    scene = Scene(_loop_truth_scene(tmp_path), 64)
    truth = scene.loop_truth_frames("side")
    assert truth.shape == (4, 48, 64, 3)
    for t in range(4):  # (1 - t/N) T(t) + (t/N) T(t - N), N = 4
        assert np.allclose(truth[t], ((1 - t / 4) * 10 * t + t / 4 * 200) / 255, atol=1e-6)
    # a video equal to the loop truth scores perfectly against it and not against the plain truth
    s = score_video(truth, scene, "side", lpips=False)
    assert s["lm_psnr"] == float("inf") and s["m_psnr"] < 20.0
    assert {"lm_psnr", "lm_ssim"} <= set(s) and "lpsnr" not in s
    # scenes generated before the loop truth score as before
    import shutil
    shutil.rmtree(scene.folder / "gt" / "side" / "previous_loop")
    assert scene.loop_truth_frames("side") is None and "lm_psnr" not in score_video(truth, scene, "side", lpips=False)
