"""Stage ``export``: the result's files, staged for the atomic publish.

For a loop, the compact layout of ``backend.io.loop_export`` (static Gaussians once, the moving
ones per frame as two layers; every frame as a full PLY only with ``full_ply_sequence``), plus
frame N as ``loop_end.ply`` for anyone checking the loop closure; for a still, one PLY and a
one-frame USD. Then the path video, the input-view video, PNG frames on request, and the contact
sheet ``preview.png`` with its looping ``preview.webp``. Returns the result.json entries for those files.
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
    loop = None if gaussians4d is None else gaussians4d.loop.to(ctx.device)
    progress = lambda f: ctx.events.progress("export", f)  # noqa: E731
    if loop is not None:  # the compact loop layout (backend.io.loop_export)
        from backend.io.loop_export import write_loop_ply

        result: dict = write_loop_ply(staging, loop, job.full_ply_sequence, progress)
        write_gaussians_ply(staging / "ply" / "loop_end.ply", loop_end_frame(loop).to("cpu"))
        result[protocol.KEY_PLY_LOOP_END] = "ply/loop_end.ply"
    else:
        (staging / "ply").mkdir()
        write_gaussians_ply(staging / "ply" / "frame_0000.ply", gaussians3d.gaussians.to("cpu"))
        result = {protocol.KEY_PLY_FRAMES: ["ply/frame_0000.ply"]}
        progress(0.8)
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
        if loop is not None:
            from backend.io.loop_export import write_loop_usd

            write_loop_usd(staging / "scene.usdc", loop, job.fps, protocol.USD_FRAME_START)
        else:
            write_usd_points(staging / "scene.usdc", [gaussians_to_frame(gaussians3d.gaussians.to("cpu"))], job.fps,
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
