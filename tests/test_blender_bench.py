"""Import time and memory for a result of ~100k points x 60 frames (USD and PLY sources).

Opt-in (it writes ~400 MB of PLY frames): LOOPSCAPE_BENCH=1 pytest -s tests/test_blender_bench.py
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from test_blender_support import have_bpy, run_scenario, write_ply

pytestmark = [pytest.mark.blender, pytest.mark.slow,
              pytest.mark.skipif(not have_bpy(), reason="bpy is not installed in .venv"),
              pytest.mark.skipif(os.environ.get("LOOPSCAPE_BENCH") != "1", reason="benchmark: set LOOPSCAPE_BENCH=1")]
POINTS, FRAMES, MOVING = 100_000, 60, 0.3



def _write(res, source):
    rng = np.random.default_rng(0)
    means = rng.uniform(-1, 1, (POINTS, 3)) + [0, 0, 3]
    moving = rng.random(POINTS) < MOVING
    g = {"quats": np.tile([1.0, 0, 0, 0], (POINTS, 1)), "scales": np.full((POINTS, 3), 0.01),
         "opacities": np.full(POINTS, 0.9), "rgb": rng.random((POINTS, 3))}
    res.mkdir(parents=True)
    frames = []
    for i in range(FRAMES):
        m = means.copy()
        m[moving, 0] += 0.001 * i
        frames.append(dict(g, means=m))
    meta = {"camera": {"K": [[300, 0, 160], [0, 300, 120], [0, 0, 1]], "width": 320, "height": 240},
            "frames": FRAMES, "fps": 24, "usd": None, "ply_frames": []}
    if source == "ply":
        (res / "ply").mkdir()
        for i, fr in enumerate(frames):
            write_ply(res / f"ply/{i:04d}.ply", fr)
            meta["ply_frames"].append(f"ply/{i:04d}.ply")
    else:
        from backend.io.usd import PointFrame, write_usd_points

        write_usd_points(res / "scene.usdc", [PointFrame(fr["means"].astype(np.float32), fr["opacities"].astype(np.float32),
                                                        fr["scales"].astype(np.float32), fr["quats"].astype(np.float32),
                                                        fr["rgb"].astype(np.float32)) for fr in frames], 24.0)
        meta["usd"] = "scene.usdc"
    (res / "result.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("source", ["usd", "ply"])
def test_import_100k_points_60_frames(tmp_path, source):
    _write(tmp_path / "result", source)
    out = run_scenario("import_bench", tmp_path, {"result": str(tmp_path / "result"), "frames": FRAMES, "source": source},
                       timeout=900)
    print(f"\n{source}: import {out['import_s']:.2f} s, RSS {out['rss_before']:.0f} -> {out['rss_after_import']:.0f} MB "
          f"after import, {out['rss_after_frames']:.0f} MB after evaluating all {FRAMES} frames "
          f"({out['frames_s']:.2f} s, {out['frames_s'] / FRAMES * 1000:.0f} ms/frame), peak {out['peak']:.0f} MB, "
          f"instances per frame {out['instances']}")
    assert out["import"] == "FINISHED"
    assert out["instances"] == [POINTS, POINTS]
