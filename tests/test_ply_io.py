"""3DGS PLY export: exact round trip, standard layout, tolerant reading, Blender's importer."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from backend.infra.errors import LoopscapeError
from backend.model.gaussians import Gaussians, from_points
from backend.io.ply import PROPERTIES, read_gaussians_ply, write_gaussians_ply


def random_gaussians(n: int = 2000, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=torch.randn(n, 3, generator=g) * 3,
        quats=torch.randn(n, 4, generator=g),
        log_scales=torch.randn(n, 3, generator=g) - 4,
        logit_opacities=torch.randn(n, generator=g) * 2,
        sh0=torch.randn(n, 3, generator=g),
    )


def test_round_trip_is_exact(tmp_path):
    g = random_gaussians()
    path = tmp_path / "sub" / "g.ply"
    write_gaussians_ply(path, g)
    assert [p.name for p in path.parent.iterdir()] == ["g.ply"]  # no temp left
    assert path.stat().st_size == len(g) * 17 * 4 + len(path.read_bytes().split(b"end_header\n")[0]) + 11
    back = read_gaussians_ply(path)
    for name in g.param_names:
        assert torch.equal(getattr(back, name), getattr(g, name)), name
    assert len(back.moving) == len(g) and not back.moving.any()
    # and the Gaussians render the same after the trip (what a viewer sees)
    pts = from_points(np.random.default_rng(0).random((50, 3)).astype(np.float32) + [0, 0, 2],
                      np.random.default_rng(1).random((50, 3)).astype(np.float32), np.full(50, 0.01, np.float32))
    write_gaussians_ply(path, pts)
    b2 = read_gaussians_ply(path)
    for name in pts.param_names:
        assert torch.equal(getattr(b2, name), getattr(pts, name))


def test_standard_layout(tmp_path):
    g = random_gaussians(300)
    path = tmp_path / "g.ply"
    write_gaussians_ply(path, g)
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    assert "format binary_little_endian 1.0" in header
    assert "element vertex 300" in header
    ply = PlyData.read(str(path))
    assert [el.name for el in ply.elements] == ["vertex"]
    v = ply["vertex"]
    assert tuple(p.name for p in v.properties) == PROPERTIES
    assert all(p.val_dtype == "f4" for p in v.properties)
    assert v.data.dtype == np.dtype([(p, "<f4") for p in PROPERTIES])
    np.testing.assert_array_equal(v["x"], g.means[:, 0].numpy())
    np.testing.assert_array_equal(v["opacity"], g.logit_opacities.numpy())  # logit, as 3DGS stores it
    np.testing.assert_array_equal(v["scale_2"], g.log_scales[:, 2].numpy())  # log scales
    np.testing.assert_array_equal(v["rot_0"], g.quats[:, 0].numpy())  # w first
    np.testing.assert_array_equal(v["f_dc_1"], g.sh0[:, 1].numpy())
    assert not np.any(v["nx"]) and not np.any(v["ny"]) and not np.any(v["nz"])


def test_reads_foreign_files_with_extra_properties_and_no_normals(tmp_path):
    n = 100
    rng = np.random.default_rng(3)
    names = (["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)]
             + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    data = np.empty(n, dtype=[(k, "<f8" if k in ("x", "y", "z") else "<f4") for k in names])
    for k in names:
        data[k] = rng.standard_normal(n)
    path = tmp_path / "foreign.ply"
    PlyData([PlyElement.describe(data, "vertex")], text=False).write(str(path))
    g = read_gaussians_ply(path)
    assert len(g) == n and g.means.dtype == torch.float32
    np.testing.assert_allclose(g.means[:, 1].numpy(), data["y"].astype(np.float32))
    np.testing.assert_array_equal(g.quats[:, 3].numpy(), data["rot_3"])
    np.testing.assert_array_equal(g.logit_opacities.numpy(), data["opacity"])
    # ASCII files work too
    PlyData([PlyElement.describe(data, "vertex")], text=True).write(str(tmp_path / "ascii.ply"))
    assert torch.allclose(read_gaussians_ply(tmp_path / "ascii.ply").sh0, g.sh0)


def test_read_errors(tmp_path):
    with pytest.raises(LoopscapeError, match="does not exist"):
        read_gaussians_ply(tmp_path / "nope.ply")
    (tmp_path / "junk.ply").write_bytes(b"not a ply at all")
    with pytest.raises(LoopscapeError, match="not a readable PLY"):
        read_gaussians_ply(tmp_path / "junk.ply")
    pts = np.zeros(4, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1")])
    PlyData([PlyElement.describe(pts, "vertex")]).write(str(tmp_path / "cloud.ply"))
    with pytest.raises(LoopscapeError, match="lacks the Gaussian properties f_dc_0"):
        read_gaussians_ply(tmp_path / "cloud.ply")
    g = random_gaussians(5)
    g.means[2, 0] = float("nan")
    with pytest.raises(LoopscapeError, match="NaN"):
        write_gaussians_ply(tmp_path / "nan.ply", g)
    assert not (tmp_path / "nan.ply").exists()


@pytest.mark.blender
@pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="bpy is not installed")
def test_blender_ply_importer_reads_it(tmp_path):
    g = random_gaussians(777)
    path = tmp_path / "g.ply"
    write_gaussians_ply(path, g)
    probe = Path(__file__).parent / "blender" / "probes" / "ply_import.py"
    run = subprocess.run([sys.executable, str(probe), str(path)], capture_output=True, text=True, timeout=240)
    line = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT")]
    assert run.returncode == 0 and line, run.stdout[-2000:] + run.stderr[-2000:]
    res = json.loads(line[0][6:])
    assert res["type"] == "MESH" and res["n"] == 777
    assert "opacity" in res["attrs"] and "scale_0" in res["attrs"] and "rot_3" in res["attrs"]
    np.testing.assert_allclose(res["opacity"], g.logit_opacities[:5].numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.reshape(res["co"], (2, 3)), g.means[:2].numpy(), rtol=1e-6)
