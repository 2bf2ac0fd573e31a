"""Shared test set-up: one torch thread (small tensors; avoids oversubscribing CI's two cores)."""
import os
import sys
import types
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


# The add-on's bpy-free modules import as ``loopscape_addon.blender_addon.<module>``: an alias for the
# repository root as a package, as Blender installs it, without running the root __init__ (it imports bpy).
ADDON_ALIAS = "loopscape_addon"


def register_addon_alias() -> None:
    if ADDON_ALIAS not in sys.modules:
        pkg = types.ModuleType(ADDON_ALIAS)
        pkg.__path__ = [str(REPO)]
        sys.modules[ADDON_ALIAS] = pkg


register_addon_alias()  # before test modules are imported, so they can import the add-on at the top
