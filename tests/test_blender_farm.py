"""A shot on a render farm (issue 13): pack it with Blender Asset Tracer, move the result folder away,
render the packed copy; and a shot whose cache is missing must not render a plausible frozen frame.

Blender Asset Tracer (``bat pack``, what Flamenco uses) rewrites the CacheFile path it finds and
nothing else, so the add-on derives every other path from that one.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from test_blender_support import (PY, ROOT, have_bpy, load_png, psnr, render_reference, run_scenario, save_png,
                                  synthetic_frames, write_fake_result)

pytestmark = [pytest.mark.blender, pytest.mark.skipif(not have_bpy(), reason="bpy is not installed")]
W, H, N = 64, 48, 16


def _bat() -> list[str]:
    """The `bat` command of the test interpreter's environment (blender-asset-tracer, a dev extra)."""
    try:
        import blender_asset_tracer  # noqa: F401
    except ImportError:
        pytest.skip("blender-asset-tracer is not installed (pip install 'blender-asset-tracer[zstandard]')")
    return [sys.executable, "-c", "import sys; from blender_asset_tracer.cli import cli_main; sys.exit(cli_main())"]


def _one_cloud_result(tmp) -> "Path":
    """A one-cloud USD result (the layout before loop layers, still imported)."""
    from test_blender_import import _add_usd

    syn = synthetic_frames(W, H, N)
    res = write_fake_result(tmp / "result", syn)
    _add_usd(res, syn)
    return res


def _layered_result(tmp) -> "Path":
    """What the backend writes today: a tiny real preview loop in the compact layout (static, forward, backward)."""
    import cv2

    syn = synthetic_frames(W, H, 1)
    save_png(tmp / "photo.png", render_reference(syn["frames"][0], syn["K"], np.eye(4), W, H))
    mask = np.zeros((H, W), np.uint8)
    mask[H // 2:, :] = 255
    cv2.imwrite(str(tmp / "mask.png"), mask)
    env = dict(os.environ, PYTHONPATH=str(ROOT), LOOPSCAPE_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([str(PY), "-m", "backend", "run", "--image", str(tmp / "photo.png"), "--mask",
                           str(tmp / "mask.png"), "--hint", "2,36,62,36,1.5", "--max-side", str(W), "--quality",
                           "preview", "--frames", str(N), "--depth", "prior", "--device", "cpu", "--events", "json",
                           "--out", str(tmp / "result")], cwd=str(ROOT), env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp / "result" / "result.json").read_text()).get("layout")
    return tmp / "result"


@pytest.fixture(scope="module", params=["one-cloud", "layered"])
def farm(request, tmp_path_factory):
    bat = _bat()
    tmp = tmp_path_factory.mktemp(f"blender_farm_{request.param}")
    res = _one_cloud_result(tmp) if request.param == "one-cloud" else _layered_result(tmp)
    project = tmp / "project"
    project.mkdir()
    blend = project / "shot.blend"
    base = {"frames": N, "dir": str(tmp)}
    saved = run_scenario("farm", tmp, dict(base, mode="save", result=str(res), blend=str(blend)))
    packed_dir = tmp / "packed"
    p = subprocess.run([*bat, "pack", "-p", str(project), str(blend), str(packed_dir)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    moved = tmp / "result_moved_away"
    res.rename(moved)  # the farm has the packed copy only
    packed = run_scenario("farm", tmp, dict(base, mode="packed", blend=str(packed_dir / "shot.blend")))
    missing = run_scenario("farm", tmp, dict(base, mode="missing", blend=str(blend)))
    keep = ROOT / "test_output" / "blender"
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("orig_1", f"orig_{N}", f"packed_{N}", f"missing_{N}", f"missing_noaddon_{N}"):
        shutil.copy(tmp / f"{name}.png", keep / f"farm_{request.param}_{name}.png")
    return {"saved": saved, "packed": packed, "missing": missing, "tmp": tmp, "packed_dir": packed_dir,
            "bat_log": p.stdout + p.stderr}


def test_saved_shot_keeps_one_relative_path_and_no_baked_points(farm):
    saved = farm["saved"]
    assert saved["import"] == "FINISHED"
    kept = saved["saved"]
    assert kept["n_caches"] == 1 and kept["n_streamed"] >= 1, kept
    assert kept["cache"].startswith("//") and kept["cache"].endswith("scene.usdc")
    assert kept["result_dir"] == kept["cache"][: -len("/scene.usdc")], "the result folder is the cache's folder"
    assert kept["baked_points"] == 0, "a point cloud baked into the .blend would render frozen without its cache"
    assert "loopscape_result_dir" not in kept["obj_props"], "no second copy of the path for a packer to miss"
    assert not [w for w in saved["warnings"] if "blend relative" in w], saved["warnings"]


def test_packed_copy_renders_the_same_frame_without_the_result_folder(farm):
    packed, tmp = farm["packed"], farm["tmp"]
    kept = packed["packed"]
    assert kept["cache"] != farm["saved"]["saved"]["cache"], f"bat pack did not rewrite the cache:\n{farm['bat_log']}"
    assert kept["result_dir_abs"].startswith(str(farm["packed_dir"])), kept
    assert packed["last_error"] == "", "nothing is missing in the packed copy"
    assert not any("missing" in label for label in packed["panel"])
    orig, again = load_png(tmp / f"orig_{N}.png"), load_png(tmp / f"packed_{N}.png")
    first = load_png(tmp / "orig_1.png")
    print(f"packed frame {N} vs original: {psnr(again, orig):.1f} dB; original frame {N} vs 1: "
          f"{psnr(orig, first):.1f} dB")
    assert psnr(orig, first) < 40.0, "the test needs motion between frame 1 and frame N"
    assert psnr(again, orig) >= 45.0


def test_missing_cache_is_loud_and_renders_no_frozen_frame(farm):
    missing, tmp = farm["missing"], farm["tmp"]
    first = load_png(tmp / "orig_1.png")
    for name in (f"missing_{N}", f"missing_noaddon_{N}"):
        img = load_png(tmp / f"{name}.png")
        magenta = (img[..., 0] > 0.9) & (img[..., 1] < 0.1) & (img[..., 2] > 0.9)
        print(f"{name}: {psnr(img, first):.1f} dB against frame 1, magenta {magenta.mean():.0%}")
        assert psnr(img, first) < 15.0, f"{name} looks like a frame of the shot"
        assert magenta.mean() > 0.95, f"{name}: the missing cache must show as the magenta card"
    assert "point cache" in missing["last_error"] and "missing" in missing["last_error"]
    assert "result_moved_away" not in missing["last_error"]
    assert any(label.startswith("Point cache missing") for label in missing["panel"]), missing["panel"]
