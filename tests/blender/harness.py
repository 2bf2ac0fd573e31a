"""Runs one Blender scenario in a fresh process: ``python harness.py NAME USER_RESOURCES ARGS_JSON``.

bpy can be imported once per process and installing the extension changes global state, so each
scenario gets its own process: this script points BLENDER_USER_RESOURCES at a temporary folder,
imports bpy, installs and enables the built extension zip (``ARGS_JSON["zip"]``), sets its
preferences, then calls ``main(ctx)`` of ``scenarios/NAME.py`` and prints ``RESULT {json}``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(name: str, user_resources: str, args_json: str) -> None:
    os.environ["BLENDER_USER_RESOURCES"] = user_resources  # read when bpy is imported
    args = json.loads(args_json)
    import bpy

    sys.path.insert(0, str(HERE))
    from kit import PKG, Context

    bpy.ops.wm.read_factory_settings(use_empty=True)
    installed = bpy.ops.extensions.package_install_files(filepath=args["zip"], repo="user_default",
                                                         enable_on_install=True)
    assert PKG in bpy.context.preferences.addons, "extension did not enable"
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.backend_root = args.get("backend_root", "")
    prefs.backend_python = args.get("backend_python", "")
    prefs.work_dir = args.get("work_dir", "")
    ctx = Context(args=args, out={"install": sorted(installed), "blender": bpy.app.version_string},
                  scene=bpy.context.scene, prefs=prefs)
    spec = importlib.util.spec_from_file_location(f"scenario_{name}", HERE / "scenarios" / f"{name}.py")
    scenario = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scenario)
    scenario.main(ctx)
    print("RESULT " + json.dumps(ctx.out), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
