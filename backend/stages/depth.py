"""Monocular depth for the input photo: one interface, three sources.

``estimate_depth(rgb, spec, events) -> DepthMap`` picks the source from ``DepthSpec.source``:

* ``"model"`` - a learned model through transformers' ``AutoModelForDepthEstimation`` (default
  Depth Anything V2 Small). Any hub id or a local folder saved with ``save_pretrained``. Online it
  loads from the hub; offline (``HF_HUB_OFFLINE=1`` or no network) from the local cache or folder.
  Pre-processing is done here from the model's ``preprocessor_config.json`` (resize to a multiple
  of the patch size near the model's size, rescale, normalise), so torchvision is never needed.
  Depth Anything predicts relative *disparity*; near-zero disparity is sky/infinity.
* a path to a file - ``.npy``, 16-bit ``.png`` or ``.exr``, holding depth or disparity
  (``DepthSpec.kind``); resized to the image size. Zero, negative or infinite depth means "no
  depth" and goes to the far shell, as does zero disparity.
* ``"prior"`` - an offline geometric prior, no weights needed (below).
* ``"auto"`` (default) - the model when it can be loaded, else the prior with a warning.

The offline prior
-----------------
Landscape photos are mostly "sky above, ground plane below, distant relief at the horizon".

1. Sky. Each pixel gets a sky score from image cues: low local texture (sky and clouds are
   smooth compared with terrain), height in the frame, and a colour log-likelihood ratio between
   a sky and a ground colour histogram. The sky histogram starts from the smooth, lighter part
   of the top band and the ground histogram from the rest of the frame (starting it from the
   bottom band alone, often water as blue-grey as the sky, left green slopes matching neither);
   both are re-estimated twice from the current skyline (ground colours only from the lower
   half, so that a low cloud misread once does not teach the model). Sky is taken
   to be a *prefix of each column* (connected to the top edge, never reappearing below the
   ground, so lake reflections are not sky); the skyline ``b(x)`` maximises the summed score
   above it with an L1 penalty on jumps between neighbouring columns, solved exactly by dynamic
   programming. A sky that is not clearly smoother than what lies below it is rejected.
   Known limits: bright, smooth grey rock faces can be taken for overcast sky, and dark storm
   clouds low on the horizon for terrain (they then sit at the capped mountain distance).
2. Horizon. When the photo has a moving fluid whose flow shows perspective (water slowing
   towards the distance), the horizon is where that flow says the plane it moves on vanishes
   (:func:`motion_horizon`). Otherwise it is a low percentile-point of the skyline (the lower
   parts of the skyline are where distant terrain meets the horizon), or above the frame when
   there is no sky. In a valley the skyline stands well above the true horizon: on the synthetic
   scenes it put the far end of the water 2-4x too near.
3. Depth. Below the horizon the ground is a plane seen by a level camera: depth ~ 1 / (y - y_h).
   Approaching the horizon that depth is capped, and non-sky content above the horizon
   (mountains, buildings, trees against the sky) sits at the same capped distance, standing on
   the far ground. The sky goes to the far shell during normalisation.
4. Image cues are used modestly: the log-depth is smoothed (a small Gaussian) so that the
   skyline and the cap do not leave hard steps.
5. Still islands. A still region that the moving fluid encloses (a boulder in a stream) stands
   upright at the depth of its foot instead of lying on the plane (:func:`stand_islands`).

Normalisation (docs/DESIGN.md): depth is scaled so that the 10th percentile of non-sky depth is
1.0; sky and missing depth go to the far shell at ``min(FAR_SHELL_MAX, 2 x 98th percentile of
non-sky depth)``, and non-sky depth beyond the shell is clipped to it.
"""
from __future__ import annotations

import json
import os

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # EXR depth files; read by OpenCV on first use

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import cv2
import numpy as np

from backend.infra.errors import LoopscapeError
from backend.infra.cache import file_digest
from backend.infra.events import EventSink

FAR_SHELL_MAX = 20.0  # cap on the far shell, in units of the near content (10th percentile = 1)
DEFAULT_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
NEAR_ZERO_DISPARITY = 0.02  # disparity below this fraction of its 99th percentile counts as infinity
FILE_EXTS = (".npy", ".png", ".exr")


@dataclass
class DepthSpec:
    source: str = "auto"  # "auto" | "model" | "prior" | path to a depth/disparity file
    kind: str = "depth"  # "depth" | "disparity", for files
    model: str = DEFAULT_MODEL  # hub id or local folder
    device: str = "cpu"  # "cpu" | "cuda" | "auto"


@dataclass
class DepthMap:
    depth: np.ndarray  # (H, W) float32, normalised (see module docstring)
    sky: np.ndarray  # (H, W) bool
    source: str  # what was used: "model:<id>", "prior", "file:<name>"

    @property
    def far_shell(self) -> float:
        return float(self.depth.max())


@dataclass
class FluidMotion:
    """The photo's motion inputs as the prior reads them: a flow over the moving region."""

    flow: np.ndarray  # (H, W, 2) px/frame at the image's size
    mask: np.ndarray  # (H, W) bool
    K: np.ndarray  # (3, 3) the photo's intrinsics at the image's size
    painted: np.ndarray | None = None  # (H, W) bool, the mask before the edge snap, when it was snapped


def estimate_depth(rgb: np.ndarray, spec: DepthSpec | None = None, events: EventSink | None = None,
                   motion: FluidMotion | None = None) -> DepthMap:
    """Depth for ``rgb`` (H, W, 3) float in [0, 1], normalised per the design contract; ``motion``
    lets the offline prior place its horizon (the learned model does not need it)."""
    spec = spec or DepthSpec()
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"estimate_depth expects (H, W, 3), got {rgb.shape}")
    if spec.kind not in ("depth", "disparity"):
        raise LoopscapeError(f"depth kind must be 'depth' or 'disparity', got {spec.kind!r}.", "Say which the depth file holds.")
    source = str(spec.source)
    if source == "prior":
        return depth_prior(rgb, motion, events)
    if source == "model":
        return depth_from_model(rgb, load_depth_model(spec.model, spec.device))
    if source == "auto":
        try:
            model = load_depth_model(spec.model, spec.device)
        except LoopscapeError as exc:
            if events is not None:
                events.warning(
                    f"depth model {spec.model} is not available ({exc.message}); using the offline geometric depth prior, "
                    "which is much rougher. Connect to the internet once to download the model (it is cached), "
                    "or pass a local model folder.")
            return depth_prior(rgb, motion, events)
        return depth_from_model(rgb, model)
    return depth_from_file(source, rgb.shape[:2], spec.kind)


# ----------------------------------------------------------------------------- normalisation


def normalise_depth(depth: np.ndarray, sky: np.ndarray) -> np.ndarray:
    """Scale so that the 10th percentile of valid non-sky depth is 1; sky/missing onto the far shell."""
    d = np.asarray(depth, dtype=np.float64)
    sky = np.asarray(sky, dtype=bool)
    valid = np.isfinite(d) & (d > 0) & ~sky
    if not valid.any():
        raise LoopscapeError("the depth map holds no usable depth (everything is sky, zero or infinite).",
                             "Use another depth source, for example --depth prior.")
    d = d / np.percentile(d[valid], 10)
    far = min(FAR_SHELL_MAX, 2.0 * float(np.percentile(d[valid], 98)))
    out = np.where(valid, np.minimum(d, far), far)
    return out.astype(np.float32)


def _finish(depth: np.ndarray, sky: np.ndarray, source: str) -> DepthMap:
    sky = np.asarray(sky, dtype=bool) | ~(np.isfinite(depth) & (depth > 0))
    return DepthMap(depth=normalise_depth(depth, sky), sky=sky, source=source)


def disparity_to_depth(disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative disparity to depth; near-zero disparity is infinity (sky). Returns (depth, sky)."""
    disp = np.asarray(disp, dtype=np.float64)
    finite = np.isfinite(disp)
    ref = np.percentile(disp[finite], 99) if finite.any() else 0.0
    if ref <= 0:
        raise LoopscapeError("the disparity map is zero or negative everywhere.", "Check the file, or say --depth-kind depth if it holds depth.")
    sky = ~finite | (disp <= NEAR_ZERO_DISPARITY * ref)
    depth = np.where(sky, np.inf, 1.0 / np.where(sky, 1.0, disp))
    return depth, sky


# ----------------------------------------------------------------------------- learned model


@dataclass
class LoadedModel:
    model: Any  # a transformers depth-estimation model in eval mode
    name: str  # the id or folder it came from
    size: tuple[int, int]  # (height, width) the model was trained at
    multiple: int  # input sides must be multiples of this (patch size)
    mean: np.ndarray
    std: np.ndarray
    rescale: float
    keep_aspect: bool
    outputs_disparity: bool
    device: str


_MODEL_CACHE: dict[tuple[str, str], LoadedModel] = {}


def _offline_env() -> bool:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


HUB_PROBE_SECONDS = 1.5  # the whole probe, name lookup included: offline must fall back within 2 s


def _hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """One quick TCP probe of the hub (HF_ENDPOINT's host and port); huggingface_hub otherwise
    retries with back-off for ~30 s before giving up.

    ``socket.create_connection``'s timeout does not bound the name lookup, which on a machine
    without network can hang for the resolver's retries, so the probe runs in a daemon thread and
    counts as failed when it has not answered in time.
    """
    import threading

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except Exception:  # noqa: BLE001 - any failure (a broken resolver included) means "not reachable"
            result.append(False)

    worker = threading.Thread(target=probe, name="hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def _resolve_device(device: str) -> str:
    import torch

    if device in ("auto", "", None):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LoopscapeError(f"device {device} was requested but CUDA is not available.", "Use --device cpu or auto.")
    return device


def load_depth_model(name: str, device: str = "cpu") -> LoadedModel:
    """Load a depth model by hub id or local folder; LoopscapeError (with the fix) when impossible."""
    dev = _resolve_device(device)
    key = (str(name), dev)
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    import torch  # noqa: F401  (imported here so that the prior path never pays for it)
    from transformers import AutoModelForDepthEstimation

    folder = Path(name).expanduser()
    is_local = folder.is_dir()
    if not is_local and (name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1)):
        raise LoopscapeError(f"depth model folder {name} does not exist.", "Pass a folder saved with save_pretrained, or a hub id such as " + DEFAULT_MODEL + ".")
    local_only = is_local or _offline_env() or not _hub_reachable()
    src = str(folder) if is_local else name
    try:
        model = AutoModelForDepthEstimation.from_pretrained(src, local_files_only=local_only)
        proc = _read_processor_config(src, local_only)
    except Exception as exc:  # transformers raises OSError/ValueError/HF errors for missing files
        where = "the folder" if is_local else ("the local cache (offline)" if local_only else "the hub")
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise LoopscapeError(
            f"could not load depth model {name} from {where}: {reason}",
            "Connect to the internet once so the model downloads into the cache, pass a local folder saved with "
            "save_pretrained, or use --depth prior.") from None
    model.eval().to(dev)
    size = proc.get("size", {}) or {}
    if "height" in size:
        hw = (int(size["height"]), int(size["width"]))
    else:
        side = int(size.get("shortest_edge", 518))
        hw = (side, side)
    multiple = int(proc.get("ensure_multiple_of", getattr(model.config, "patch_size", 14)) or 14)
    mtype = getattr(model.config, "model_type", "")
    loaded = LoadedModel(
        model=model,
        name=str(name),
        size=hw,
        multiple=max(1, multiple),
        mean=np.asarray(proc.get("image_mean", [0.485, 0.456, 0.406]), np.float32) if proc.get("do_normalize", True) else np.zeros(3, np.float32),
        std=np.asarray(proc.get("image_std", [0.229, 0.224, 0.225]), np.float32) if proc.get("do_normalize", True) else np.ones(3, np.float32),
        rescale=1.0,  # our input is already float in [0, 1], i.e. uint8 * rescale_factor
        keep_aspect=bool(proc.get("keep_aspect_ratio", True)),
        # relative Depth Anything predicts disparity; metric heads (and ZoeDepth, DPT-metric) predict depth
        outputs_disparity=(mtype == "depth_anything" and getattr(model.config, "depth_estimation_type", "relative") == "relative")
        or mtype == "dpt",
        device=dev,
    )
    _MODEL_CACHE[key] = loaded
    return loaded


def _read_processor_config(src: str, local_only: bool) -> dict:
    from transformers.utils import cached_file

    path = cached_file(src, "preprocessor_config.json", local_files_only=local_only,
                       _raise_exceptions_for_missing_entries=False)
    if path is None:  # a model folder without a processor: fall back to ImageNet statistics
        return {}
    return json.loads(Path(path).read_text())


def model_input_size(h: int, w: int, target: tuple[int, int], multiple: int, keep_aspect: bool) -> tuple[int, int]:
    """(height, width) for the network: DPT's rule - scale by whichever factor changes the image
    least, keeping the aspect ratio - then round each side to the nearest multiple of the patch size."""
    th, tw = target
    sh, sw = th / h, tw / w
    if keep_aspect:
        s = sw if abs(1 - sw) < abs(1 - sh) else sh
        sh = sw = s
    oh = max(multiple, int(round(h * sh / multiple)) * multiple)
    ow = max(multiple, int(round(w * sw / multiple)) * multiple)
    return oh, ow


def depth_from_model(rgb: np.ndarray, lm: LoadedModel) -> DepthMap:
    import torch

    h, w = rgb.shape[:2]
    ih, iw = model_input_size(h, w, lm.size, lm.multiple, lm.keep_aspect)
    x = cv2.resize(rgb, (iw, ih), interpolation=cv2.INTER_CUBIC if ih * iw > h * w else cv2.INTER_AREA)
    x = (np.clip(x, 0, 1) * lm.rescale - lm.mean) / lm.std
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(lm.device)
    with torch.inference_mode():
        out = lm.model(pixel_values=t).predicted_depth
    pred = out.reshape(out.shape[-2], out.shape[-1]).float().cpu().numpy()
    pred = cv2.resize(pred, (w, h), interpolation=cv2.INTER_LINEAR if h * w > pred.size else cv2.INTER_AREA)
    if not np.all(np.isfinite(pred)):
        raise LoopscapeError(f"depth model {lm.name} produced invalid values (NaN/inf).", "Try another model or --depth prior.")
    if lm.outputs_disparity:
        depth, sky = disparity_to_depth(np.maximum(pred, 0.0))
    else:
        depth = pred.astype(np.float64)
        sky = ~(depth > 0)
    return _finish(depth, sky, f"model:{lm.name}")


# ----------------------------------------------------------------------------- user's file


def read_depth_file(path: str | Path) -> np.ndarray:
    """Read a 2D float map from .npy, 16-bit .png or .exr (not yet resized or normalised)."""
    p = Path(path)
    if not p.exists():
        raise LoopscapeError(f"depth file not found: {p}.", "Check the path, or use --depth auto to estimate depth.")
    ext = p.suffix.lower()
    if ext not in FILE_EXTS:
        raise LoopscapeError(f"depth file {p.name} has an unsupported type {ext or '(none)'}.", "Use .npy, 16-bit .png or .exr.")
    if ext == ".npy":
        try:
            a = np.load(p, allow_pickle=False)
        except Exception as exc:
            raise LoopscapeError(f"could not read depth file {p.name}: {exc}.", "Save it with numpy.save as a float array.") from None
    else:
        a = cv2.imread(str(p), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
        if a is None:
            raise LoopscapeError(f"could not read depth file {p.name}; it is damaged or not a {ext} image.", "Re-export it.")
        if ext == ".png" and a.dtype != np.uint16:
            raise LoopscapeError(f"depth PNG {p.name} is {a.dtype}, which is too coarse for depth.", "Save depth as a 16-bit PNG, .npy or .exr.")
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        a = a[:, :, 0]  # one channel holds the value (EXR depth is often written as R or as RGB)
    if a.ndim != 2 or min(a.shape) < 2:
        raise LoopscapeError(f"depth file {p.name} has shape {a.shape}; expected a 2D map (H, W).", "Save one value per pixel.")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise LoopscapeError(f"depth file {p.name} holds {a.dtype} values.", "Save it as float or 16-bit integers.")
    a = a.astype(np.float64)
    if np.isnan(a).any():
        raise LoopscapeError(f"depth file {p.name} contains NaN values.", "Fill the holes (use 0 or inf for sky / no depth).")
    return a


def depth_from_file(path: str | Path, size_hw: tuple[int, int], kind: str = "depth") -> DepthMap:
    p = Path(path)
    raw = read_depth_file(p)
    if kind == "disparity":
        depth, sky = disparity_to_depth(np.where(np.isfinite(raw), raw, 0.0))
    else:
        # zero/negative, infinite or absurdly large depth (renderer background) means "no depth"
        sky = ~np.isfinite(raw) | (raw <= 0) | (raw >= 1e9)
        depth = np.where(sky, np.inf, raw)
    h, w = size_hw
    if depth.shape != (h, w):
        if abs(depth.shape[1] / depth.shape[0] - w / h) > 0.02 * (w / h):
            raise LoopscapeError(f"depth file {p.name} is {depth.shape[1]}x{depth.shape[0]}, but the image is {w}x{h} (another aspect ratio).",
                                 "Use a depth map made for this image.")
        # resample disparity (bounded, smooth across the sky edge), and the sky mask by nearest
        disp = np.where(sky, 0.0, 1.0 / np.where(sky, 1.0, depth)).astype(np.float32)
        interp = cv2.INTER_AREA if depth.shape[0] > h else cv2.INTER_LINEAR
        disp = cv2.resize(disp, (w, h), interpolation=interp).astype(np.float64)
        sky = cv2.resize(sky.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool) | (disp <= 0)
        depth = np.where(sky, np.inf, 1.0 / np.where(sky, 1.0, disp))
    if (~sky).sum() == 0:
        raise LoopscapeError(f"depth file {p.name} has no valid depth (all zero, infinite or sky).", "Check the file and --depth-kind.")
    return _finish(depth, sky, f"file:{p.name}")


# ----------------------------------------------------------------------------- offline prior

PRIOR_WORK_SIDE = 256  # the prior runs at this long side; its output is smooth, so that is plenty
_GROUND_EPS = 0.02  # ground depth ~ 1 / ((y - y_h) / H + eps): keeps the horizon finite
_CAP_ROWS = 0.04  # depth cap = ground depth this fraction of the height below the horizon
PRIOR_RECIPE = "standing-islands-painted"  # bump when the prior changes, so cached depths are not reused
SKY_SEED_LIGHT_PCT = 40  # the sky seed keeps top-band pixels at or above this lightness percentile


def depth_prior(rgb: np.ndarray, motion: FluidMotion | None = None, events: EventSink | None = None) -> DepthMap:
    """Offline geometric depth (see the module docstring)."""
    h, w = rgb.shape[:2]
    s = min(1.0, PRIOR_WORK_SIDE / max(h, w))
    sw, sh = max(8, round(w * s)), max(8, round(h * s))
    small = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA) if (sw, sh) != (w, h) else rgb
    _, skyline_small = sky_score(small)
    skyline_small = _validate_sky(small, skyline_small)
    # skyline at full resolution: rows scale by h/sh, columns interpolate
    xs_small = (np.arange(sw) + 0.5) * w / sw
    skyline = np.interp(np.arange(w) + 0.5, xs_small, skyline_small.astype(np.float64)) * h / sh
    rows = np.arange(h)[:, None] + 0.5
    sky = rows < skyline[None, :]
    y_h = horizon_row(skyline, h)
    seen = motion_horizon(motion.flow, motion.mask, motion.K) if motion is not None else None
    if seen is not None:
        if events is not None:
            events.log(f"offline depth prior: horizon at row {seen:.0f} of {h} from the perspective of the motion "
                       f"(the skyline alone put it at row {y_h:.0f})")
        y_h = seen
    t = np.maximum((rows - y_h) / h, _CAP_ROWS)
    depth = np.broadcast_to(1.0 / (t + _GROUND_EPS), (h, w)).astype(np.float64)
    depth = _smooth_log_depth(depth, sky, sigma=0.01 * max(h, w))
    if motion is not None:
        depth = stand_islands(depth, motion.mask, sky, painted=motion.painted)
    return _finish(np.where(sky, np.inf, depth), sky, "prior")


def stand_islands(depth: np.ndarray, moving: np.ndarray, sky: np.ndarray,
                  painted: np.ndarray | None = None) -> np.ndarray:
    """``depth`` with every still island of the moving region stood upright where it meets the fluid.

    A still region that the moving one encloses (a boulder in a stream, a post in a lake) rests on
    the fluid's surface. The ground plane gives each of its rows the depth of the surface at that
    row, which lays a boulder flat on the water, as far as the water beside its top. Standing it at
    the depth of its nearest contact with the fluid instead (the ring around it, whose nearest part
    is its foot) puts it in front of the water behind it: the water then passes behind it, and a
    moved camera sees past its sides. Regions that touch the frame or hold sky are not islands.

    The islands are found in the mask as painted when the edge snap changed it (``painted``): the
    snap leaves the water's edge static, and across a channel of a few pixels that joins a boulder
    to the bank or to its neighbour. The moving region is also closed over the snap's band
    (``mask_edges.band_px``), for masks snapped before they reach here. The still pixels within the
    band of an island, its rim the snap released, stand with it.
    """
    from scipy.ndimage import distance_transform_edt, label

    from backend.model.mask_edges import band_px

    fluid = np.asarray(moving, bool)
    h, w = fluid.shape
    r = band_px(w, h)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    found = fluid if painted is None else fluid | np.asarray(painted, bool)
    # padded with fluid, so the closing does not erode the moving region at the frame
    padded = cv2.copyMakeBorder(found.astype(np.uint8), r, r, r, r, cv2.BORDER_CONSTANT, value=1)
    labels, n = label(cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)[r:r + h, r:r + w] == 0)
    if n == 0:
        return depth
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[np.asarray(sky, bool)]])
    cores = np.where(np.isin(labels, border), 0, labels)
    if not cores.any():
        return depth
    dist, (iy, ix) = distance_transform_edt(cores == 0, return_indices=True)
    islands = np.where(~fluid & (dist <= r), cores[iy, ix], 0)
    foot = np.full(n + 1, np.inf)  # per island: the nearest depth among the fluid pixels around it
    padded_islands = np.pad(islands, 1)
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        beside = padded_islands[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]  # the island each pixel's neighbour belongs to
        touch = (beside > 0) & fluid
        np.minimum.at(foot, beside[touch], depth[touch])
    return np.where((islands > 0) & np.isfinite(foot[islands]), foot[islands], depth)


def _texture(lab: np.ndarray) -> np.ndarray:
    """Local texture: box-averaged gradient magnitude of the lightly blurred Lab image."""
    h, w = lab.shape[:2]
    blur = cv2.GaussianBlur(lab, (0, 0), 1.0)
    g = np.zeros((h, w), np.float32)
    for c, wt in ((0, 1.0), (1, 0.5), (2, 0.5)):
        gx = cv2.Sobel(blur[:, :, c], cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(blur[:, :, c], cv2.CV_32F, 0, 1, ksize=3)
        g += wt * np.sqrt(gx * gx + gy * gy)
    k = max(3, (min(h, w) // 40) | 1)
    return cv2.blur(g, (k, k))


def _colour_bins(lab: np.ndarray) -> np.ndarray:
    """Quantise Lab into 8 x 16 x 16 bins (a, b clipped to +-64: landscapes rarely go beyond)."""
    li = np.clip(lab[:, :, 0] / 100.0 * 8, 0, 7.999).astype(np.int32)
    ai = np.clip((lab[:, :, 1] + 64) / 128.0 * 16, 0, 15.999).astype(np.int32)
    bi = np.clip((lab[:, :, 2] + 64) / 128.0 * 16, 0, 15.999).astype(np.int32)
    return (li * 16 + ai) * 16 + bi


def _colour_llr(bins: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log p(colour | class a) - log p(colour | class b) from smoothed colour histograms."""
    def hist(mask: np.ndarray) -> np.ndarray:
        hgm = np.bincount(bins[mask], minlength=8 * 16 * 16).astype(np.float32).reshape(8, 16, 16)
        hgm = cv2.GaussianBlur(hgm.reshape(8, 256), (0, 0), 0.7).reshape(8, 16, 16)  # share mass across a/b
        hgm = hgm.reshape(-1) + 0.5
        return hgm / hgm.sum()
    return np.log(hist(a))[bins] - np.log(hist(b))[bins]


def sky_score(rgb: np.ndarray, iterations: int = 3, jump_cost: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel sky evidence (positive = sky) and the skyline b(x) found with it.

    Colour models start from the smooth, lighter part of the top band (sky) and the rest of the
    frame (ground) and are re-estimated from the current skyline a few times (a small GrabCut-like
    loop); texture and height in the frame are fixed cues.
    """
    h, w = rgb.shape[:2]
    lab = cv2.cvtColor(np.clip(rgb, 0, 1).astype(np.float32), cv2.COLOR_RGB2LAB)  # L 0..100, a/b ~ +-100
    tex = _texture(lab)
    tex_n = tex / (float(np.median(tex)) + 1e-3)
    e_tex = np.clip(1.0 - tex_n, -2.0, 1.0)
    yy = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h
    e_pos = np.broadcast_to(0.5 - yy, (h, w))  # sky is up
    bins = _colour_bins(lab)
    rows = np.arange(h)[:, None]
    smooth = tex_n < 1.0
    top = np.broadcast_to(rows < max(2, int(0.15 * h)), (h, w))
    sky_m = top & smooth
    if sky_m.sum() < 0.02 * h * w:
        sky_m = top
    # Slopes or a rock face reaching into the top band are smooth at working size too; keeping
    # the band's lighter part drops them from the seed (the sky lights a daytime landscape).
    light = lab[:, :, 0] >= np.percentile(lab[:, :, 0][sky_m], SKY_SEED_LIGHT_PCT)
    if (sky_m & light).sum() >= 0.01 * h * w:
        sky_m = sky_m & light
    # Ground starts as everything else, not just the bottom band: that band is often water, as
    # blue-grey as the sky, and green or brown slopes would then match neither model.
    ground_m = ~sky_m
    score = np.zeros((h, w), np.float32)
    skyline = np.zeros(w, np.int64)
    for _ in range(iterations):
        llr = np.clip(_colour_llr(bins, sky_m, ground_m), -2.5, 2.5)
        score = (0.5 * llr + 1.0 * e_tex + 1.0 * e_pos).astype(np.float32)
        skyline = skyline_dp(score, jump_cost)
        sky = rows < skyline[None, :]
        margin = max(1, h // 50)
        # ground colours only from the lower half: low clouds misread once must not teach the model
        ground = (rows >= (skyline[None, :] + margin)) & (rows >= h // 2)
        if sky.sum() < 0.01 * h * w or ground.sum() < 0.05 * h * w:
            break
        sky_m, ground_m = sky & smooth if (sky & smooth).sum() > 0.005 * h * w else sky, ground
    return score, skyline


def skyline_dp(score: np.ndarray, jump_cost: float = 0.5) -> np.ndarray:
    """Per column x the sky height b(x) in 0..H (sky = rows < b) maximising
    sum_x sum_{y<b(x)} score(y, x) - jump_cost * sum_x |b(x) - b(x-1)|, exactly (L1-chain DP)."""
    h, w = score.shape
    gain = np.vstack([np.zeros((1, w)), np.cumsum(score, axis=0, dtype=np.float64)])  # (H+1, W)
    cost = -gain
    rows = np.arange(h + 1, dtype=np.float64)
    acc = np.empty_like(cost)
    acc[:, 0] = cost[:, 0]
    for x in range(1, w):
        prev = acc[:, x - 1]
        # min_b' prev[b'] + c|b - b'| by two running minima (lower envelope of cones)
        fwd = np.minimum.accumulate(prev - jump_cost * rows) + jump_cost * rows
        bwd = (np.minimum.accumulate((prev + jump_cost * rows)[::-1]))[::-1] - jump_cost * rows
        acc[:, x] = cost[:, x] + np.minimum(fwd, bwd)
    b = np.empty(w, dtype=np.int64)
    b[-1] = int(np.argmin(acc[:, -1]))
    for x in range(w - 1, 0, -1):
        b[x - 1] = int(np.argmin(acc[:, x - 1] + jump_cost * np.abs(rows - b[x])))
    return b


def _validate_sky(rgb: np.ndarray, skyline: np.ndarray) -> np.ndarray:
    """Drop a 'sky' that is too small or not smoother than what lies below it."""
    h, w = rgb.shape[:2]
    sky = np.arange(h)[:, None] < skyline[None, :]
    frac = sky.mean()
    if frac < 0.01 or frac > 0.97:
        return np.zeros_like(skyline) if frac < 0.01 else skyline
    gray = cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2GRAY)
    g = np.abs(cv2.Laplacian(cv2.GaussianBlur(gray, (0, 0), 1.0), cv2.CV_32F))
    if np.median(g[sky]) > 0.8 * np.median(g[~sky]):
        return np.zeros_like(skyline)
    return skyline


def horizon_row(skyline: np.ndarray, h: int) -> float:
    """Horizon from the skyline: where the lower parts of the skyline lie; above the frame if no sky."""
    has = skyline > 0.5
    if has.mean() < 0.2:  # little or no sky: a camera looking down at the ground
        return -0.5 * h
    return float(np.percentile(skyline[has], 80))


MOTION_HORIZON_MIN_GAIN = 0.75  # share of the flow's structure perspective must explain to be trusted
MOTION_FIT_MAX_PIXELS = 20_000  # pixels per region in the fit (a regular subsample beyond that)
MOTION_MIN_REGION = 0.02  # regions smaller than this share of the image are not fitted
MOTION_MIN_ROWS = 0.15  # nor regions spanning fewer rows than this share of the height


def _plane_flow_rss(u: np.ndarray, v: np.ndarray, fu: np.ndarray, fv: np.ndarray, y_h: float) -> float:
    """Residual of the best uniform plane motion with its vanishing line at row ``y_h``.

    A level camera sees a plane parallel to the ground (water below it, a cloud deck above) vanish
    at the horizon row y_h, at depth Z proportional to 1 / r with r = v - y_h. A velocity (Vx, 0, Vz)
    in that plane moves its pixels by du = r (a - b u), dv = -b r^2 (u from the principal point),
    with a ~ Vx and b ~ Vz: linear in (a, b) once y_h is fixed.
    """
    r = v - y_h
    A = np.zeros((2 * len(u), 2))
    A[: len(u), 0] = r
    A[: len(u), 1] = -r * u
    A[len(u):, 1] = -r * r
    y = np.concatenate([fu, fv])
    sol, *_ = np.linalg.lstsq(A, y, rcond=None)
    return float(np.sum((y - A @ sol) ** 2))


def motion_horizon(flow: np.ndarray, mask: np.ndarray, K: np.ndarray) -> float | None:
    """The horizon row implied by a fluid's flow, or None when no region's flow shows perspective.

    Each large connected region of ``mask`` is fitted with uniform motion on a level plane
    (:func:`_plane_flow_rss`) for vanishing lines above it (water) and below it (a cloud deck). The
    fit is trusted when perspective explains at least ``MOTION_HORIZON_MIN_GAIN`` of what a
    perspective-free motion (the vanishing line far away: near-uniform flow) leaves unexplained.
    Arrows drawn at one speed show no perspective and leave the skyline's horizon in charge.
    """
    flow = np.asarray(flow, np.float64)
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    n, labels = cv2.connectedComponents(mask.astype(np.uint8))
    found: list[tuple[float, int]] = []
    for c in range(1, n):
        ys, xs = np.nonzero(labels == c)
        if len(ys) < MOTION_MIN_REGION * h * w or ys.max() - ys.min() < MOTION_MIN_ROWS * h:
            continue
        step = max(1, len(ys) // MOTION_FIT_MAX_PIXELS)
        ys, xs = ys[::step], xs[::step]
        fu, fv = flow[ys, xs, 0], flow[ys, xs, 1]
        if not np.any(np.hypot(fu, fv) > 1e-6):
            continue
        u, v = xs + 0.5 - float(K[0, 2]), ys + 0.5
        gaps = h * np.geomspace(1.0 / 128, 2.0, 96)  # distance of the vanishing line from the region
        candidates = np.concatenate([v.min() - gaps, v.max() + gaps])
        rss = np.array([_plane_flow_rss(u, v, fu, fv, y) for y in candidates])
        flat = min(_plane_flow_rss(u, v, fu, fv, v.min() - 50.0 * h), _plane_flow_rss(u, v, fu, fv, v.max() + 50.0 * h))
        k = int(np.argmin(rss))
        if flat > 0 and 1.0 - rss[k] / flat >= MOTION_HORIZON_MIN_GAIN:
            found.append((float(candidates[k]), len(ys) * step))
    if not found:
        return None
    rows, weights = np.array(found).T
    return float(np.average(rows, weights=weights))


def _smooth_log_depth(depth: np.ndarray, sky: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of log-depth over non-sky pixels only (normalised convolution)."""
    if sigma < 0.5:
        return depth
    m = (~sky).astype(np.float32)
    ld = np.where(sky, 0.0, np.log(depth)).astype(np.float32)
    num = cv2.GaussianBlur(ld * m, (0, 0), sigma)
    den = cv2.GaussianBlur(m, (0, 0), sigma)
    out = np.where(den > 1e-3, num / np.maximum(den, 1e-3), ld)
    return np.exp(out).astype(np.float64)


# ----------------------------------------------------------------------------- the stage

INPUTS = ("image", "motion")
CACHED = True
KEY_BY_CONTENT = True  # the motion moves the prior's horizon at most: new arrows need not retrain 3D


def params(ctx) -> dict:
    """What besides the photo decides the depth: the source, and a depth file's content."""
    job = ctx.job
    is_file = job.depth not in ("auto", "model", "prior")
    return {"source": job.depth, "kind": job.depth_kind, "model": job.depth_model,
            "file": file_digest(job.resolve(job.depth)) if is_file else None,
            "prior": None if is_file or job.depth == "model" else PRIOR_RECIPE}


def fluid_motion(image, motion) -> FluidMotion | None:
    """The photo's motion as the depth prior reads it (None for a still scene)."""
    if motion is None:
        return None
    from backend.stages.flows import input_view_flow

    return FluidMotion(input_view_flow(motion, image.rgb), motion.mask, image.camera.K, motion.painted_mask)


def run(ctx, image, motion) -> DepthMap:
    job = ctx.job
    source = job.depth if job.depth in ("auto", "model", "prior") else str(job.resolve(job.depth))
    spec = DepthSpec(source=source, kind=job.depth_kind, model=job.depth_model, device=str(ctx.device))
    cue = fluid_motion(image, motion) if source in ("auto", "prior") else None
    return estimate_depth(image.rgb, spec, ctx.events, motion=cue)


def report(depth: DepthMap) -> dict:
    return {"depth_source": depth.source}
