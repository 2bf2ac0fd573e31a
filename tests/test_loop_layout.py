"""The compact looping result (backend.io.loop_export): static once, the moving layers per frame.

The files alone must rebuild every frame exactly as the backend renders it (the image-space blend
of two full-opacity layers), the full per-frame sequence stays available on request, the USD keeps
the static prim un-sampled, and the compact folder is much smaller than the full sequence.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.io.loop_export import write_loop_ply, write_loop_usd
from backend.io.ply import read_gaussians_ply
from backend.model.gaussians import Gaussians
from backend.model.motion_field import LoopedGaussians, VelocityField, loop_gaussians, render_blend
from contract import protocol
from contract.splats import FRAME_ELEMENT, USD_PRIMS, read_layer_ply, read_ply, read_ply_elements
from test_motion_field import N, make_scene


def _layer_from_files(static: Gaussians, vertices: dict, states: dict, t: int) -> Gaussians:
    """Static + one layer at frame t, rebuilt from the PLY files alone."""
    col = lambda *k: torch.from_numpy(np.stack([vertices[n] for n in k], 1).astype(np.float32))  # noqa: E731
    moving = Gaussians(means=torch.from_numpy(states["position"][t]),
                       quats=torch.from_numpy(states["rotation"][t]) if "rotation" in states else col(
                           "rot_0", "rot_1", "rot_2", "rot_3"),
                       log_scales=torch.from_numpy(states["scale"][t]) if "scale" in states else col(
                           "scale_0", "scale_1", "scale_2"),
                       logit_opacities=col("opacity")[:, 0], sh0=col("f_dc_0", "f_dc_1", "f_dc_2"))
    return Gaussians.concat([static, moving])


def _deformed(L: LoopedGaussians) -> LoopedGaussians:
    """The same loop with per-frame rotations and scales, and the moving Gaussians' colour and
    opacity changed, as a trained 4D deformation gives."""
    steps = torch.arange(L.n_frames + 1, dtype=torch.float32)[:, None, None]
    canon = L.base.subset(L.moving_idx)
    q = canon.quats.repeat(2, 1)[None] + 0.05 * steps * torch.tensor([0.0, 1.0, 0.0, 0.0])
    s = canon.log_scales.repeat(2, 1)[None] + 0.02 * steps
    b, idx = L.base, L.moving_idx
    base = Gaussians(means=b.means, quats=b.quats, log_scales=b.log_scales,
                     logit_opacities=b.logit_opacities.index_add(0, idx, torch.full((len(idx),), -0.5)),
                     sh0=b.sh0.index_add(0, idx, torch.full((len(idx), 3), 0.3)), moving=b.moving)
    return LoopedGaussians(base, L.n_frames, L.moving_idx, L.means, quats=q, log_scales=s)


def make_loop(kind: str) -> tuple[LoopedGaussians, object]:
    g, vel, mask, cam = make_scene()
    L = loop_gaussians(g, VelocityField(vel, cam, mask), N)
    return (L if kind == "preview" else _deformed(L)), cam


# A parametrised function-scoped fixture would make pytest import the repository's root __init__ (bpy).
KINDS = pytest.mark.parametrize("kind", ["preview", "deformed"])


@KINDS
def test_files_rebuild_every_frame_exactly_as_the_backend_renders_it(kind, tmp_path):
    L, cam = make_loop(kind)
    res = write_loop_ply(tmp_path, L, full_sequence=False)
    assert res[protocol.KEY_LAYOUT] == protocol.LAYOUT_LOOP_LAYERS
    assert res[protocol.KEY_PLY_FRAMES] == ["ply/frame_0000.ply"] and not res[protocol.KEY_FULL_PLY_SEQUENCE]
    static = read_gaussians_ply(tmp_path / res[protocol.KEY_PLY_STATIC])
    assert len(static) == len(L.base) - L.n_moving
    layers = [read_layer_ply(tmp_path / res[k]) for k in (protocol.KEY_PLY_FORWARD, protocol.KEY_PLY_BACKWARD)]
    deformed = L.quats is not None
    for v, states in layers:
        assert states["position"].shape == (N, L.n_moving, 3)
        assert ("rotation" in states) == ("scale" in states) == deformed, "only what moves is stored per frame"
        assert np.allclose(1 / (1 + np.exp(-v["opacity"])), torch.sigmoid(L.base.logit_opacities[L.moving_idx]))
    for t in range(N):
        want = L.render(t, cam).colors
        pair = tuple(_layer_from_files(static, v, s, t) for v, s in layers)
        got = render_blend(pair, t, N, cam).colors
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # Frame 0 is a standard 3DGS PLY of the whole scene, which renders like the backend's frame 0.
    f0 = read_gaussians_ply(tmp_path / "ply/frame_0000.ply")
    assert len(f0) == len(L.base)
    torch.testing.assert_close(f0.render(cam).colors, L.render(0, cam).colors, atol=1e-5, rtol=0)
    # Another tool reading the layer file's first element gets the moving Gaussians at frame 0.
    assert len(read_ply(tmp_path / "ply/forward.ply")["x"]) == L.n_moving


@KINDS
def test_full_sequence_on_request_and_compact_is_much_smaller(kind, tmp_path):
    L, _ = make_loop(kind)
    (tmp_path / "full").mkdir()
    full = write_loop_ply(tmp_path / "full", L, full_sequence=True)
    assert full[protocol.KEY_PLY_FRAMES] == [f"ply/frame_{t:04d}.ply" for t in range(N)]
    assert full[protocol.KEY_FULL_PLY_SEQUENCE]
    for t in (0, N // 2):
        got = read_gaussians_ply(tmp_path / "full" / full[protocol.KEY_PLY_FRAMES][t])
        torch.testing.assert_close(got.logit_opacities, L.frame(t).logit_opacities)
    (tmp_path / "compact").mkdir()
    write_loop_ply(tmp_path / "compact", L, full_sequence=False)
    size = lambda d, names: sum((d / "ply" / n).stat().st_size for n in names)  # noqa: E731
    compact = size(tmp_path / "compact", ("frame_0000.ply", "static.ply", "forward.ply", "backward.ply"))
    sequence = size(tmp_path / "full", [f"frame_{t:04d}.ply" for t in range(N)])
    print(f"compact {compact} B vs full sequence {sequence} B")
    # Per frame the full sequence stores (static + 2 x moving) x 68 bytes, the compact layout 2 x moving
    # x 12 bytes (positions), or x 40 with rotations and scales; here half the Gaussians move and N = 6.
    assert compact < sequence * (0.5 if L.quats is None else 0.75)


@KINDS
def test_layer_ply_is_one_vertex_element_and_frame_rows(kind, tmp_path):
    L, _ = make_loop(kind)
    write_loop_ply(tmp_path, L, full_sequence=False)
    el = read_ply_elements(tmp_path / "ply/backward.ply")
    assert list(el) == ["vertex", FRAME_ELEMENT]
    rows = el[FRAME_ELEMENT]
    m = L.n_moving
    # frame-major: rows [t*M, (t+1)*M) are frame t; the backward copies sit in the second half of L.means
    np.testing.assert_allclose(rows["x"][2 * m:3 * m], L.means[2, m:, 0].numpy())


@KINDS
def test_usd_static_prim_is_unsampled_and_layers_sample_only_what_moves(kind, tmp_path):
    pytest.importorskip("pxr")
    from pxr import Usd, UsdGeom

    L, _ = make_loop(kind)
    write_loop_usd(tmp_path / "scene.usdc", L, fps=24, frame_start=1)
    st = Usd.Stage.Open(str(tmp_path / "scene.usdc"))
    assert st.GetStartTimeCode() == 1 and st.GetEndTimeCode() == N
    static = UsdGeom.Points(st.GetPrimAtPath(USD_PRIMS["static"]))
    assert len(static.GetPointsAttr().Get()) == len(L.base) - L.n_moving
    for attr in static.GetPrim().GetAttributes():
        assert attr.GetNumTimeSamples() == 0, f"static {attr.GetName()} is time-sampled"
    deformed = L.quats is not None
    for which, name in enumerate(("forward", "backward")):
        prim = st.GetPrimAtPath(USD_PRIMS[name])
        pts = UsdGeom.Points(prim)
        pv = UsdGeom.PrimvarsAPI(prim)
        assert pts.GetPointsAttr().GetTimeSamples() == [float(k) for k in range(1, N + 1)]
        assert pv.GetPrimvar("opacity").GetAttr().GetNumTimeSamples() == 0
        assert pv.GetPrimvar("displayColor").GetAttr().GetNumTimeSamples() == 0
        assert (pv.GetPrimvar("orient").GetAttr().GetNumTimeSamples() > 0) == deformed
        assert (pv.GetPrimvar("scales").GetAttr().GetNumTimeSamples() > 0) == deformed
        sl = slice(which * L.n_moving, (which + 1) * L.n_moving)
        np.testing.assert_allclose(np.array(pts.GetPointsAttr().Get(1 + 3)), L.means[3, sl].numpy(), rtol=1e-6)
        np.testing.assert_allclose(np.array(pv.GetPrimvar("opacity").Get(2)),
                                   torch.sigmoid(L.base.logit_opacities[L.moving_idx]).numpy(), rtol=1e-6)
