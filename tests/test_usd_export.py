"""USD export: the stage as pxr reads it, atomic writes, and Blender's importer (bpy, in a subprocess)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.infra.errors import LoopscapeError
from backend.model.gaussians import Gaussians, rgb_to_sh0
from backend.io.usd import PRIM_PATH, gaussians_to_frame, write_usd_points

P, F = 40, 5


def make_frames(seed=0):
    rng = np.random.default_rng(seed)
    colors = rng.random((P, 3)).astype(np.float32)  # constant over time: written once
    frames = []
    for _ in range(F):
        q = rng.normal(size=(P, 4))
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        frames.append((rng.normal(size=(P, 3)).astype(np.float32) + [0, 0, 3], rng.random(P).astype(np.float32),
                       (0.01 + 0.1 * rng.random((P, 3))).astype(np.float32), q.astype(np.float32), colors))
    return frames


def test_stage_round_trips_with_pxr(tmp_path):
    from pxr import Usd, UsdGeom

    frames = make_frames()
    out = tmp_path / "points.usdc"
    out.write_bytes(b"old")  # an existing file is replaced whole
    write_usd_points(out, frames, fps=24, frame_start=1)
    assert sorted(os.listdir(tmp_path)) == ["points.usdc"]  # no temp files left behind

    st = Usd.Stage.Open(str(out))
    assert UsdGeom.GetStageUpAxis(st) == UsdGeom.Tokens.z and UsdGeom.GetStageMetersPerUnit(st) == 1.0
    assert st.GetTimeCodesPerSecond() == 24 and st.GetStartTimeCode() == 1 and st.GetEndTimeCode() == F
    pts = UsdGeom.Points(st.GetPrimAtPath(PRIM_PATH))
    assert pts.GetPointsAttr().GetTimeSamples() == [float(k) for k in range(1, F + 1)]
    pv = UsdGeom.PrimvarsAPI(pts.GetPrim())
    for k in (0, 3):
        pos, op, sc, q, col = frames[k]
        tc = 1 + k
        np.testing.assert_allclose(np.array(pts.GetPointsAttr().Get(tc)), pos, rtol=1e-6)
        np.testing.assert_allclose(np.array(pv.GetPrimvar("opacity").Get(tc)), op, rtol=1e-6)
        np.testing.assert_allclose(np.array(pv.GetPrimvar("scales").Get(tc)), sc, rtol=1e-6)
        np.testing.assert_allclose(np.array(pts.GetWidthsAttr().Get(tc)), 2 * sc.max(1), rtol=1e-6)
        got = pv.GetPrimvar("orient").Get(tc)
        wxyz = np.array([[g.GetReal(), *g.GetImaginary()] for g in got])
        np.testing.assert_allclose(wxyz, q, atol=1e-6)
        np.testing.assert_allclose(np.array(pv.GetPrimvar("displayColor").Get(tc)), col, rtol=1e-6)
    assert pv.GetPrimvar("displayColor").GetAttr().GetNumTimeSamples() == 0  # constant: one default value
    assert pv.GetPrimvar("orient").GetTypeName().type.typeName == "VtArray<GfQuatf>"


def test_rejects_inconsistent_frames(tmp_path):
    frames = make_frames()
    bad = list(frames[1])
    bad[0] = bad[0][:-1]
    with pytest.raises(LoopscapeError, match="frame 1 positions"):
        write_usd_points(tmp_path / "x.usd", [frames[0], tuple(bad)], fps=24)
    with pytest.raises(LoopscapeError, match="extension"):
        write_usd_points(tmp_path / "x.ply", frames, fps=24)
    assert not list(tmp_path.iterdir())


def test_gaussians_to_frame_activates():
    g = Gaussians(means=torch.tensor([[0.0, 1.0, 2.0]]), quats=torch.tensor([[2.0, 0.0, 0.0, 0.0]]),
                  log_scales=torch.log(torch.tensor([[0.1, 0.2, 0.3]])), logit_opacities=torch.tensor([0.0]),
                  sh0=rgb_to_sh0(torch.tensor([[0.2, 0.4, 0.6]])))
    f = gaussians_to_frame(g)
    np.testing.assert_allclose(f.opacity, [0.5])
    np.testing.assert_allclose(f.scales, [[0.1, 0.2, 0.3]], rtol=1e-6)
    np.testing.assert_allclose(f.orientations, [[1, 0, 0, 0]])
    np.testing.assert_allclose(f.colors, [[0.2, 0.4, 0.6]], rtol=1e-5)


@pytest.mark.blender
def test_blender_imports_an_animated_point_cloud(tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import bpy"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("bpy is not installed")
    frames = make_frames(1)
    path = write_usd_points(tmp_path / "loop.usdc", frames, fps=24, frame_start=1)
    script = Path(__file__).parent / "blender" / "probes" / "usd_import.py"
    r = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=300)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(line[0][len("RESULT"):])
    assert res["frame_range"] == [1, F]
    (ob,) = [o for o in res["objects"] if o["type"] == "POINTCLOUD"]
    assert "MESH_SEQUENCE_CACHE" in ob["modifiers"]
    np.testing.assert_allclose(ob["matrix"], np.eye(4), atol=1e-7)  # Z-up, 1 m/unit: no import transform
    for k in range(F):
        rec = res["frames"][str(1 + k)]
        pos, op, sc, q, _ = frames[k]
        assert rec["attrs"]["orient"] == ["QUATERNION", "POINT"]
        np.testing.assert_allclose(rec["position"], pos, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.array(rec["opacity"])[:, 0], op, rtol=1e-6)
        np.testing.assert_allclose(np.array(rec["radius"])[:, 0], sc.max(1), rtol=1e-6)
        np.testing.assert_allclose(rec["scales"], sc, rtol=1e-6)
        np.testing.assert_allclose(rec["orient"], q, atol=1e-6)  # Blender keeps wxyz
