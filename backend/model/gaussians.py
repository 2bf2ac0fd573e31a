"""The 3D Gaussian set: a params dict of raw (pre-activation) tensors, as in gsplat."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from backend.model.camera import Camera
from backend.render.rasterize import RenderOutput, rasterize

from contract.splats import SH_C0, rgb_to_sh0  # noqa: F401  (re-exported: the SH convention lives in the contract)
from contract.splats import sh0_to_rgb as _sh0_to_rgb


def sh0_to_rgb(sh0: Tensor) -> Tensor:
    return _sh0_to_rgb(sh0).clamp_min(0.0)


@dataclass
class Gaussians:
    """Raw parameters: activation happens in :meth:`activated` (exp scales, sigmoid opacity)."""

    means: Tensor  # (N, 3) backend world (OpenCV)
    quats: Tensor  # (N, 4) wxyz, any norm
    log_scales: Tensor  # (N, 3)
    logit_opacities: Tensor  # (N,)
    sh0: Tensor  # (N, 3) SH DC colour
    # Per-Gaussian flag for the animated region; static Gaussians never move.
    moving: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))

    def __post_init__(self) -> None:
        if self.moving.numel() != self.means.shape[0]:
            self.moving = torch.zeros(self.means.shape[0], dtype=torch.bool, device=self.means.device)

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def param_names(self) -> tuple[str, ...]:
        return ("means", "quats", "log_scales", "logit_opacities", "sh0")

    def params(self) -> dict[str, Tensor]:
        return {k: getattr(self, k) for k in self.param_names}

    def activated(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(means, quats, scales, opacities, rgb) as the rasteriser wants them."""
        return (self.means, self.quats, torch.exp(self.log_scales), torch.sigmoid(self.logit_opacities),
                sh0_to_rgb(self.sh0))

    def render(self, camera: Camera, background: Tensor | None = None, backend: str = "auto") -> RenderOutput:
        dev, dt = self.means.device, self.means.dtype
        viewmat = torch.as_tensor(camera.w2c, dtype=dt, device=dev)
        K = torch.as_tensor(camera.K, dtype=dt, device=dev)
        return rasterize(*self.activated(), viewmat, K, camera.width, camera.height,
                         background=background, backend=backend)

    def to(self, device: str | torch.device) -> "Gaussians":
        return Gaussians(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def detach(self) -> "Gaussians":
        return Gaussians(**{f.name: getattr(self, f.name).detach().clone() for f in fields(self)})

    def subset(self, idx: Tensor) -> "Gaussians":
        return Gaussians(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @staticmethod
    def concat(parts: list["Gaussians"]) -> "Gaussians":
        return Gaussians(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Gaussians)})

    def save(self, path: str | Path) -> None:
        torch.save({f.name: getattr(self, f.name).detach().cpu() for f in fields(self)}, path)

    @classmethod
    def load(cls, path: str | Path) -> "Gaussians":
        return cls(**torch.load(path, map_location="cpu", weights_only=True))


def from_points(xyz: np.ndarray, rgb: np.ndarray, pixel_size: np.ndarray, opacity: float = 0.9,
                moving: np.ndarray | None = None) -> Gaussians:
    """One isotropic Gaussian per lifted point, sized by its pixel footprint (or NN distance)."""
    n = len(xyz)
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1.0
    size = torch.as_tensor(np.maximum(pixel_size, 1e-6), dtype=torch.float32)
    return Gaussians(
        means=torch.as_tensor(xyz, dtype=torch.float32),
        quats=quats,
        log_scales=torch.log(size)[:, None].repeat(1, 3),
        logit_opacities=torch.full((n,), float(np.log(opacity / (1 - opacity)))),
        sh0=rgb_to_sh0(torch.as_tensor(rgb, dtype=torch.float32)),
        moving=torch.as_tensor(moving if moving is not None else np.zeros(n, bool), dtype=torch.bool),
    )
