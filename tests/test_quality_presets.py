"""Quality grows with effort: on a tiny scene, draft's 4D training ends at least as close to the
input view's 2D loop as preview's explicit loop, and its loss falls."""
from __future__ import annotations

import json

import numpy as np
import pytest

from backend.infra.events import NullSink
from backend.job import JobSpec
from backend.pipeline import run_job
from backend.tools.demo_scene import make_demo_scene, write_demo_inputs


@pytest.fixture(scope="module")
def draft_result(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("demo")
    fields = write_demo_inputs(folder, make_demo_scene(96, 64, seed=2))
    job = JobSpec.from_dict({**fields, "max_side": 64, "quality": "draft", "frames": 8, "path": "side", "device": "cpu"})
    return json.loads(run_job(job, folder / "out", NullSink()).read_text())


def test_draft_is_at_least_as_good_as_preview_at_the_input_view(draft_result):
    m = draft_result["metrics"]
    assert m["train4d_psnr_trained"] >= m["train4d_psnr_preview"]
    assert m["train4d_kept"] in ("trained", "preview")
    assert m["input_view"]["loop_closure_psnr_frameN"] >= 40.0


def test_draft_loss_falls(draft_result):
    curve = draft_result["metrics"]["train4d_loss_curve_tenths"]
    assert len(curve) == 10 and np.isfinite(curve).all()
    assert curve[-1] < curve[0]
