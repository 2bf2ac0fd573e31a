"""The loop blend in Blender as in the backend (issue 13) from the compact layout (issue 9).

A real backend run (a tiny preview loop of the built-in landscape) is imported: static, forward and backward clouds, two view
layers and a compositor mix keyed to t/N. Cycles at the hero camera must match the backend's own
input-view frames (the blend of two renders) at frame 1 and mid-loop; frame 1 must equal the old
full-PLY import, and mid-loop the new blend must be closer to the backend than the old one-set frame.
The saved .blend must render the same after reloading (what a farm does).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from test_blender_support import PY, ROOT, have_bpy, load_png, psnr, run_scenario, save_png

pytestmark = [pytest.mark.blender, pytest.mark.slow,
              pytest.mark.skipif(not have_bpy(), reason="bpy is not installed in .venv")]
W, H, N = 64, 48, 8
MID = N // 2


def backend_frame(res_dir, res: dict, t: int, only: int | None = None) -> np.ndarray:
    """The backend's input-view frame t, from the result's files: (1 - t/N) R(static + forward_t) +
    (t/N) R(static + backward_t), over black (LoopedGaussians.render without the hole fill)."""
    from backend.io.ply import read_gaussians_ply
    from backend.model.camera import Camera
    from backend.model.gaussians import Gaussians
    from backend.model.motion_field import render_blend
    from contract.splats import read_layer_ply

    static = read_gaussians_ply(res_dir / res["ply_static"])
    layers = []
    for key in ("ply_forward", "ply_backward"):
        v, states = read_layer_ply(res_dir / res[key])
        col = lambda *k: torch.from_numpy(np.stack([v[n] for n in k], 1))  # noqa: E731
        moving = Gaussians(means=torch.from_numpy(states["position"][t]), quats=col("rot_0", "rot_1", "rot_2", "rot_3"),
                           log_scales=col("scale_0", "scale_1", "scale_2"), logit_opacities=col("opacity")[:, 0],
                           sh0=col("f_dc_0", "f_dc_1", "f_dc_2"))
        layers.append(Gaussians.concat([static, moving]))
    cam = res["camera"]
    camera = Camera(np.array(cam["K"]), cam["width"], cam["height"])
    if only is not None:  # one layer alone (0 forward, 1 backward)
        return layers[only].render(camera, background=torch.zeros(3)).colors.clamp(0, 1).numpy()
    out = render_blend(tuple(layers), t, res["frames"], camera, background=torch.zeros(3))
    return out.colors.clamp(0, 1).numpy()


@pytest.fixture(scope="module")
def loop_blend(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loop_blend")
    # The built-in landscape (sky, ridges, a lake; its own mask, arrows and true depth): content like
    # a photo's, not a test pattern, at the tiny size.
    from backend.tools.demo_scene import make_demo_scene, write_demo_inputs

    fields = write_demo_inputs(tmp / "demo", make_demo_scene(W, H, seed=4))
    # The mask as painted: the snap stills a ridge pixel or two, which thins the mid-loop change this
    # test needs to tell the blend from frame 1 (the snap has its own tests).
    job = dict(fields, max_side=W, quality="preview", frames=N, device="cpu", full_ply_sequence=True, snap_mask=False)
    (tmp / "job.json").write_text(json.dumps(job))
    res_dir = tmp / "result"
    env = dict(os.environ, PYTHONPATH=str(ROOT), LOOPSCAPE_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([str(PY), "-m", "backend", "run", str(tmp / "job.json"), "--events", "json",
                           "--out", str(res_dir)], cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((res_dir / "result.json").read_text())
    # Today's import, for comparison: the full one-set PLY sequence, no layout, no USD.
    legacy = tmp / "legacy"
    legacy.mkdir()
    (legacy / "ply").symlink_to(res_dir / "ply")
    old = {k: v for k, v in res.items() if k not in ("layout", "usd", "ply_static", "ply_forward", "ply_backward")}
    (legacy / "result.json").write_text(json.dumps(dict(old, usd=None)))
    renders = tmp / "renders"
    renders.mkdir()
    frames = [1, 1 + MID]
    out = run_scenario("loop_blend", tmp, {"result": str(res_dir), "legacy": str(legacy), "frames": N,
                                           "render_frames": frames, "dir": str(renders)}, timeout=900)
    keep = ROOT / "test_output" / "blender" / "loop_blend"
    keep.mkdir(parents=True, exist_ok=True)
    for p in renders.glob("*.png"):
        shutil.copy(p, keep / p.name)
    refs = {f: backend_frame(res_dir, res, f - 1) for f in frames}
    for f, img in refs.items():
        save_png(keep / f"backend_{f:04d}.png", img)
    refs["layers"] = [backend_frame(res_dir, res, MID, only=which) for which in (0, 1)]
    load = lambda kind, f: load_png(renders / f"{kind}_{f:04d}.png")  # noqa: E731
    return {"out": out, "res": res, "refs": refs, "load": load, "frames": frames}


def test_import_builds_three_clouds_two_view_layers_and_a_keyed_mix(loop_blend):
    out = loop_blend["out"]
    assert out["import"] == "FINISHED", out["import"]
    c = out["compact"]
    assert c["view_layers"][-1] == "Loopscape Backward" and len(c["view_layers"]) == 2
    assert c["cache_files"] == 1, "one USD cache: the single path a packing tool rewrites"
    assert c["loop_frames"] == N, "the panel's loop length follows the result, so camera presets match its video"
    names = {o[0]: o for o in c["objects"]}
    assert len(names) == 3
    colls = sorted(tuple(o[3]) for o in c["objects"])
    assert colls == [("Loopscape Backward",), ("Loopscape Forward",), ("Scene Collection",)]
    assert all(o[2][-1] == "NODES" for o in c["objects"]), "every cloud is drawn as splats"
    for f, factor in c["factors"].items():
        assert factor == pytest.approx((int(f) - 1) / N, abs=1e-6), f"frame {f}: factor {factor}"
    assert out["reloaded"]["factors"] == {str(f): v for f, v in c["factors"].items() if int(f) in loop_blend["frames"]}
    # Re-importing a result of the old layout removes the view layer, collections and compositor.
    assert out["legacy_import"] == "FINISHED"
    assert out["legacy"]["view_layers"] == c["view_layers"][:1]
    assert not any(n.startswith("Loopscape") for n in out["legacy"]["collections"])
    assert all(v is None for v in out["legacy"]["factors"].values())


def test_cycles_matches_the_backends_blend_at_frame_1_and_mid_loop(loop_blend):
    first, mid = loop_blend["frames"]
    load, refs = loop_blend["load"], loop_blend["refs"]
    p1 = psnr(load("compact", first), refs[first])
    pm = psnr(load("compact", mid), refs[mid])
    old_mid = psnr(load("legacy", mid), refs[mid])
    still = psnr(load("compact", first), refs[mid])
    layers = [psnr(load(f"layer{v}", mid), r) for v, r in zip((0, 1), refs["layers"])]
    mixed = psnr(load("compact", mid), 0.5 * load("layer0", mid) + 0.5 * load("layer1", mid))
    print(f"Cycles vs backend: frame {first} {p1:.2f} dB, frame {mid} {pm:.2f} dB "
          f"(old one-set import at frame {mid}: {old_mid:.2f} dB; frame 1 vs backend mid: {still:.2f} dB); "
          f"each layer alone at frame {mid}: {layers[0]:.2f} / {layers[1]:.2f} dB; the blend vs the mean of "
          f"Blender's two layer renders: {mixed:.2f} dB")
    assert p1 >= 30.0
    # Issue 13: mid-loop no worse than 0.5 dB below frame 1. (On a high-contrast test pattern both sit
    # near 50 dB and mid-loop is ~2.5 dB lower: Gaussians moved off the pixel grid draw slightly less
    # exactly, each layer alone as much as the blend. On landscape content the two figures agree.)
    assert pm >= p1 - 0.5
    assert mixed >= 50.0, "the compositor must mix the two layer renders exactly (t/N, in display space)"
    assert pm > old_mid, "the two-layer blend must be closer to the backend than the one-set frame"
    assert pm > still + 1.0, "mid-loop must really differ from frame 1 (the check must be able to fail)"


def test_frame_1_equals_the_full_ply_import_and_the_reloaded_shot_renders_the_same(loop_blend):
    first, mid = loop_blend["frames"]
    load = loop_blend["load"]
    same = psnr(load("compact", first), load("legacy", first))
    reloaded = psnr(load("compact", mid), load("reloaded", mid))
    print(f"compact vs full-PLY import at frame {first}: {same:.2f} dB; reloaded .blend at frame {mid}: {reloaded:.2f} dB")
    assert same >= 40.0
    assert reloaded >= 45.0
