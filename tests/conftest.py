"""Shared test set-up: one torch thread (small tensors; avoids oversubscribing CI's two cores)."""
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("LOOPSCAPE_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_SCENES = REPO.parent / "shared" / "data" / "scenes"


@pytest.fixture
def shared_scenes() -> Path:
    if not SHARED_SCENES.is_dir():
        pytest.skip("../shared/data/scenes is not present")
    return SHARED_SCENES
