"""Import time and memory of a large result, and the cost of evaluating every frame."""
from __future__ import annotations

import time

import bpy
from kit import Context, splat_count


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(ctx: Context) -> None:
    scene, args, out = ctx.scene, ctx.args, ctx.out
    out["rss_before"] = _status_mb("VmRSS")
    t = time.time()
    out["import"] = ctx.call(bpy.ops.loopscape.import_result, directory=args["result"], source=args["source"])
    out["import_s"] = time.time() - t
    out["rss_after_import"] = _status_mb("VmRSS")
    obj = scene.loopscape.result_object
    t = time.time()
    counts = []
    for f in range(scene.frame_start, scene.frame_start + args["frames"]):
        scene.frame_set(f)
        counts.append(splat_count(obj))
    out["frames_s"] = time.time() - t
    out["instances"] = [min(counts), max(counts)]
    out["rss_after_frames"] = _status_mb("VmRSS")
    out["peak"] = _status_mb("VmHWM")
