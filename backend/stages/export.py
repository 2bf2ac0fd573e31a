"""Stage ``export``: the result's files, staged for the atomic publish.

Per-frame 3DGS PLY files (frame N too, as ``loop_end.ply``, for anyone checking the loop
closure), the path video, the input-view video, PNG frames on request, one time-sampled USD
point stream for Blender, and the contact sheet ``preview.png`` with its looping ``preview.webp``.
Returns the result.json entries for those files.
"""
from __future__ import annotations

from pathlib import Path

from contract import protocol

INPUTS = ("image", "motion", "gaussians3d", "gaussians4d", "validate", "render")


def run(ctx, image, motion, gaussians3d, gaussians4d, validate, render) -> dict:
    from backend.io.contact_sheet import job_summary, write_previews
    from backend.io.ply import write_gaussians_ply
    from backend.io.video import write_mp4, write_png_frames

    job, staging = ctx.job, ctx.staging
    loop = None if gaussians4d is None else gaussians4d.loop
    ply_dir = staging / "ply"
    ply_dir.mkdir()
    frame_sets = loop.frames()[: loop.n_frames] if loop is not None else [gaussians3d.gaussians]
    ply_paths = []
    for i, g in enumerate(frame_sets):
        p = ply_dir / f"frame_{i:04d}.ply"
        write_gaussians_ply(p, g.to("cpu"))
        ply_paths.append(f"ply/{p.name}")
        ctx.events.progress("export", 0.8 * (i + 1) / len(frame_sets))
    result: dict = {protocol.KEY_PLY_FRAMES: ply_paths}
    if loop is not None:
        write_gaussians_ply(ply_dir / "loop_end.ply", loop_end_frame(loop).to("cpu"))
        result[protocol.KEY_PLY_LOOP_END] = "ply/loop_end.ply"
    write_mp4(render.frames, staging / "video.mp4", job.fps)
    result[protocol.KEY_VIDEO] = "video.mp4"
    if validate is not None:
        write_mp4(validate.frames[:-1], staging / "input_view.mp4", job.fps)
        result[protocol.KEY_INPUT_VIEW_VIDEO] = "input_view.mp4"
    if job.png_frames:
        paths = write_png_frames(render.frames, staging / "frames")
        result["png_frames"] = [Path(p).relative_to(staging).as_posix() for p in paths]
    result[protocol.KEY_USD] = None
    try:
        from backend.io.usd import gaussians_to_frame, write_usd_points
    except ImportError:  # usd-core missing: PLY frames remain the exchange format
        ctx.events.warning("usd-core is not installed, so no USD was written; Blender will import the PLY frames.")
    else:
        write_usd_points(staging / "scene.usdc", [gaussians_to_frame(g.to("cpu")) for g in frame_sets], job.fps,
                         frame_start=protocol.USD_FRAME_START)
        result[protocol.KEY_USD] = "scene.usdc"
        result[protocol.KEY_USD_FRAME_START] = protocol.USD_FRAME_START
    W, H = image.image.size
    result.update(write_previews(staging, image.rgb, render.frames, job.fps, motion,
                                 None if validate is None else validate.frames[:-1], job_summary(job, W, H)))
    return result


def loop_end_frame(loop):
    """Frame N built from its own advected state (not wrapped to frame 0), so loop closure can be checked."""
    n = loop.n_frames
    return loop.assemble(n, loop.means[n], None if loop.quats is None else loop.quats[n],
                         None if loop.log_scales is None else loop.log_scales[n])
