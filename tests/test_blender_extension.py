"""The built zip validates, installs as a real extension, registers and unregisters cleanly."""
from __future__ import annotations

import re
import subprocess
import zipfile

import pytest

from test_blender_support import BLENDER_PY, build_zip, bpy_dir, have_bpy, run_scenario

pytestmark = [pytest.mark.blender, pytest.mark.skipif(not have_bpy(), reason="bpy is not installed in .venv")]

OPS = {"setup_photo", "mask_create", "mask_import", "mask_clear", "hint_add", "hint_remove", "hint_draw",
       "anchor_add", "anchor_remove", "camera_preset", "run", "cancel", "check_backend", "import_result",
       "open_output", "play_video"}
PANELS = {"LOOPSCAPE_PT_photo", "LOOPSCAPE_PT_motion", "LOOPSCAPE_PT_image_motion", "LOOPSCAPE_PT_camera",
          "LOOPSCAPE_PT_run", "LOOPSCAPE_PT_result"}



def test_zip_layout_and_blender_validation():
    zp = build_zip()
    assert zp.name == "loopscape-0.1.0.zip"
    names = set(zipfile.ZipFile(zp).namelist())
    # The zip mirrors the source tree: the extension's entry at the root, its packages beside it.
    assert {"blender_manifest.toml", "__init__.py", "blender_addon/__init__.py", "blender_addon/runner.py",
            "operators/__init__.py", "panels/__init__.py", "contract/__init__.py", "contract/labelme.py"} <= names
    assert not any(n.startswith(("backend/", "tests/")) for n in names)
    assert not any("__pycache__" in n for n in names)
    for n in names:
        if n.endswith(".py"):
            src = zipfile.ZipFile(zp).read(n).decode()
            assert not re.search(r"^\s*(import|from)\s+torch\b", src, re.M), f"{n} imports torch"
    tool = next(bpy_dir().glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))  # the tested Blender's own
    p = subprocess.run([str(BLENDER_PY), str(tool), "validate", str(zp)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Success" in p.stdout


def test_installs_registers_and_unregisters(tmp_path):
    out = run_scenario("extension", tmp_path)
    print(f"Blender {out['blender']}")
    assert out["install"] == ["FINISHED"]
    assert str(tmp_path / "user_res") in out["pkg_file"], "installed into BLENDER_USER_RESOURCES"
    on = out["enabled"]
    assert OPS <= set(on["ops"])
    assert PANELS <= set(on["panels"]) and on["scene_prop"]
    for name, (space, category) in out["panel_space"].items():
        assert category == "Loopscape"
        assert space == ("IMAGE_EDITOR" if name == "LOOPSCAPE_PT_image_motion" else "VIEW_3D")
    assert {"backend_root", "backend_python", "device", "work_dir"} <= set(out["prefs_props"])
    assert not out["torch_loaded"]
    off = out["disabled"]
    assert not (PANELS & set(off["panels"])) and not off["scene_prop"]
    assert off["save_handlers"] == on["save_handlers"] - 1
    assert out["reenabled"] == on
