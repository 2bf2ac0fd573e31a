"""Issue 13: Solid mode shows the splats' colours; playback cost of a 1280x720-sized result (opt-in)."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from test_blender_support import (ROOT, have_bpy, load_png, psnr, render_reference, run_scenario, synthetic_frames,
                                  write_fake_result)

pytestmark = [pytest.mark.blender, pytest.mark.skipif(not have_bpy(), reason="bpy is not installed")]
W, H = 64, 48


@pytest.fixture(scope="module")
def solid(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("blender_viewport")
    syn = synthetic_frames(W, H, 2)
    res = write_fake_result(tmp / "result", syn)
    from test_blender_import import _add_usd

    _add_usd(res, syn)
    out = run_scenario("viewport", tmp, {"result": str(res), "dir": str(tmp)})
    keep = ROOT / "test_output" / "blender"
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("solid_flat", "solid_studio", "solid_material"):
        shutil.copy(tmp / f"{name}.png", keep / f"{name}.png")
    ref = render_reference(syn["frames"][0], syn["K"], np.eye(4), W, H)
    return {"out": out, "tmp": tmp, "ref": ref, "n": len(syn["frames"][0]["means"])}


def test_viewport_mesh_carries_the_splat_colours(solid):
    out = solid["out"]
    assert out["import"] == "FINISHED"
    assert out["color_type"] in ("VERTEX", "ATTRIBUTE"), "the importer switches Solid shading to Attribute"
    assert out["quads"] == solid["n"], "one quad per splat in the viewport mesh"
    assert out["active_color"] == "ls_color"
    assert out["color_err"] < 1e-4
    assert out["exact_instances"] == out["exact_quads"] == solid["n"], "Viewport Preview off: one instance per splat"


def test_solid_mode_shows_the_picture(solid):
    tmp, ref = solid["tmp"], solid["ref"]
    flat, studio = load_png(tmp / "solid_flat.png"), load_png(tmp / "solid_studio.png")
    grey = load_png(tmp / "solid_material.png")
    # Opaque quads (Solid mode has no Gaussian falloff) give a blockier picture than the splats.
    print(f"Solid (flat light) vs backend: {psnr(flat, ref):.1f} dB; studio light {psnr(studio, ref):.1f} dB; "
          f"material colour (before): {psnr(grey, ref):.1f} dB")
    assert psnr(flat, ref) >= 20.0
    assert psnr(flat, ref) > psnr(grey, ref) + 6.0
    assert np.corrcoef(studio.reshape(-1), ref.reshape(-1))[0, 1] > 0.8


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("LOOPSCAPE_BENCH") != "1", reason="benchmark: set LOOPSCAPE_BENCH=1")
def test_playback_frame_time_1280x720(tmp_path):
    """Viewport evaluation per frame for a 1280x720 result: 921,600 still + 2 x 30% moving Gaussians."""
    from backend.io.usd import PointFrame, write_usd_points

    rng = np.random.default_rng(0)
    still, moving = 1280 * 720, int(0.3 * 1280 * 720)
    n = still + 2 * moving
    means = np.concatenate([rng.uniform(-1, 1, (n, 2)), rng.uniform(2, 4, (n, 1))], 1).astype(np.float32)
    g = dict(opacity=np.full(n, 0.9, np.float32), scales=np.full((n, 3), 0.003, np.float32),
             orientations=np.tile(np.float32([1, 0, 0, 0]), (n, 1)), colors=rng.random((n, 3), dtype=np.float32))
    frames = []
    for i in range(4):
        m = means.copy()
        m[still:, 0] += 0.002 * i
        frames.append(PointFrame(positions=m, **g))
    (tmp_path / "result").mkdir()
    write_usd_points(tmp_path / "result" / "scene.usdc", frames, 24.0)
    (tmp_path / "result" / "result.json").write_text(json.dumps(
        {"camera": {"K": [[1100, 0, 640], [0, 1100, 360], [0, 0, 1]], "width": 1280, "height": 720},
         "frames": 4, "fps": 24, "usd": "scene.usdc", "ply_frames": []}))
    out = run_scenario("viewport", tmp_path, {"result": str(tmp_path / "result"), "mode": "bench"}, timeout=1200)
    ms = {k: [round(1000 * t) for t in out[k]] for k in ("frame_s", "frame_s_all", "frame_s_cache",
                                                         "frame_s_instances")}
    print(f"\n{n} points: import {out['import_s']:.1f} s; per-frame viewport evaluation in ms: "
          f"preview of {out['quads']} splats {ms['frame_s']}; preview of all {out['quads_all']} {ms['frame_s_all']}; "
          f"point stream alone {ms['frame_s_cache']}; exact instances, not drawn {ms['frame_s_instances']}")
    assert out["quads_all"] == n and out["quads"] <= 250_000
