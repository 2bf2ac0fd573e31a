"""Pure-PyTorch reference rasteriser for 3D Gaussians, differentiable, with gsplat 1.5 semantics.

gsplat's CUDA kernels bin Gaussians into 16x16 tiles and walk each tile's depth-sorted list per
pixel. On a CPU the per-pixel walk is the cost, so this version shrinks the tile to the pixel:
it enumerates (Gaussian, pixel) pairs inside each Gaussian's screen-space extent, sorts them
by (pixel, depth) and composites every pixel's run at once with a segmented log-cumsum. The
arithmetic and every constant are gsplat's:

* EWA projection with the Jacobian's tangent clamped at 1.3x the field of view, eps2d = 0.3;
* cull z outside (near, far), opacity < 1/255, and footprints outside the image;
* extent = min(3.33, sqrt(2 ln(255 * opacity))) sigmas, per axis (as gsplat's radius_x/y);
* pixel centres at +0.5; alpha = min(0.999, o * exp(-sigma)); skip alpha < 1/255 or sigma < 0;
* front-to-back, stop before the Gaussian that would take T to <= 1e-4;
* expected depth = sum(w z) / alpha.
"""
from __future__ import annotations

import torch
from torch import Tensor

from contract.splats import ALPHA_MAX, ALPHA_MIN, EPS2D, EXTENT_MAX, T_MIN  # gsplat's, shared with Blender


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Unnormalised wxyz quaternions (N,4) to rotation matrices (N,3,3)."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(-1, 3, 3)


def project_gaussians(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, viewmat: Tensor, K: Tensor,
    width: int, height: int, near_plane: float, far_plane: float,
) -> dict[str, Tensor]:
    """Screen-space footprint of every Gaussian: means2d, conics, depth, per-axis radii, visibility."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    pc = means @ R.T + t
    z = pc[:, 2]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    zs = torch.where(z > near_plane, z, torch.full_like(z, 1.0))  # keeps culled rows finite

    # Clamp the tangent used by the Jacobian as gsplat does, so off-screen splats do not explode.
    lim_xp = (width - cx) / fx + 0.3 * width / fx
    lim_xn = cx / fx + 0.3 * width / fx
    lim_yp = (height - cy) / fy + 0.3 * height / fy
    lim_yn = cy / fy + 0.3 * height / fy
    tx = zs * torch.minimum(torch.maximum(pc[:, 0] / zs, -lim_xn), lim_xp)
    ty = zs * torch.minimum(torch.maximum(pc[:, 1] / zs, -lim_yn), lim_yp)
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs, zero, -fx * tx / zs**2, zero, fy / zs, -fy * ty / zs**2], -1).reshape(-1, 2, 3)

    M = quat_to_rotmat(quats) * scales[:, None, :]
    cov3 = M @ M.transpose(1, 2)
    T = J @ R[None]
    cov2 = T @ cov3 @ T.transpose(1, 2)
    a = cov2[:, 0, 0] + EPS2D
    b = cov2[:, 0, 1]
    c = cov2[:, 1, 1] + EPS2D
    det = a * c - b * b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], -1)
    means2d = torch.stack([fx * pc[:, 0] / zs + cx, fy * pc[:, 1] / zs + cy], -1)
    if means2d.requires_grad:
        means2d.retain_grad()  # densification reads the screen-space gradient

    with torch.no_grad():
        op = opacities.detach()
        extent = torch.sqrt(2.0 * torch.log((op / ALPHA_MIN).clamp_min(1.0))).clamp_max(EXTENT_MAX)
        rx = torch.ceil(extent * torch.sqrt(a.detach().clamp_min(0)))
        ry = torch.ceil(extent * torch.sqrt(c.detach().clamp_min(0)))
        m = means2d.detach()
        visible = (z > near_plane) & (z < far_plane) & (det > 0) & (op >= ALPHA_MIN) & ((rx > 0) | (ry > 0))
        visible &= (m[:, 0] + rx > 0) & (m[:, 0] - rx < width) & (m[:, 1] + ry > 0) & (m[:, 1] - ry < height)
        radii = torch.where(visible[:, None], torch.stack([rx, ry], -1), torch.zeros_like(m)).to(torch.int32)
    return {"means2d": means2d, "conics": conics, "depths": z, "radii": radii, "visible": visible}


def _pixel_pairs(means2d: Tensor, radii: Tensor, ids: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """All (gaussian id, pixel index) pairs whose pixel centre lies inside a Gaussian's box."""
    m = means2d.detach()[ids]
    r = radii[ids].to(m.dtype)
    # Pixel j has its centre at j + 0.5; include every centre within [m - r, m + r].
    x0 = torch.ceil(m[:, 0] - r[:, 0] - 0.5).clamp(0, width - 1).long()
    x1 = torch.floor(m[:, 0] + r[:, 0] - 0.5).clamp(-1, width - 1).long()
    y0 = torch.ceil(m[:, 1] - r[:, 1] - 0.5).clamp(0, height - 1).long()
    y1 = torch.floor(m[:, 1] + r[:, 1] - 0.5).clamp(-1, height - 1).long()
    nx = (x1 - x0 + 1).clamp_min(0)
    ny = (y1 - y0 + 1).clamp_min(0)
    cnt = nx * ny
    total = int(cnt.sum())
    if total == 0:
        empty = torch.zeros(0, dtype=torch.long, device=m.device)
        return empty, empty
    local_gid = torch.repeat_interleave(torch.arange(len(ids), device=m.device), cnt)
    start = torch.cumsum(cnt, 0) - cnt
    local = torch.arange(total, device=m.device) - start[local_gid]
    px = x0[local_gid] + local % nx[local_gid]
    py = y0[local_gid] + local // nx[local_gid]
    return ids[local_gid], py * width + px


def _pair_alpha(rows: Tensor, pix: Tensor, width: int, dt: torch.dtype) -> Tensor:
    """gsplat's alpha for (Gaussian row, pixel) pairs; rows = [mean2d(2), conic(3), opacity(1)]."""
    px = (pix % width).to(dt) + 0.5
    py = torch.div(pix, width, rounding_mode="floor").to(dt) + 0.5
    dx = px - rows[:, 0]
    dy = py - rows[:, 1]
    sigma = 0.5 * (rows[:, 2] * dx * dx + rows[:, 4] * dy * dy) + rows[:, 3] * dx * dy
    alpha = torch.clamp_max(rows[:, 5] * torch.exp(-sigma), ALPHA_MAX)
    return torch.where(sigma >= 0, alpha, torch.zeros_like(alpha))


def rasterize_cpu(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
    viewmat: Tensor, K: Tensor, width: int, height: int,
    near_plane: float = 0.01, far_plane: float = 1e10,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """Render colours (H,W,D), alpha (H,W,1) and expected depth (H,W,1) without a background."""
    proj = project_gaussians(means, quats, scales, opacities, viewmat, K, width, height, near_plane, far_plane)
    means2d, conics, z = proj["means2d"], proj["conics"], proj["depths"]
    dev, dt = means.device, means.dtype
    D = colors.shape[-1]
    npix = width * height

    ids = torch.nonzero(proj["visible"]).squeeze(1)
    info = {"means2d": means2d, "radii": proj["radii"], "depths": z, "visible": proj["visible"]}
    # One packed per-Gaussian table, so each pair needs one gather (and backward one scatter).
    table = torch.cat([means2d, conics, opacities[:, None]], 1)

    # Pass 1, no autograd: enumerate pairs, drop those below the alpha cut, sort by (pixel, depth)
    # and find gsplat's early stop. Only the surviving pairs enter the differentiable pass.
    with torch.no_grad():
        gid, pix = _pixel_pairs(means2d, proj["radii"], ids, width, height)
        alpha = _pair_alpha(table.detach()[gid], pix, width, dt)
        keep = alpha >= ALPHA_MIN
        gid, pix, alpha = gid[keep], pix[keep], alpha[keep]
        rank = torch.empty(len(z), dtype=torch.long, device=dev)
        rank[torch.argsort(z.detach(), stable=True)] = torch.arange(len(z), device=dev)
        order = torch.argsort(pix * len(z) + rank[gid])
        gid, pix, alpha = gid[order], pix[order], alpha[order]
        if gid.numel():
            log1m = torch.log1p(-alpha.to(torch.float64))
            first = torch.ones_like(pix, dtype=torch.bool)
            first[1:] = pix[1:] != pix[:-1]
            incl = torch.cumsum(log1m, 0)
            seg_start = torch.nonzero(first).squeeze(1)
            seg = torch.cumsum(first.long(), 0) - 1
            t_after = torch.exp(incl - (incl - log1m)[seg_start][seg])
            contributes = t_after > T_MIN  # monotone within a pixel: exactly gsplat's early stop
            gid, pix = gid[contributes], pix[contributes]

    if gid.numel() == 0:
        zeros = torch.zeros(height, width, 1, dtype=dt, device=dev)
        return torch.zeros(height, width, D, dtype=dt, device=dev) + 0 * colors.sum(), zeros, zeros, info

    # Pass 2, differentiable, on the contributing pairs only (their order is kept).
    alpha = _pair_alpha(table[gid], pix, width, dt)
    with torch.no_grad():
        first = torch.ones_like(pix, dtype=torch.bool)
        first[1:] = pix[1:] != pix[:-1]
        seg = torch.cumsum(first.long(), 0) - 1
        seg_start = torch.nonzero(first).squeeze(1)
    # Transmittance by a segmented cumulative sum of log(1 - alpha), in float64 for precision.
    log1m = torch.log1p(-alpha.to(torch.float64))
    incl = torch.cumsum(log1m, 0)
    excl = incl - log1m
    t_before = torch.exp(excl - excl[seg_start][seg])
    w = (alpha.to(torch.float64) * t_before).to(dt)

    rgb = torch.zeros(npix, D, dtype=dt, device=dev).index_add(0, pix, w[:, None] * colors[gid])
    acc = torch.zeros(npix, dtype=dt, device=dev).index_add(0, pix, w)
    dep = torch.zeros(npix, dtype=dt, device=dev).index_add(0, pix, w * z[gid])
    expected_depth = dep / acc.clamp_min(1e-10)
    return (
        rgb.reshape(height, width, D),
        acc.reshape(height, width, 1),
        expected_depth.reshape(height, width, 1),
        info,
    )

