"""Lift every pixel to a 3D point along its camera ray at the given depth (z, not ray length)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from backend.model.camera import Camera


@dataclass
class PointCloud:
    """One point per input pixel, in backend world (OpenCV)."""

    xyz: np.ndarray  # (N, 3) float32 world positions
    rgb: np.ndarray  # (N, 3) float32 colours in [0, 1]
    pixel: np.ndarray  # (N,) int64 flat index y * width + x of the source pixel
    pixel_size: np.ndarray  # (N,) float32 world size of one pixel at that depth (depth / f)
    width: int
    height: int

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


def lift_to_points(rgb: np.ndarray, depth: np.ndarray, camera: Camera) -> PointCloud:
    """Back-project pixel centres (+0.5) with camera-space depth ``depth`` (H, W) through ``camera``."""
    depth = np.asarray(depth)
    h, w = depth.shape
    if rgb.shape[:2] != (h, w) or (camera.width, camera.height) != (w, h):
        raise ValueError(f"lift_to_points: image {rgb.shape[:2]}, depth {depth.shape} and camera "
                         f"{camera.height}x{camera.width} must share one size")
    if not np.all(np.isfinite(depth)) or depth.min() <= 0:
        raise ValueError("lift_to_points: depth must be finite and positive everywhere")
    ys, xs = np.mgrid[0:h, 0:w]
    xyz, pixel_size = _backproject(xs.reshape(-1) + 0.5, ys.reshape(-1) + 0.5, depth.reshape(-1), camera)
    return PointCloud(xyz=xyz, rgb=np.asarray(rgb, dtype=np.float32).reshape(-1, 3).copy(),
                      pixel=(ys * w + xs).reshape(-1).astype(np.int64), pixel_size=pixel_size, width=w, height=h)


def _backproject(u: np.ndarray, v: np.ndarray, z: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """World points at camera-space depth ``z`` through pixel positions (u, v), and their pixel footprints."""
    K = camera.K
    z = np.asarray(z, np.float64)
    # invert the full K (it may carry skew) rather than assuming a diagonal focal
    rays = np.stack([u, v, np.ones_like(u)], axis=1) @ np.linalg.inv(K).T
    pc = rays * (z / rays[:, 2])[:, None]
    c2w = camera.c2w
    xyz = pc @ c2w[:3, :3].T + c2w[:3, 3]
    focal = float(np.sqrt(K[0, 0] * K[1, 1]))  # geometric mean: the side of a square of equal area
    return xyz.astype(np.float32), (z / focal).astype(np.float32)


SURFACE_STRETCH_MAX = 8.0  # the part of a pixel's surface step along its ray, in pixel footprints, is capped here
# Extent along the normal, in footprints: the ball's, so a surface facing the camera keeps exactly
# the isotropic Gaussian. On the synthetic evaluation 0.2 (a surfel that projects to exactly its
# pixel) gave the same masked PSNR but 0.0002-0.0005 worse masked LPIPS on preview.
SURFACE_THICKNESS = 1.0


def surface_axes(depth: np.ndarray, camera: Camera, stretch_max: float = SURFACE_STRETCH_MAX) -> np.ndarray:
    """Each pixel's patch of surface as three world-space axes (H*W, 3, 3), one per column: the
    derivatives of the lifted point along u and along v (a step of one pixel on the pixel's own
    surface), and the surface normal, ``SURFACE_THICKNESS`` footprints long.

    A ball one footprint wide tiles the photo only where the surface faces the camera. On a slanted
    one (the ground, a river) neighbouring rows lie far apart in depth, and a camera moved closer
    or lower sees them part: rows of half-transparent lines that Blender shows as the world behind.
    Gaussians shaped by these axes tile the surface like a mesh. The derivative of the point
    ``z(u, v) K^-1 (u, v, 1)`` is ``dz/du`` along the ray plus ``z K^-1 e_u``, and the first term
    projects to nothing, so the stretch is invisible from the photo's camera (only the normal's
    extent projects, on a slanted surface).
    ``dz`` is the central difference where both neighbours lie on the pixel's surface (within
    ``multiview.BACKGROUND_RATIO`` in depth), the one-sided one where one does, and 0 where neither
    does, so a depth edge never stretches a Gaussian across it. A step's part along the ray is
    capped at ``stretch_max`` footprints (near a horizon), which leaves its projection unchanged.
    """
    from backend.stages.multiview import BACKGROUND_RATIO

    z = np.asarray(depth, np.float64)
    h, w = z.shape
    ys, xs = np.mgrid[0:h, 0:w]
    K_inv = np.linalg.inv(camera.K)
    rays = np.stack([xs + 0.5, ys + 0.5, np.ones_like(z)], axis=-1) @ K_inv.T
    rays /= rays[..., 2:3]  # camera z = 1: the point is z * ray
    size = z / float(np.sqrt(camera.K[0, 0] * camera.K[1, 1]))
    rot = camera.c2w[:3, :3]

    def on_surface(dz: np.ndarray) -> np.ndarray:
        zn = z + dz
        return np.minimum(z, zn) / np.maximum(z, zn) >= BACKGROUND_RATIO

    steps = []
    for axis in (1, 0):  # u (columns), then v (rows)
        fwd = np.diff(z, axis=axis, append=np.take(z, [-1], axis=axis))  # z(x+1) - z(x)
        bwd = np.diff(z, axis=axis, prepend=np.take(z, [0], axis=axis))  # z(x) - z(x-1)
        edge = [slice(None)] * 2
        edge[axis] = -1
        ok_f = on_surface(fwd)
        ok_f[tuple(edge)] = False  # the border has one neighbour
        edge[axis] = 0
        ok_b = on_surface(-bwd)
        ok_b[tuple(edge)] = False
        dz = np.where(ok_f & ok_b, 0.5 * (fwd + bwd), np.where(ok_f, fwd, np.where(ok_b, bwd, 0.0)))
        # Only the part along the ray is capped: the rest is the step across it, which projects to
        # exactly one pixel, so a capped Gaussian still covers its pixel in the photo.
        along = np.linalg.norm(rays, axis=-1) * np.abs(dz)
        dz *= np.minimum(1.0, stretch_max * size / np.maximum(along, 1e-12))
        step = dz[..., None] * rays + z[..., None] * K_inv[:, 1 - axis]
        steps.append(step @ rot.T)
    normal = np.cross(steps[0], steps[1])
    normal *= (SURFACE_THICKNESS * size / np.maximum(np.linalg.norm(normal, axis=-1), 1e-12))[..., None]
    return np.stack([steps[0], steps[1], normal], axis=-1).reshape(-1, 3, 3).astype(np.float32)


MARGIN_SHIFT = 0.1  # camera translation (depth-normalised units) the margin covers at depth 1
MARGIN_STRIDE = 2  # the margin is sampled every 2 pixels: it is seen only from the side, at 1/4 the cost


def lift_margin(rgb: np.ndarray, depth: np.ndarray, camera: Camera, shift: float = MARGIN_SHIFT,
                stride: int = MARGIN_STRIDE, mask: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points of a ring around the photo, outside its frustum: scenery for cameras that look past it.

    The canvas is widened by ``shift`` x focal pixels per side (what a camera moved by ``shift``
    sees beyond the photo at depth 1, the near content). Colours continue the photo by
    reflection, so its texture goes on instead of an edge pixel smeared into streaks; depth
    continues the border row or column, so a surface at the edge extends at its own depth and the
    sky stays on its far shell. The motion ``mask`` is reflected with the colours, so the water or
    clouds that the ring continues are fluid too (``motion_field.VelocityField`` carries them on
    past the edge). Returns (xyz, rgb, pixel_size, moving) of the ring only.
    """
    h, w = depth.shape
    m = int(np.ceil(shift * float(camera.K[0, 0])))
    if m <= 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32), np.zeros(0, np.float32), np.zeros(0, bool)
    col = cv2.copyMakeBorder(np.asarray(rgb, np.float32), m, m, m, m, cv2.BORDER_REFLECT_101)
    dep = cv2.copyMakeBorder(np.asarray(depth, np.float32), m, m, m, m, cv2.BORDER_REPLICATE)
    ys, xs = np.mgrid[0:h + 2 * m:stride, 0:w + 2 * m:stride]
    ring = (xs < m) | (xs >= w + m) | (ys < m) | (ys >= h + m)
    ys, xs = ys[ring], xs[ring]
    xyz, size = _backproject(xs - m + 0.5 * stride, ys - m + 0.5 * stride, dep[ys, xs], camera)
    moving = np.zeros(len(ys), bool)
    if mask is not None:
        fluid = cv2.copyMakeBorder(np.asarray(mask, np.uint8), m, m, m, m, cv2.BORDER_REFLECT_101)
        moving = fluid[ys, xs] > 0
    return xyz, col[ys, xs].astype(np.float32), size * stride, moving


def lift_behind_edges(rgb: np.ndarray, depth: np.ndarray, camera: Camera, shift: float = MARGIN_SHIFT,
                      exclude: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points of the far surface continued behind each depth edge: what a moving camera uncovers.

    One point per pixel is a single layer: from a moved camera the far side of a depth step shows
    through the gap the parallax opens, a crack narrower than a pixel near the photo's camera (dark
    in any renderer that composites over a background, Blender's included) and a strip of several
    pixels at the paths' extremes. Here the near side of every step, as wide as a camera moved by
    ``shift`` opens it there (``f * shift * (1/z_near - 1/z_far)`` pixels), is filled from the far
    side as the pseudo views are filled (``multiview.fill_holes``: the background's depth, and its
    colour inpainted without the near surface), and lifted at that depth: a second layer,
    hidden from the photo's camera behind the near surface. Near pixels in ``exclude`` (the motion
    mask) get none. Returns (xyz, rgb, pixel_size, moving): ``moving`` marks the points whose far
    side is in ``exclude`` (filled from the far side like the depth) and whose fluid goes on round the
    occluder (the water behind a boulder): they lie on that fluid's surface continued behind it.
    """
    from backend.stages.multiview import BACKGROUND_RATIO, fill_holes

    z = np.asarray(depth, np.float32)
    f = float(np.sqrt(camera.K[0, 0] * camera.K[1, 1]))
    # Each pixel's farthest 4-neighbour; a step is where that is beyond the background ratio.
    pad = np.pad(z, 1, mode="edge")
    far_nb = np.max([pad[:-2, 1:-1], pad[2:, 1:-1], pad[1:-1, :-2], pad[1:-1, 2:]], axis=0)
    edge = z < BACKGROUND_RATIO * far_nb
    empty = np.zeros((0, 3), np.float32)
    if not edge.any() or shift <= 0:
        return empty, empty.copy(), np.zeros(0, np.float32), np.zeros(0, bool)
    gap = np.zeros_like(z)
    # Capped at the margin ring's width (a near surface at depth 1 against the sky), so a close
    # foreground does not double its own point count for parallax no preset path reaches.
    gap[edge] = np.minimum(np.ceil(f * shift * (1.0 / z[edge] - 1.0 / far_nb[edge])), np.ceil(f * shift))
    # Each near pixel joins the band of its nearest edge pixel when within that edge's gap and in
    # front of its far surface.
    dist, labels = cv2.distanceTransformWithLabels((~edge).astype(np.uint8), cv2.DIST_L2, 5,
                                                   labelType=cv2.DIST_LABEL_PIXEL)
    ey, ex = np.nonzero(edge)
    by_label = np.zeros((labels.max() + 1, 2), np.float32)  # label -> (gap, far depth)
    by_label[labels[ey, ex]] = np.stack([gap[ey, ex], far_nb[ey, ex]], axis=1)
    near_gap, near_far = by_label[labels, 0], by_label[labels, 1]
    band = (dist <= near_gap) & (z < BACKGROUND_RATIO * near_far)
    fluid = None if exclude is None else np.asarray(exclude, bool)
    if fluid is not None:
        band &= ~fluid
    filled, fz = fill_holes(np.asarray(rgb, np.float32), np.where(band, 0.0, z), ~band, inpaint=True)
    behind = band & (fz * BACKGROUND_RATIO > z)  # filled from the far side, not from the near surface
    ys, xs = np.nonzero(behind)
    moving = np.zeros(len(ys), bool)
    far = fz[ys, xs]
    if fluid is not None and fluid.any():  # the band never holds fluid, so this is fluid outside it
        fm, _ = fill_holes(fluid.astype(np.float32), np.where(band, 0.0, z), ~band)
        moving = fm[ys, xs] > 0.5
        # Fluid goes on behind the occluder on its own surface, not at the far pixels' depth. Without
        # one (the same fluid not on both sides) the point stays still scenery: moving at the fill's
        # depth, below the fluid's surface, it would come out in the wrong place.
        surface = _surface_across(z, fluid)[ys, xs]
        moving &= surface * BACKGROUND_RATIO > z[ys, xs]
        far = np.where(moving, surface, far)
    xyz, size = _backproject(xs + 0.5, ys + 0.5, far, camera)
    return xyz, filled[ys, xs].astype(np.float32), size, moving


def _surface_across(depth: np.ndarray, fluid: np.ndarray) -> np.ndarray:
    """The fluid's depth continued across the pixels outside ``fluid``: inverse depth (affine in the
    image on a plane) interpolated between the nearest fluid pixels along the row, else the column;
    0 where neither has the same fluid on both sides. Two regions of the mask are two surfaces: a
    column from the sky down to a lake across a mountain continues neither."""
    from scipy.ndimage import label

    from backend.stages.multiview import _nearest_valid_along

    inv = np.where(fluid, 1.0 / np.maximum(depth, 1e-6), 0.0)
    region = label(fluid, structure=np.ones((3, 3), bool))[0]
    out = np.zeros(depth.shape, np.float32)
    H, W = depth.shape
    for axis in (1, 0):
        lo, hi = _nearest_valid_along(fluid, axis, False), _nearest_valid_along(fluid, axis, True)
        ok = (lo >= 0) & (hi >= 0) & (out == 0)
        pos = np.broadcast_to(np.arange(depth.shape[axis]).reshape((1, -1) if axis == 1 else (-1, 1)), depth.shape)
        lo_, hi_ = np.where(ok, lo, 0), np.where(ok, hi, 0)
        if axis == 1:
            rows = np.arange(H)[:, None]
            a, b = inv[rows, lo_], inv[rows, hi_]
            ok &= region[rows, lo_] == region[rows, hi_]
        else:
            cols = np.arange(W)[None, :]
            a, b = inv[lo_, cols], inv[hi_, cols]
            ok &= region[lo_, cols] == region[hi_, cols]
        w = np.where(hi_ > lo_, (pos - lo_) / np.maximum(hi_ - lo_, 1), 0.0)
        val = a + w * (b - a)
        out[ok] = 1.0 / np.maximum(val[ok], 1e-6)
    return out


# ----------------------------------------------------------------------------- the stage

INPUTS = ("image", "depth")


def run(ctx, image, depth) -> PointCloud:
    return lift_to_points(image.rgb, depth.depth, image.camera)
