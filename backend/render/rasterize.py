"""The one rendering entry point: gsplat on CUDA, the pure-PyTorch reference on CPU.

Both take the same arguments and return the same :class:`RenderOutput`, so every stage is
device-agnostic. Arguments follow gsplat's ``rasterization()``: wxyz quaternions (any norm),
linear scales, opacities in [0, 1], any number of colour channels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from backend.render.raster_cpu import EPS2D, rasterize_cpu


@dataclass
class RenderOutput:
    colors: Tensor  # (H, W, D), composited over ``background`` when one was given
    alpha: Tensor  # (H, W, 1)
    depth: Tensor  # (H, W, 1) expected depth, sum(w z) / alpha
    # means2d: read ``.grad.reshape(-1, 2)`` after backward for densification; radii (N, 2) int.
    info: dict[str, Tensor] = field(default_factory=dict)

    @property
    def rgb(self) -> Tensor:
        return self.colors[..., :3]


def gsplat_available() -> bool:
    """gsplat's CUDA kernels load (compiled once; importable is not enough: without nvcc ``_C`` is None)."""
    from backend.infra.device import gsplat_status

    return gsplat_status().ok


def rasterize(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
    viewmat: Tensor, K: Tensor, width: int, height: int, *,
    background: Tensor | None = None, near_plane: float = 0.01, far_plane: float = 1e10,
    backend: str = "auto",
) -> RenderOutput:
    """Render N Gaussians from one camera (viewmat: world-to-camera 4x4, K: 3x3 pixels).

    ``backend`` is ``auto`` (gsplat for CUDA tensors, else the reference), ``gsplat`` or ``cpu``.
    """
    use_gsplat = backend == "gsplat" or (backend == "auto" and means.is_cuda and gsplat_available())
    if use_gsplat:
        colors_out, alpha, depth, info = _rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmat, K, width, height, near_plane, far_plane
        )
    else:
        colors_out, alpha, depth, info = rasterize_cpu(
            means, quats, scales, opacities, colors, viewmat, K, width, height, near_plane, far_plane
        )
    if background is not None:
        colors_out = colors_out + (1.0 - alpha) * background.to(colors_out)
    return RenderOutput(colors_out, alpha, depth, info)


def _rasterize_gsplat(means, quats, scales, opacities, colors, viewmat, K, width, height, near_plane, far_plane):
    from gsplat import rasterization

    D = colors.shape[-1]
    renders, alphas, meta = rasterization(
        means, quats, scales, opacities, colors, viewmat[None], K[None], width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=EPS2D, render_mode="RGB+ED", packed=False,
    )
    means2d = meta["means2d"]
    if means2d.requires_grad:
        means2d.retain_grad()
    radii = meta["radii"][0]
    info = {"means2d": means2d, "radii": radii if radii.dim() == 2 else radii[:, None].expand(-1, 2), "meta": meta}
    return renders[0, ..., :D], alphas[0], renders[0, ..., D:D + 1], info
