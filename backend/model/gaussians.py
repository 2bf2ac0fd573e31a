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

    def moving_part(self) -> "Gaussians":
        """The moving Gaussians alone."""
        return self.subset(torch.nonzero(self.moving).squeeze(1))

    def with_moving_detached(self) -> "Gaussians":
        """The same Gaussians, the moving ones' parameters detached: a loss on its render trains
        only the static ones."""
        def part(x: Tensor) -> Tensor:
            return torch.where(self.moving.view(-1, *[1] * (x.dim() - 1)), x.detach(), x)

        return Gaussians(**{n: part(getattr(self, n)) for n in self.param_names}, moving=self.moving)

    @staticmethod
    def concat(parts: list["Gaussians"]) -> "Gaussians":
        return Gaussians(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Gaussians)})

    def save(self, path: str | Path) -> None:
        torch.save({f.name: getattr(self, f.name).detach().cpu() for f in fields(self)}, path)

    @classmethod
    def load(cls, path: str | Path) -> "Gaussians":
        return cls(**torch.load(path, map_location="cpu", weights_only=True))


def from_points(xyz: np.ndarray, rgb: np.ndarray, pixel_size: np.ndarray, opacity: float = 0.9,
                moving: np.ndarray | None = None, axes: np.ndarray | None = None) -> Gaussians:
    """One Gaussian per lifted point: isotropic, sized by its pixel footprint, or with ``axes``
    (N, 3, 3) shaped as their columns span (covariance ``A A^T``, times ``pixel_size`` squared:
    axes are given in footprints, as ``lift.surface_axes`` divided by the footprint)."""
    n = len(xyz)
    size = np.maximum(np.asarray(pixel_size, np.float64), 1e-6)
    if axes is None:
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1.0
        log_scales = torch.log(torch.as_tensor(size, dtype=torch.float32))[:, None].repeat(1, 3)
    else:
        a = np.asarray(axes, np.float64) * size[:, None, None]
        quats, scales = _quats_scales(a @ np.swapaxes(a, 1, 2))
        log_scales = torch.log(torch.as_tensor(np.maximum(scales, 1e-6 * size[:, None]), dtype=torch.float32))
    return Gaussians(
        means=torch.as_tensor(xyz, dtype=torch.float32),
        quats=quats,
        log_scales=log_scales,
        logit_opacities=torch.full((n,), float(np.log(opacity / (1 - opacity)))),
        sh0=rgb_to_sh0(torch.as_tensor(rgb, dtype=torch.float32)),
        moving=torch.as_tensor(moving if moving is not None else np.zeros(n, bool), dtype=torch.bool),
    )


def _quats_scales(cov: np.ndarray) -> tuple[Tensor, np.ndarray]:
    """wxyz quaternions (N, 4) and scales (N, 3) of covariances (N, 3, 3): R diag(s^2) R^T = cov."""
    var, m = np.linalg.eigh(cov)
    m[np.linalg.det(m) < 0, :, 2] *= -1.0  # a proper rotation (eigenvector signs are free)
    # Shepperd's method, branch by the largest of w^2, x^2, y^2, z^2 for accuracy.
    t = np.stack([1 + m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2], 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
                  1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2], 1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], axis=1)
    k = np.argmax(t, axis=1)
    r = 0.5 * np.sqrt(np.maximum(t[np.arange(len(m)), k], 1e-12))
    q = np.empty((len(m), 4))
    d = {  # the other three components, each divided by 4 r
        0: (m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]),
        1: (m[:, 2, 1] - m[:, 1, 2], m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0]),
        2: (m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0], m[:, 1, 2] + m[:, 2, 1]),
        3: (m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1]),
    }
    others = {0: (1, 2, 3), 1: (0, 2, 3), 2: (0, 1, 3), 3: (0, 1, 2)}
    for branch in range(4):
        sel = k == branch
        q[sel, branch] = r[sel]
        for j, num in zip(others[branch], d[branch]):
            q[sel, j] = num[sel] / (4 * r[sel])
    return torch.as_tensor(q, dtype=torch.float32), np.sqrt(np.maximum(var, 0.0))
