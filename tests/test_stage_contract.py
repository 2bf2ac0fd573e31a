"""The pipeline's stage list is one list: events, timings, modules, the contract and the README agree;
and the stage cache recomputes exactly what a changed input reaches."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.infra.events import NullSink
from backend.job import JobSpec
from backend.pipeline import STAGES, run_job, stage_name
from backend.tools.demo_scene import make_demo_scene, write_demo_inputs
from contract import protocol

REPO = Path(__file__).resolve().parents[1]
CACHED = {stage_name(s) for s in STAGES if getattr(s, "CACHED", False)}


def _documented_stages() -> list[str]:
    """Stage names in the README's "How it works" table, in order."""
    text = (REPO / "README.md").read_text()
    table = text[text.index("| stage | what it does |"):]
    return re.findall(r"^\| `([a-z0-9]+)` \|", table.split("\n\n")[0], re.M)


@pytest.fixture(scope="module")
def demo_inputs(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("demo")
    return write_demo_inputs(folder, make_demo_scene(96, 64, seed=1))


def _run(fields: dict, out: Path, **overrides) -> tuple[dict, list[dict]]:
    job = JobSpec.from_dict({**fields, "max_side": 48, "quality": "preview", "frames": 4, "path": "side",
                             "device": "cpu", **overrides})
    sink = NullSink()
    events: list[dict] = []
    sink.listeners.append(events.append)
    path = run_job(job, out, sink)
    return json.loads(path.read_text()), events


def test_emitted_stages_match_contract_timings_modules_and_readme(demo_inputs, tmp_path):
    result, events = _run(demo_inputs, tmp_path / "out")
    emitted = list(dict.fromkeys(e["stage"] for e in events if e["event"] == protocol.PROGRESS))
    assert emitted == list(protocol.STAGES)
    assert list(result["timings"]) == list(protocol.STAGES)
    assert [stage_name(s) for s in STAGES] == list(protocol.STAGES)
    modules = {p.stem for p in (REPO / "backend" / "stages").glob("*.py")} - {"__init__"}
    assert modules == set(protocol.STAGES)
    assert _documented_stages() == list(protocol.STAGES)
    assert {e["event"] for e in events} <= set(protocol.EVENTS)


def _recomputed(result: dict) -> set[str]:
    return CACHED - set(result["cache_hits"])


def test_cache_recomputes_exactly_what_an_input_reaches(demo_inputs, tmp_path):
    out = tmp_path / "out"
    base, _ = _run(demo_inputs, out)
    assert set(base["cache_hits"]) == set()
    again, _ = _run(demo_inputs, out)
    assert _recomputed(again) == set()

    # Depth reads the motion (the offline prior's horizon), so new arrows or a new mask re-run it;
    # its artifact keys its dependants by content, so the 3D Gaussians stay cached when it is unchanged.
    hints = [{**h, "end": [2 * h["start"][0] - h["end"][0], 2 * h["start"][1] - h["end"][1]]} for h in demo_inputs["hints"]]
    assert _recomputed(_run({**demo_inputs, "hints": hints}, out)[0]) == {"depth", "mom3d"}  # reversed arrows
    assert _recomputed(_run(demo_inputs, out, path="zoom-in", frames=6)[0]) == set()  # render-only changes
    assert _recomputed(_run(demo_inputs, out, seed=5)[0]) == {"gaussians3d"}  # 3D-MOM draws nothing at random

    mask = cv2.imread(demo_inputs["mask"], cv2.IMREAD_GRAYSCALE)
    mask[: mask.shape[0] // 4] = 0  # no clouds: another moving region
    new_mask = tmp_path / "mask2.png"
    cv2.imwrite(str(new_mask), mask)
    assert _recomputed(_run({**demo_inputs, "mask": str(new_mask)}, out)[0]) == {"depth", "gaussians3d", "mom3d"}

    img = cv2.imread(demo_inputs["image"])
    new_img = tmp_path / "image2.png"
    cv2.imwrite(str(new_img), np.clip(img.astype(int) + 9, 0, 255).astype(np.uint8))
    assert _recomputed(_run({**demo_inputs, "image": str(new_img)}, out)[0]) == CACHED


def test_negated_flow_is_not_served_from_cache(demo_inputs, tmp_path):
    """The stale-cache case: the same run with the flow reversed must play the reversed motion."""
    h, w = 64, 96
    flow = np.zeros((2, h, w), np.float32)
    flow[0, 40:, :] = 0.8  # the lake flows right
    paths = []
    for sign in (1, -1):
        p = tmp_path / f"flow{sign}.npy"
        np.save(p, sign * flow)
        paths.append(p)
    fields = {"image": demo_inputs["image"], "flow": str(paths[0]), "depth": demo_inputs["depth"]}
    out = tmp_path / "out"
    first, _ = _run(fields, out)
    second, _ = _run({**fields, "flow": str(paths[1])}, out)
    assert "mom3d" not in second["cache_hits"]
    fresh, _ = _run({**fields, "flow": str(paths[1])}, tmp_path / "fresh")
    for key in ("input_view",):
        a, b = second["metrics"][key], fresh["metrics"][key]
        assert a == b, (a, b)
    assert first["metrics"]["input_view"] != second["metrics"]["input_view"] or first["metrics"] != second["metrics"]


def test_trained_loop_is_reused_for_a_new_path_and_retrained_for_a_new_seed(demo_inputs, tmp_path, monkeypatch):
    """A trained 4D loop is cached (minutes of work on a real scene); the explicit one is not."""
    import dataclasses

    from contract import quality

    tiny = dataclasses.replace(quality.PRESETS["draft"], n_views=3,
                               train3d=quality.Train3DSchedule(iters=5), mom3d_iters=50, iters_4d=6)
    monkeypatch.setitem(quality.PRESETS, "draft", tiny)
    out = tmp_path / "out"
    first, _ = _run(demo_inputs, out, quality="draft")
    assert first["metrics"]["train4d_kept"] in ("trained", "preview") and "gaussians4d" not in first["cache_hits"]
    moved, _ = _run(demo_inputs, out, quality="draft", path="zoom-in")
    assert "gaussians4d" in moved["cache_hits"]
    assert moved["metrics"]["train4d_psnr_trained"] == first["metrics"]["train4d_psnr_trained"]
    reseeded, _ = _run(demo_inputs, out, quality="draft", seed=3)
    assert "gaussians4d" not in reseeded["cache_hits"]
    assert list((out / "work" / "cache").glob("gaussians4d-*.pkl"))

    explicit = tmp_path / "explicit"
    _run(demo_inputs, explicit)  # preview: the explicit loop, rebuilt each run
    assert not list((explicit / "work" / "cache").glob("gaussians4d-*.pkl"))
