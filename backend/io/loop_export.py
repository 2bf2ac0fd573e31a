"""The compact looping result: static Gaussians once, the moving ones per frame (docs/DESIGN.md).

Written for a loop (``LoopedGaussians``) into the export stage's staging folder:

- ``ply/frame_0000.ply``: frame 0 as a standard 3DGS PLY (static + moving), for any viewer;
- ``ply/static.ply``: the static Gaussians (still ones and the backdrop), a standard 3DGS PLY;
- ``ply/forward.ply``, ``ply/backward.ply``: the moving Gaussians' two loop layers at full opacity,
  each a standard vertex element (frame 0) plus one ``frame_state`` block with what moves per frame
  (``contract.splats.layer_ply_bytes``), written in one pass;
- ``scene.usdc`` (when usd-core is installed): the same three sets as prims, the static one without
  time samples (``backend.io.usd.write_usd_layers``);
- on request (``full_ply_sequence``), one full one-set PLY per frame, ``ply/frame_NNNN.ply``, with the
  copies' opacities split (``LoopedGaussians.frame``) for viewers that play PLY sequences.

Frame t is (1 - w) R(static + forward_t) + w R(static + backward_t), w = t/N: exactly the backend's
``LoopedGaussians.render``, and what Blender reproduces with two view layers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from backend.io.ply import write_gaussians_ply, write_layer_ply
from backend.model.gaussians import Gaussians
from backend.model.motion_field import LoopedGaussians
from contract import protocol

PLY_DIR = "ply"


def write_loop_ply(staging: Path, loop: LoopedGaussians, full_sequence: bool,
                   progress: Callable[[float], None] = lambda f: None) -> dict:
    """The PLY side of the compact layout (and the full sequence on request); result.json entries."""
    layers = loop.to("cpu").loop_layers()
    ply_dir = staging / PLY_DIR
    ply_dir.mkdir(exist_ok=True)
    rel = lambda name: f"{PLY_DIR}/{name}"  # noqa: E731
    write_gaussians_ply(ply_dir / "static.ply", layers.static)
    for which, name in enumerate(("forward", "backward")):
        write_layer_ply(ply_dir / f"{name}.ply", layers.moving, layers.means[which], layers.quats[which],
                        layers.log_scales[which])
    progress(0.3)
    if full_sequence:
        frames = []
        for t in range(loop.n_frames):
            write_gaussians_ply(ply_dir / f"frame_{t:04d}.ply", loop.frame(t).to("cpu"))
            frames.append(rel(f"frame_{t:04d}.ply"))
            progress(0.3 + 0.5 * (t + 1) / loop.n_frames)
    else:
        # Frame 0 alone, as the backend renders it: static + forward layer, nothing hidden.
        write_gaussians_ply(ply_dir / "frame_0000.ply", Gaussians.concat([layers.static, layers.layer(0, 0)]))
        frames = [rel("frame_0000.ply")]
    progress(0.8)
    return {protocol.KEY_LAYOUT: protocol.LAYOUT_LOOP_LAYERS, protocol.KEY_PLY_FRAMES: frames,
            protocol.KEY_FULL_PLY_SEQUENCE: bool(full_sequence),
            protocol.KEY_PLY_STATIC: rel("static.ply"), protocol.KEY_PLY_FORWARD: rel("forward.ply"),
            protocol.KEY_PLY_BACKWARD: rel("backward.ply")}


def write_loop_usd(path: Path, loop: LoopedGaussians, fps: float, frame_start: int) -> None:
    """The three prims of the compact layout as one USD (static un-sampled, layers time-sampled)."""
    from backend.io.usd import LayerStream, gaussians_to_frame, write_usd_layers

    layers = loop.to("cpu").loop_layers()
    as_np = lambda t: None if t is None else t.detach().float().numpy()  # noqa: E731
    streams = []
    for which in (0, 1):  # forward, backward
        q, s = layers.quats[which], layers.log_scales[which]
        streams.append(LayerStream(
            first=gaussians_to_frame(layers.layer(which, 0)), positions=as_np(layers.means[which]),
            orientations=None if q is None else as_np(q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)),
            scales=None if s is None else as_np(torch.exp(s))))
    write_usd_layers(path, gaussians_to_frame(layers.static), streams[0], streams[1], fps, frame_start=frame_start)
