"""Evaluation harness: ``python -m backend.tools.evaluate``.

* ``--synthetic N``: generate N Blender ground-truth scenes (backend.tools.synthetic), run every variant
  along the fixed hero camera and the four evaluation paths, and score each video against the
  true one: PSNR / SSIM / LPIPS, whole and masked (the moving region, warped into each view by
  the true depth), after the paper's 32-px border crop (scaled to the image size); the masked
  ones again against the loop truth (``lm_*``: the true video cross-faded into the same camera's
  video one loop earlier, as every seamless loop must, so the second copy's texture is not
  counted as error; ``Scene.loop_truth_frames``); plus PIQE,
  the 3D-MOM consistency EPE and, on the hero camera, motion fidelity against the true flow,
  stillness, loop closure and flicker.
* ``--scenes DIR``: real scenes (image.png + mask.png + motion.npy or labelme.json): no-reference
  metrics only (PIQE, motion fidelity against the requested flow, stillness, loop, flicker, EPE).
* ``--results DIR...``: score existing pipeline output folders (``--gt SCENE`` adds references).
* ``--motion hints``: drive scenes that have a dense flow by arrows sampled from it
  (:func:`hints_from_flow`), as an artist would; motion fidelity is still scored against the truth.
* ``--rocks K``: stand K still boulders in each synthetic scene (``backend.tools.synthetic``), in
  front of the water and the banks, so that the paths' moves uncover scenery and water behind them
  (the plain scenes open no hole inside the frame). A scene folder made with another count is
  rendered again.
* ``--mask-slop PX``: give the jobs each mask grown by PX pixels, as a brush that strays over the
  edge paints it (with ``--motion hints``, so the grown band moves); the metrics keep the true
  mask, and the ``as-painted`` variant runs without the mask's edge snap (``model/mask_edges``).

Variants: ``ours`` (the --quality preset), ``ours-true-depth`` (GT scenes), ``no-3dmom`` (no
multi-view fit: the input view's flow lifted onto the surface), ``as-painted`` (no edge snap of
the mask, ``model/mask_edges``), ``3dphoto`` (2D cinemagraph
warped by depth, backend.tools.baseline_3dphoto), and ``--qualities draft,final`` adds slower presets
(opt-in: they do not fit the 15-minute run). ``--no-ablations`` leaves out the true-depth and
no-3dmom variants (and as-painted, unless ``--mask-slop``), for preset comparisons where only
the presets and the baseline matter.

Time alignment: the GT video frame k is path pose k at scene time k; the pipeline's frame i uses
path camera i at loop time i mod N with N = job frames = GT frames, so frame k matches frame k.
Writes ``table.md``, ``table.csv``, ``plots.png`` and, on GT scenes, ``compare.png`` (the last
frame of the side path for every variant next to the truth and the loop truth, first scene) into ``--out``, and
prints the table.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from backend.io.atomic import atomic_write_text
from backend.model.camera import DEFAULT_FOV_DEG, Camera, intrinsics_from_fov
from backend.infra.errors import LoopscapeError
from backend.infra.events import EventSink, NullSink
from backend.tools.metrics import image as IM
from backend.tools.metrics import motion as MO
from backend.tools.metrics.piqe import piqe
from contract.camera import PATH_PRESETS
from contract.protocol import RESULT_NAME, SETUP
from contract.quality import QUALITIES

PATHS = PATH_PRESETS
HERO = "hero"
REF_KEYS = ("psnr", "ssim", "lpips", "m_psnr", "m_ssim", "m_lpips")
LOOP_KEYS = ("lm_psnr", "lm_ssim", "lm_lpips")  # masked, against the loop truth (Scene.loop_truth_frames)
COLUMNS = REF_KEYS + LOOP_KEYS + ("piqe", "epe_before", "epe_after", "mf_cos", "mf_epe", "mf_speed", "stillness",
                      "loop_gap_db", "flicker", "seconds")
HIGHER_IS_BETTER = {"psnr", "ssim", "m_psnr", "m_ssim", "lm_psnr", "lm_ssim", "mf_cos"}
COMPARE_PATH = "side"  # compare.png shows this path's last frame: the farthest from the photo
MAX_ROCKS = 8  # boulders a synthetic scene can stand; more crowd the hero view


# ----------------------------------------------------------------------------- reading

def read_frames(folder: Path) -> np.ndarray:
    """``NNNN.png`` frames of a folder as (T, H, W, 3) float32 RGB in [0, 1]."""
    files = sorted(p for p in Path(folder).glob("*.png") if p.stem.isdigit())
    if not files:
        raise LoopscapeError(f"no NNNN.png frames in {folder}.", "Run the pipeline with png_frames: true.")
    return np.stack([cv2.imread(str(f))[:, :, ::-1].astype(np.float32) / 255.0 for f in files])


def read_video(result_dir: Path) -> np.ndarray:
    """A result folder's frames: frames/NNNN.png when written, else decoded from video.mp4."""
    if (result_dir / "frames").is_dir():
        return read_frames(result_dir / "frames")
    cap = cv2.VideoCapture(str(result_dir / "video.mp4"))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f[:, :, ::-1].astype(np.float32) / 255.0)
    cap.release()
    if not frames:
        raise LoopscapeError(f"no frames in {result_dir} (neither frames/ nor a readable video.mp4).",
                             "Point --results at a finished pipeline output folder.")
    return np.stack(frames)


HINT_GRID = 3  # arrows per mask component: about this many per side of its bounding box
HINT_LENGTH_PX = 6.0  # drawn arrow length; the speed is given explicitly


def hints_from_flow(flow: np.ndarray, mask: np.ndarray, grid: int = HINT_GRID) -> list[dict]:
    """Arrows an artist might draw: on a grid x grid lattice over each mask component, the mask
    pixel nearest each lattice point gets an arrow along the flow there, with its speed."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8))
    hints = []
    for c in range(1, n):
        ys, xs = np.nonzero(labels == c)
        if len(xs) < 20:
            continue
        for gy in (np.arange(grid) + 0.5) / grid:
            for gx in (np.arange(grid) + 0.5) / grid:
                tx, ty = xs.min() + gx * (xs.max() - xs.min()), ys.min() + gy * (ys.max() - ys.min())
                k = int(np.argmin((xs - tx) ** 2 + (ys - ty) ** 2))
                x, y = int(xs[k]), int(ys[k])
                v = flow[y, x]
                speed = float(np.linalg.norm(v))
                if speed < 1e-4:
                    continue
                start = [x + 0.5, y + 0.5]
                end = [start[0] + HINT_LENGTH_PX * float(v[0]) / speed, start[1] + HINT_LENGTH_PX * float(v[1]) / speed]
                hints.append({"start": start, "end": end, "speed": speed})
    # a lattice point can map to the same pixel twice near thin components
    unique = {tuple(h["start"]): h for h in hints}
    return list(unique.values())


class Scene:
    """A scene folder: image.png, mask.png, motion.npy or labelme.json; GT scenes add camera.json,
    depth.npy and gt/<path>/ (see backend.tools.synthetic.scene)."""

    def __init__(self, folder: Path, max_side: int, motion: str = "flow", mask_slop: int = 0,
                 inputs_dir: Path | None = None) -> None:
        from backend.io.image import load_image

        if motion not in ("flow", "hints"):
            raise LoopscapeError(f"unknown motion source '{motion}'.", "Use --motion flow or --motion hints.")
        self.folder = Path(folder)
        self.name = self.folder.name
        self.max_side = max_side
        self.motion = motion
        # mask_slop > 0: the job gets the mask grown by that many working pixels, as a brush that
        # strays over the edge paints it (written under inputs_dir); the metrics keep the true mask.
        self.mask_slop = int(mask_slop) if (self.folder / "mask.png").exists() else 0
        self.inputs_dir = Path(inputs_dir) if inputs_dir is not None else self.folder
        self._sloppy_mask: Path | None = None  # written once, on first use
        self._true_mask: np.ndarray | None = None
        img = load_image(self.folder / "image.png", max_side)
        self.rgb = img.rgb.astype(np.float32)
        self.original_size = img.original_size
        self.W, self.H = img.size
        cam_file = self.folder / "camera.json"
        self.camera_job = json.loads(cam_file.read_text()) if cam_file.exists() else None
        if self.camera_job is not None:
            c = self.camera_job
            self.camera = Camera(np.array(c["K"], float), int(c["width"]), int(c["height"])).scaled(self.W, self.H)
        else:  # the pipeline's default field of view, made explicit so the hero path can share its K
            self.camera = Camera(intrinsics_from_fov(self.W, self.H, DEFAULT_FOV_DEG), self.W, self.H)
            self.camera_job = {"K": self.camera.K.tolist(), "width": self.W, "height": self.H}
        self.has_gt = (self.folder / "gt").is_dir()
        self.true_depth = self.folder / "depth.npy" if (self.folder / "depth.npy").exists() else None
        self._inputs = None

    def motion_files(self) -> dict:
        """The job's motion entries: the scene's files, or with ``motion="hints"`` the mask plus
        arrows sampled from its dense flow (how an artist drives the product)."""
        f = {}
        for key, name in (("mask", "mask.png"), ("flow", "motion.npy"), ("labelme", "labelme.json")):
            if (self.folder / name).exists():
                f[key] = str((self.folder / name).resolve())
        if self.motion == "hints" and "flow" in f:
            own = self._own_motion(self.original_size)
            f.pop("flow")
            f["hints"] = hints_from_flow(own.flow, own.mask)  # in the photo's own pixels, as job hints are
        if self.mask_slop:
            if self._sloppy_mask is None:
                self._sloppy_mask = self._write_sloppy_mask().resolve()
            f["mask"] = str(self._sloppy_mask)
        return f

    def _write_sloppy_mask(self) -> Path:
        """The scene's mask grown by ``mask_slop`` working pixels (a disc), at the mask file's size."""
        from backend.io.atomic import atomic_path

        m = cv2.imread(str(self.folder / "mask.png"), cv2.IMREAD_GRAYSCALE) > 127
        r = max(1, round(self.mask_slop * max(m.shape) / max(self.W, self.H)))
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        out = self.inputs_dir / self.name / f"mask_slop{self.mask_slop}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            cv2.imwrite(str(tmp), cv2.dilate(m.astype(np.uint8), disc) * 255)
        return out

    def _own_motion(self, size: tuple[int, int]):
        """The scene's mask and dense flow (its own files, whatever drives the job) at ``size`` (W, H)."""
        from backend.io.motion_inputs import load_motion_inputs

        return load_motion_inputs(size, self.original_size, mask_path=str(self.folder / "mask.png"),
                                  flow_path=str(self.folder / "motion.npy"), events=NullSink())

    def inputs(self):
        """The motion inputs at the working size, as the pipeline loads them."""
        if self._inputs is None:
            from backend.io.motion_inputs import load_motion_inputs

            f = self.motion_files()
            self._inputs = load_motion_inputs((self.W, self.H), self.original_size, mask_path=f.get("mask"),
                                              labelme_path=f.get("labelme"), flow_path=f.get("flow"),
                                              hints=f.get("hints", ()), events=NullSink())
        return self._inputs

    @property
    def mask(self) -> np.ndarray:
        """The moving region the metrics use: the scene's own, however the job's mask was painted."""
        if self.mask_slop:
            if self._true_mask is None:
                from backend.io.motion_inputs import load_mask

                self._true_mask = load_mask(self.folder / "mask.png", self.W, self.H)
            return self._true_mask
        return self.inputs().mask

    @property
    def input_mask(self) -> np.ndarray:
        """The mask the job is given (``mask`` grown by ``mask_slop``)."""
        return self.inputs().mask

    def true_flow(self) -> np.ndarray:
        """The scene's own dense flow at the working size (the truth on GT scenes), whatever drives the job."""
        if self.motion == "flow" or not (self.folder / "motion.npy").exists():
            return self.requested_flow()
        return self._own_motion((self.W, self.H)).flow

    def requested_flow(self) -> np.ndarray:
        """The dense flow the pipeline is asked for (px/frame at the working size)."""
        from backend.stages.flows import input_view_flow

        return input_view_flow(self.inputs(), self.rgb)

    def path(self, name: str, n_frames: int) -> dict:
        """An inline path: the GT scene's path.json, or the fixed hero camera."""
        if self.has_gt and (self.folder / "gt" / name / "path.json").exists():
            return json.loads((self.folder / "gt" / name / "path.json").read_text())
        if name != HERO:
            raise LoopscapeError(f"scene {self.name} has no ground-truth path '{name}'.", "Regenerate the synthetic scene.")
        return {"width": self.W, "height": self.H, "frames": [{"K": self.camera.K.tolist(), "w2c": np.eye(4).tolist()}] * n_frames}

    def path_cameras(self, name: str, n_frames: int) -> list[Camera]:
        from backend.model.camera_paths import load_path_json

        return load_path_json(self.path(name, n_frames), self.W, self.H)

    def gt_frames(self, name: str) -> np.ndarray | None:
        d = self.folder / "gt" / name
        if not d.is_dir():
            return None
        fr = read_frames(d)
        if fr.shape[1:3] != (self.H, self.W):
            fr = np.stack([cv2.resize(f, (self.W, self.H), interpolation=cv2.INTER_AREA) for f in fr])
        return fr

    def loop_truth_frames(self, name: str, now: np.ndarray | None = None) -> np.ndarray | None:
        """The loop truth of a path (``backend.tools.synthetic.scene``): frame t of its true video
        blended with the same camera's render one loop earlier, (1 - t/N) T(t) + (t/N) T(t - N), N
        the video's length; None for scenes generated without those renders. ``now``: the true
        video when the caller has read it already."""
        from backend.tools.synthetic.scene import PREVIOUS_LOOP

        now = self.gt_frames(name) if now is None else now
        before = self.gt_frames(f"{name}/{PREVIOUS_LOOP}")
        if now is None or before is None or len(before) != len(now) - 1:
            return None
        n = len(now)
        w = (np.arange(1, n, dtype=np.float32) / n)[:, None, None, None]
        return np.concatenate([now[:1], (1.0 - w) * now[1:] + w * before])

    def view_masks(self, name: str, n_frames: int) -> list[np.ndarray]:
        """The moving region seen from each camera of a path: the hero mask lifted by the true
        depth and splatted into the view (the hero path keeps the mask as it is)."""
        if name == HERO or self.true_depth is None:
            return [self.mask] * n_frames
        from backend.stages.lift import lift_to_points
        from backend.stages.multiview import render_view

        depth = np.load(self.true_depth).astype(np.float32)
        if depth.shape != (self.H, self.W):
            depth = cv2.resize(depth, (self.W, self.H), interpolation=cv2.INTER_NEAREST)
        m3 = np.repeat(self.mask[..., None].astype(np.float32), 3, axis=2)
        pts = lift_to_points(m3, depth, self.camera)
        return [render_view(pts.xyz, pts.rgb, c, pts.pixel_size, fill=True)[0][..., 0] > 0.5
                for c in self.path_cameras(name, n_frames)]


# ----------------------------------------------------------------------------- metrics

def reference_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | list | None, lpips: bool = True,
                      whole: bool = True) -> dict[str, float]:
    """PSNR / SSIM / LPIPS (whole and masked) after the scaled 32-px border crop: SSIM and LPIPS are
    means over frames, PSNR is the video's (from the mean MSE over frames).

    ``mask`` is one (H, W) mask for all frames or a list with one per frame; ``whole=False`` leaves
    the whole-image metrics out.
    """
    from backend.tools.metrics.lpips import lpips_distance, weights_path

    h, w = gt.shape[1:3]
    b = IM.border_for(w, h)
    use_lpips = lpips and weights_path("alex") is not None
    rows = []
    for i, (p, g) in enumerate(zip(pred, gt)):
        m = mask[i] if isinstance(mask, list) else mask
        pc, gc = IM.crop_border(p, b), IM.crop_border(g, b)
        mc = IM.crop_border(m, b) if m is not None else None
        r = {"psnr": IM.psnr(pc, gc), "ssim": IM.ssim(pc, gc)} if whole else {}
        if mc is not None:
            r.update({"m_psnr": IM.psnr(pc, gc, mc), "m_ssim": IM.ssim(pc, gc, mc)})
        if use_lpips:
            if whole:
                r["lpips"] = lpips_distance(pc, gc)
            if mc is not None:
                r["m_lpips"] = lpips_distance(pc, gc, mask=mc)
        rows.append(r)
    out = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
    for k in ("psnr", "m_psnr"):  # video PSNR: from the MSE over all frames, so one exact frame
        if k in rows[0]:          # (e.g. frame 0 seen from the input camera) does not make it inf
            mse = [10.0 ** (-r[k] / 10.0) for r in rows if not math.isnan(r[k])]
            out[k] = 10.0 * math.log10(1.0 / np.mean(mse)) if mse and np.mean(mse) > 0 else float("inf")
    return out


def hero_metrics(frames: np.ndarray, mask: np.ndarray, target_flow: np.ndarray | None) -> dict[str, float]:
    """Fixed-camera loop metrics: motion fidelity, stillness, loop closure (gap in dB)."""
    v = MO.video_metrics(frames, mask, target_flow)
    out = {"stillness": v["stillness"], "loop_gap_db": v["loop_gap_db"]}
    if "motion_cos" in v:
        out.update({"mf_cos": v["motion_cos"], "mf_epe": v["motion_epe"], "mf_speed": v["motion_speed_ratio"]})
    return out


def score_video(frames: np.ndarray, scene: Scene | None, path_name: str, result: dict | None = None,
                lpips: bool = True) -> dict[str, float]:
    """Every metric that applies to one video of ``path_name`` (GT ones when the scene has GT)."""
    out: dict[str, float] = {"piqe": float(np.mean([piqe(f) for f in frames])),
                             "flicker": MO.flicker(frames)}
    if result is not None:
        m = result.get("metrics", {})
        for src, dst in (("consistency_epe_before", "epe_before"), ("consistency_epe_after", "epe_after")):
            if isinstance(m.get(src), (int, float)):
                out[dst] = float(m[src])
    if scene is None:
        return out
    n = len(frames)
    if path_name == HERO:
        out.update(hero_metrics(frames, scene.mask, scene.true_flow() if scene.has_gt else scene.requested_flow()))
    gt = scene.gt_frames(path_name) if scene.has_gt else None
    if gt is not None:
        k = min(len(gt), n)
        masks = scene.view_masks(path_name, n)[:k]
        out.update(reference_metrics(frames[:k], gt[:k], masks, lpips=lpips))
        loop_truth = scene.loop_truth_frames(path_name, gt)
        if loop_truth is not None:
            lm = reference_metrics(frames[:k], loop_truth[:k], masks, lpips=lpips, whole=False)
            out.update({"l" + key: v for key, v in lm.items()})  # m_psnr -> lm_psnr
    return out


# ----------------------------------------------------------------------------- running

def base_job(scene: Scene, n_frames: int, quality: str) -> dict:
    job = {"image": str((scene.folder / "image.png").resolve()), "camera": scene.camera_job, "frames": n_frames,
           "max_side": scene.max_side, "png_frames": True, "quality": quality, "device": "cpu", "seed": 0}
    job.update(scene.motion_files())
    return job


class StageLog(NullSink):
    """The pipeline's events as occasional lines through ``log``: the progress of a stage that has
    worked for ``slow`` seconds (then each further quarter, at most one line per ``every``
    seconds), the end of such a stage, its log lines and its warnings. Quick and cached stages stay
    silent. A `final` evaluation trains for many minutes per scene on a CPU; without this it is silent until the table."""

    def __init__(self, log: Callable[[str], None], prefix: str, every: float = 30.0, slow: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.log_line, self.prefix, self.every, self.slow, self.clock = log, prefix, every, slow, clock
        self._start: dict[str, float] = {}
        self._quarter: dict[str, int] = {}
        self._last = -float("inf")
        self.listeners.append(self._on_event)

    def _on_event(self, rec: dict) -> None:
        kind, stage = rec["event"], rec.get("stage", "")
        if kind == "progress":
            self._progress(stage, float(rec["fraction"]), rec)
        elif kind == "warning" or (kind == "log" and stage != SETUP and not str(rec.get("message", "")).startswith("densify")):
            self._say(f"{stage + ': ' if stage else ''}{rec.get('message', '')}")

    def _progress(self, stage: str, fraction: float, rec: dict) -> None:
        now = self.clock()
        start = self._start.setdefault(stage, now)
        if fraction >= 1.0:
            if now - start >= self.slow:
                self._say(f"{stage} done in {now - start:.0f} s")
            del self._start[stage]
            self._quarter.pop(stage, None)
            return
        q = int(fraction * 4)
        if now - start < self.slow or (stage in self._quarter and (q <= self._quarter[stage] or now - self._last < self.every)):
            return
        self._quarter[stage], self._last = q, now
        extra = ", ".join(f"{k} {rec[k]}" for k in ("loss", "gaussians") if k in rec)
        self._say(f"{stage} {100 * fraction:.0f}%" + (f" ({extra})" if extra else ""))

    def _say(self, text: str) -> None:
        self.log_line(f"    {self.prefix} {text}")


def run_ours(scene: Scene, variant: dict, paths: list[str], n_frames: int, work: Path,
             device: str = "cpu", log: Callable[[str], None] | None = None) -> dict[str, tuple[np.ndarray, dict]]:
    """Run one pipeline variant along every path; the out dir is shared per scene and depth source
    so that depth, views, 3D Gaussians and 3D-MOM come from the stage cache after the first path.
    ``log`` (a line printer) shows the stages' progress (``StageLog``); None runs silently."""
    from backend.job import JobSpec
    from backend.pipeline import run_job

    job = base_job(scene, n_frames, variant.get("quality", "preview"))
    job["device"] = device
    job["mom3d"] = variant.get("mom3d", True)
    job["snap_mask"] = variant.get("snap_mask", True)
    if variant.get("true_depth"):
        job["depth"] = str(scene.true_depth.resolve())
    run_dir = work / scene.name / (("true-depth" if variant.get("true_depth") else "auto-depth")
                                   + ("-hints" if scene.motion == "hints" else "")
                                   + (f"-slop{scene.mask_slop}" if scene.mask_slop else "")
                                   + ("-as-painted" if not job["snap_mask"] else ""))
    out = {}
    for name in paths:
        spec = JobSpec.from_dict(dict(job, path=scene.path(name, n_frames)), base_dir=scene.folder)
        t0 = time.time()
        events: EventSink = NullSink() if log is None else StageLog(log, f"{scene.name} {variant.get('name', '')} {name}:")
        res_path = run_job(spec, run_dir, events)
        res = json.loads(Path(res_path).read_text())
        res["wall_seconds"] = time.time() - t0
        out[name] = (read_frames(run_dir / "frames"), res)
    return out


def run_baseline(scene: Scene, paths: list[str], n_frames: int) -> dict[str, tuple[np.ndarray, dict]]:
    """The 3D-photo + 2D-cinemagraph baseline with the pipeline's own depth estimate (motion included)."""
    from backend.tools.baseline_3dphoto import render_3dphoto_baseline
    from backend.stages.depth import DepthSpec, FluidMotion, estimate_depth

    t0 = time.time()
    flow = scene.requested_flow()
    depth = estimate_depth(scene.rgb, DepthSpec(source="auto", device="cpu"), NullSink(),
                           motion=FluidMotion(flow, scene.mask, scene.camera.K)).depth
    out = {}
    for name in paths:
        t1 = time.time()
        video = render_3dphoto_baseline(scene.rgb, depth, scene.camera, flow, scene.path_cameras(name, n_frames),
                                        n_frames, mask=scene.input_mask)
        frames = np.round(video.frames * 255) / 255  # quantised like the pipeline's PNG frames
        out[name] = (frames, {"wall_seconds": time.time() - t1 + (time.time() - t0 if not out else 0.0)})
    return out


def variants_for(scene: Scene, quality: str, extra_qualities: list[str], baseline: bool,
                 ablations: bool = True) -> list[dict]:
    vs = [{"name": f"ours-{quality}", "quality": quality}]
    if ablations and scene.has_gt and scene.true_depth is not None:
        vs.append({"name": f"ours-{quality}-true-depth", "quality": quality, "true_depth": True})
    if ablations:
        vs.append({"name": f"no-3dmom-{quality}", "quality": quality, "mom3d": False})
    if ablations or scene.mask_slop:  # the mask's edge snap: the same job without it
        vs.append({"name": f"as-painted-{quality}", "quality": quality, "snap_mask": False})
    if baseline:
        vs.append({"name": "3dphoto-baseline", "baseline": True})
    vs += [{"name": f"ours-{q}", "quality": q} for q in extra_qualities if q != quality]
    return vs


def evaluate_scene(scene: Scene, paths: list[str], n_frames: int, quality: str, work: Path, extra_qualities: list[str],
                   baseline: bool = True, lpips: bool = True, log=print, ablations: bool = True,
                   compare: dict[str, np.ndarray] | None = None, device: str = "cpu") -> list[dict]:
    """Score every variant along every path; ``compare`` collects the last COMPARE_PATH frame per variant."""
    rows = []
    for var in variants_for(scene, quality, extra_qualities, baseline, ablations):
        t0 = time.time()
        videos = (run_baseline(scene, paths, n_frames) if var.get("baseline")
                  else run_ours(scene, var, paths, n_frames, work, device, log=log))
        if compare is not None and COMPARE_PATH in videos:
            compare[var["name"]] = videos[COMPARE_PATH][0][-1]
        for name, (frames, res) in videos.items():
            row = {"scene": scene.name, "variant": var["name"], "path": name,
                   **score_video(frames, scene, name, res if not var.get("baseline") else None, lpips=lpips)}
            row["seconds"] = float(res.get("wall_seconds", math.nan))
            rows.append(row)
        log(f"  {scene.name} {var['name']}: {time.time() - t0:.0f} s")
    return rows


def score_results(dirs: list[str], gt: str | None, max_side: int) -> list[dict]:
    """Rows for existing result folders; the path is read from the job (a GT path or the hero)."""
    rows = []
    for d in dirs:
        d = Path(d)
        if not (d / RESULT_NAME).exists():
            raise LoopscapeError(f"{d} has no result.json.", "Pass the output folder of a finished pipeline run.")
        res = json.loads((d / RESULT_NAME).read_text())
        frames = read_video(d)
        scene = None
        src = Path(gt) if gt else Path(res.get("job", {}).get("image", "")).parent
        if (src / "image.png").exists():
            scene = Scene(src, max(frames.shape[1:3]))
        path_name = _match_path(scene, res, len(frames)) if scene is not None else "-"
        row = {"scene": scene.name if scene else "-", "variant": d.name, "path": path_name,
               **score_video(frames, scene if path_name != "-" else None, path_name, res)}
        row["seconds"] = float(sum(res.get("timings", {}).values()))
        rows.append(row)
    return rows


def _match_path(scene: Scene, res: dict, n: int) -> str:
    """Which of the scene's paths a result was rendered along (by its job's path), else '-'."""
    p = res.get("job", {}).get("path")
    if isinstance(p, dict):
        w2c = [np.asarray(f["w2c"]) for f in p.get("frames", [])]
        if w2c and all(np.allclose(w, np.eye(4)) for w in w2c):
            return HERO
        for name in PATHS:
            try:
                ref = scene.path(name, n)
            except LoopscapeError:
                continue
            if len(ref["frames"]) == len(w2c) and all(np.allclose(np.asarray(f["w2c"]), w) for f, w in zip(ref["frames"], w2c)):
                return name
    return "-"


# ----------------------------------------------------------------------------- reporting

def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    if abs(x) < 0.1:  # LPIPS, EPE: presets differ in the fourth decimal
        return f"{x:.4f}"
    return f"{x:.3f}" if abs(x) < 100 else f"{x:.1f}"


def write_table(rows: list[dict], out: Path, title: str = "") -> str:
    """table.csv (every row), table.md (mean over scenes per variant and path, then per variant) and plots.png."""
    keys = ["scene", "variant", "path"] + [k for k in COLUMNS if any(k in r for r in rows)]
    keys += sorted({k for r in rows for k in r} - set(keys))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "table.csv", buf.getvalue())
    mkeys = keys[3:]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["path"]), []).append(r)
    for r in rows:
        groups.setdefault((r["variant"], "all"), []).append(r)
    order = {v: i for i, v in enumerate(dict.fromkeys(r["variant"] for r in rows))}
    porder = {p: i for i, p in enumerate([HERO, *PATHS, "-", "all"])}
    lines = [title, ""] if title else []
    n_scenes = len({r["scene"] for r in rows})
    lines.append(f"Mean over {n_scenes} scene(s); `-` = not applicable. Higher is better for "
                 f"{', '.join(sorted(HIGHER_IS_BETTER))}; lower for the rest (loop_gap_db: ~0 = seamless).")
    lines.append("")
    lines += ["| variant | path | n | " + " | ".join(mkeys) + " |", "|" + "---|" * (len(mkeys) + 3)]
    for (v, p), rs in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], porder.get(kv[0][1], 9))):
        vals = []
        for k in mkeys:
            xs = [r[k] for r in rs if isinstance(r.get(k), (int, float)) and not math.isnan(r[k])]
            vals.append(_fmt(float(np.mean(xs))) if xs else "-")
        lines.append(f"| {v} | {p} | {len(rs)} | " + " | ".join(vals) + " |")
    md = "\n".join(lines) + "\n"
    atomic_write_text(out / "table.md", md)
    _plot(rows, out)
    return md


def write_compare(tiles: dict[str, np.ndarray], out: Path, title: str) -> None:
    """compare.png: one frame per variant and the truth side by side, each labelled, at 3x."""
    from backend.io.image import save_png
    from backend.io.video import to_uint8

    scale = 3
    strips = []
    for name, img in tiles.items():
        t = cv2.resize(to_uint8(img), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        label = np.full((22, t.shape[1], 3), 24, np.uint8)
        cv2.putText(label, name, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (235, 235, 235), 1, cv2.LINE_AA)
        strips.append(np.vstack([label, t]))
    gap = np.full((strips[0].shape[0], 4, 3), 255, np.uint8)
    body = np.hstack([x for s in strips for x in (s, gap)][:-1])
    head = np.full((26, body.shape[1], 3), 255, np.uint8)
    cv2.putText(head, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    save_png(out / "compare.png", np.vstack([head, body]))


def _plot(rows: list[dict], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(r["variant"] for r in rows))
    panels = [k for k in ("m_psnr", "m_lpips", "lm_psnr", "lm_lpips", "mf_epe", "mf_cos", "piqe", "stillness") if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(3.2 * max(1, len(panels)), 3.6), squeeze=False)
    for ax, key in zip(axes[0], panels):
        vals = []
        for v in variants:
            xs = [r[key] for r in rows if r["variant"] == v and isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
            vals.append(float(np.mean(xs)) if xs else 0.0)
        ax.bar(range(len(variants)), vals, color="tab:blue")
        ax.set_xticks(range(len(variants)), variants, rotation=35, ha="right", fontsize=7)
        ax.set_title(key + (" (higher better)" if key in HIGHER_IS_BETTER else " (lower better)"), fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    from backend.io.atomic import atomic_write_bytes
    atomic_write_bytes(out / "plots.png", buf.getvalue())


# ----------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backend.tools.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--synthetic", type=int, default=0, help="generate and evaluate N synthetic GT scenes")
    ap.add_argument("--scenes", help="folder of real scenes (no-reference metrics)")
    ap.add_argument("--results", nargs="*", default=[], help="existing result folders to score")
    ap.add_argument("--gt", help="scene folder with ground truth for --results")
    ap.add_argument("--max-side", type=int, default=128)
    ap.add_argument("--quality", default="preview", choices=QUALITIES)
    ap.add_argument("--qualities", default="", help="extra presets to compare, e.g. draft,final (slow; opt-in)")
    ap.add_argument("--frames", type=int, default=10, help="frames per evaluation video (= loop length)")
    ap.add_argument("--paths", default=",".join(PATHS), help="novel-view paths for GT scenes")
    ap.add_argument("--samples", type=int, default=16, help="Cycles samples for synthetic scenes")
    ap.add_argument("--rocks", type=int, default=0, metavar="K",
                    help=f"stand K still boulders (0-{MAX_ROCKS}) in each synthetic scene: disocclusions inside the frame")
    ap.add_argument("--motion", default="flow", choices=("flow", "hints"),
                    help="drive scenes with a dense flow by their dense flow (default) or by arrows sampled from it")
    ap.add_argument("--mask-slop", type=int, default=0, metavar="PX",
                    help="give the jobs each scene's mask grown by PX working pixels (a brush over the edge) "
                         "and add the as-painted variant (no edge snap); use with --motion hints")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-ablations", action="store_true", help="leave out the true-depth and no-3dmom variants")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                    help="where our pipeline runs (the baseline and the metrics stay on the CPU)")
    ap.add_argument("--no-lpips", action="store_true")
    ap.add_argument("--out", default="eval_out")
    args = ap.parse_args(argv)
    out = Path(args.out)
    extra = [q for q in args.qualities.split(",") if q]
    if args.mask_slop < 0:
        print(f"error: --mask-slop must be 0 or more pixels, not {args.mask_slop}", file=sys.stderr)
        return 2
    if not 0 <= args.rocks <= MAX_ROCKS:
        print(f"error: --rocks takes 0 to {MAX_ROCKS} boulders per scene, not {args.rocks}", file=sys.stderr)
        return 2
    for q in extra:
        if q not in ("preview", "draft", "final"):
            print(f"error: unknown quality '{q}' in --qualities (use preview, draft, final)", file=sys.stderr)
            return 2
    out.mkdir(parents=True, exist_ok=True)  # after the checks: a refused call leaves nothing behind
    from backend.tools.metrics.lpips import weights_path
    lpips = not args.no_lpips
    if lpips and weights_path("alex") is None:
        print("note: LPIPS weights missing (python -m backend.tools.metrics.lpips --fetch): LPIPS columns left out", file=sys.stderr)
    rows: list[dict] = []
    t0 = time.time()
    log = lambda s: print(f"[{time.time() - t0:5.0f} s] {s}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        rows += score_results(args.results, args.gt, args.max_side)
        scenes: list[Path] = []
        if args.synthetic:
            from backend.tools.synthetic import generate_scene
            for s in range(args.synthetic):
                d = out / "scenes" / f"syn_{s:03d}"
                info = json.loads((d / "scene.json").read_text()) if (d / "scene.json").exists() else None
                want = (args.max_side, args.max_side * 3 // 4, args.frames)
                if (info is None or (info["width"], info["height"], info["n_frames"]) != want or not info.get("loop_truth")
                        or info.get("rocks", 0) != args.rocks):
                    shutil.rmtree(d, ignore_errors=True)
                    info = generate_scene(s, d, width=want[0], height=want[1], n_frames=args.frames, samples=args.samples,
                                          rocks=args.rocks)
                    log(f"generated {d.name} in {info['total_seconds']:.0f} s")
                scenes.append(d)
        if args.scenes:
            if not Path(args.scenes).is_dir():
                raise LoopscapeError(f"scene folder {args.scenes} does not exist.", "Pass a folder of scene folders.")
            scenes += sorted(p for p in Path(args.scenes).iterdir() if (p / "image.png").exists())
        work = out / "runs"
        compare: dict[str, np.ndarray] = {}
        for folder in scenes:
            scene = Scene(folder, args.max_side, args.motion, mask_slop=args.mask_slop, inputs_dir=out / "inputs")
            paths = [HERO] + ([p for p in args.paths.split(",") if p] if scene.has_gt else [])
            first_gt = scene.has_gt and not compare
            rows += evaluate_scene(scene, paths, args.frames, args.quality, work, extra, baseline=not args.no_baseline,
                                   lpips=lpips, log=log, ablations=not args.no_ablations,
                                   compare=compare if first_gt else None, device=args.device)
            if first_gt and compare and (truth := scene.gt_frames(COMPARE_PATH)) is not None:
                compare["truth"] = truth[min(len(truth), args.frames) - 1]
                if (loop_truth := scene.loop_truth_frames(COMPARE_PATH, truth)) is not None:
                    compare["loop truth"] = loop_truth[min(len(loop_truth), args.frames) - 1]
                write_compare(compare, out, f"{scene.name}, {COMPARE_PATH} path, frame {args.frames - 1}")
    except LoopscapeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print("nothing to evaluate: pass --synthetic N, --scenes DIR or --results DIR...", file=sys.stderr)
        return 2
    kind = "synthetic GT scenes" if args.synthetic and not args.scenes else ("real scenes, no-reference metrics" if args.scenes else "results")
    title = (f"### Loopscape evaluation: {kind}; max side {args.max_side}, {args.frames} frames, main quality {args.quality}"
             + (", motion from arrows sampled from the true flow" if args.motion == "hints" else "")
             + (f", masks grown by {args.mask_slop} px" if args.mask_slop else "")
             + (f", {args.rocks} boulders per scene" if args.rocks else "")
             + (f", also {', '.join(extra)}" if extra else "; draft/final not run (opt-in: --qualities draft,final)"))
    print(write_table(rows, out, title))
    print(f"total {time.time() - t0:.0f} s; wrote {out / 'table.md'}, {out / 'table.csv'}, {out / 'plots.png'}"
          + (f", {out / 'compare.png'}" if (out / "compare.png").exists() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
