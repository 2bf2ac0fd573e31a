"""Fill what a camera sees beyond the Gaussians' extent, for the backend's own video frames.

Path cameras move away from the photo's frustum, and at their extremes part of the frame sees no
Gaussian at all (on the synthetic circle path up to 6% of a frame). Rendered over black, those
strips flash in and out as the camera moves. Here the render is composited over a hole-filled
copy of itself: pixels that are mostly uncovered take the background-side fill of
``multiview.fill_holes``, the same fill as the pseudo views the Gaussians were trained on.

Pixels that are mostly covered show their own colour un-premultiplied. A moved camera sees
between a near and a far surface through cracks narrower than a pixel (alpha 0.7-0.8 at a depth
step of the real scene 3dmom_scene_0 on the circle path); over black they were dark lines a pixel
wide and tens of pixels long.
"""
from __future__ import annotations

import numpy as np

from backend.stages.multiview import fill_holes

COVERED_ALPHA = 0.5  # a pixel at least this opaque is observed; its un-premultiplied colour seeds the fill


def composite_over_fill(colors: np.ndarray, alpha: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, float]:
    """``colors`` (H, W, 3) rendered over black, ``alpha``/``depth`` (H, W) or (H, W, 1).

    Returns the frame composited over its hole fill, and the uncovered share of pixels.
    """
    a = np.asarray(alpha, np.float32).reshape(colors.shape[:2])
    z = np.asarray(depth, np.float32).reshape(colors.shape[:2])
    covered = a >= COVERED_ALPHA
    straight = np.where(covered[..., None], colors / np.maximum(a, 1e-6)[..., None], 0.0).astype(np.float32)
    if covered.all():  # still un-premultiplied (cracks) and clipped (a saturated sky renders a few % above 1.0)
        return np.clip(straight, 0.0, 1.0), 0.0
    fill, _ = fill_holes(np.clip(straight, 0.0, 1.0), np.where(covered, z, 0.0), covered, inpaint=True)
    out = colors + (1.0 - a)[..., None] * fill
    return np.clip(out, 0.0, 1.0).astype(np.float32), float(1.0 - covered.mean())
