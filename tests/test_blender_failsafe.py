"""Issue 13, acceptance 2: a failed import leaves the scene exactly as it was and reports one
readable line; no operator lets a raw traceback through."""
from __future__ import annotations

import json

import pytest

from test_blender_support import have_bpy, run_scenario, synthetic_frames, write_fake_result

pytestmark = [pytest.mark.blender, pytest.mark.skipif(not have_bpy(), reason="bpy is not installed")]


@pytest.fixture(scope="module")
def failed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("blender_failsafe")
    syn = synthetic_frames(32, 24, 2)
    good = write_fake_result(tmp / "good", syn)
    corrupt = write_fake_result(tmp / "corrupt", syn)
    (corrupt / "scene.usdc").write_bytes(b"PXR-USDC" + bytes(range(256)) * 4)  # a truncated crate file
    meta = json.loads((corrupt / "result.json").read_text())
    meta["usd"] = "scene.usdc"
    (corrupt / "result.json").write_text(json.dumps(meta))
    return run_scenario("import_failure", tmp, {"good": str(good), "corrupt": str(corrupt)})


def _one_readable_line(report: str) -> str:
    assert report.startswith("ERROR: "), report
    text = report[len("ERROR: "):].strip().removeprefix("Error: ")  # bpy.ops' RuntimeError adds "Error: "
    assert "\n" not in text and "Traceback" not in text and 'File "' not in text, report
    return text


@pytest.mark.parametrize("case", ["fresh", "replace", "late"])
def test_failed_import_leaves_the_scene_unchanged(failed, case):
    assert failed["good"] == "FINISHED" and failed["again"] == "FINISHED"
    assert failed[case + "_diff"] == [], f"{case}: the failed import changed the scene"
    line = _one_readable_line(failed[case])
    print(f"{case}: {line}")
    if case == "late":
        assert "TypeError" in line and "Nothing was changed" in line
    else:
        assert "scene.usdc" in line and "could not read" in line


def test_unexpected_operator_error_is_one_line(failed):
    line = _one_readable_line(failed["open_output"])
    assert line.startswith("Open Output Folder failed: KeyError")
