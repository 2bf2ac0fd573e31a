"""Run the CLI in this process (torch is imported once, so a failing run costs milliseconds) and
check the outcome the way issue 14 asks: exit code, one error line naming the problem and a fix,
no traceback, no result from the failed run, an earlier result intact, no heavy stage started."""
from __future__ import annotations

import hashlib
import json
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from backend.cli import main

TINY = ["--max-side", "64", "--quality", "preview", "--frames", "4", "--depth", "prior", "--device", "cpu"]
# Stages that train or render: an input error must arrive before the first of them starts.
HEAVY_STAGES = ("gaussians3d", "flows", "mom3d", "loop2d", "gaussians4d", "validate", "render", "export")
_SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGXFSZ", None)) if s is not None)


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def run_inprocess(capsys, *argv: str) -> CliRun:
    """``python -m backend ARGV`` in this process; the CLI's signal handlers are undone afterwards."""
    capsys.readouterr()
    saved = {s: signal.getsignal(s) for s in _SIGNALS}
    try:
        code = main(list(argv))
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    cap = capsys.readouterr()
    return CliRun(code, cap.out, cap.err)


def snapshot(out: Path) -> dict[str, str]:
    """Content hash of every file of a result (the cache under work/ and the lock file aside)."""
    files = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if rel.startswith("work/") or rel == "work" or p.name == ".loopscape.lock" or not p.is_file():
            continue
        files[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files


def assert_clean_failure(run: CliRun, out: Path, *needles: str, code: int = 2,
                         earlier: dict[str, str] | None = None, input_error: bool = True) -> str:
    """The failure contract of issue 14; returns the error message. ``input_error``: the problem is
    in the inputs, so it must be reported before any heavy stage starts (not so for disk or publish faults)."""
    assert run.code == code, (run.code, run.stderr[-3000:])
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, run.stderr[-3000:]
    ev = run.events
    assert ev and ev[-1]["event"] == "error", ev[-3:]
    msg = f"{ev[-1]['message']} {ev[-1].get('hint', '')}".strip()  # what is wrong, then what to do
    for n in needles:
        assert n.lower() in msg.lower(), msg
    if code == 2:
        assert ev[-1]["kind"] == "input"
        assert lines[0] == f"error: {msg}"
        # message + what to do: at least two sentences
        assert len(re.findall(r"[.!?)](\s|$)", msg)) >= 2, msg
        started = [e["stage"] for e in ev if e["event"] == "progress" and e["stage"] in HEAVY_STAGES]
        assert not (input_error and started), f"the error came after the heavy stage {started[0]} had started: {msg}"
    if out.is_dir():
        assert not list(out.glob(".staging-*")) and not list(out.glob(".previous-*")), sorted(out.iterdir())
    if earlier is None:
        assert not (out / "result.json").exists()
    else:
        assert snapshot(out) == earlier, "the earlier result changed"
    return msg


def write_photo(path: Path, width: int = 128, height: int = 96) -> Path:
    """The tiny synthetic landscape the CLI tests run on (working size 64x48 at --max-side 64)."""
    import cv2
    import numpy as np

    from backend.tools.demo_scene import make_demo_scene

    scene = make_demo_scene(width, height, seed=3)
    cv2.imwrite(str(path), (scene.rgb[..., ::-1] * 255).astype(np.uint8))
    return path


def run_quietly(*argv: str) -> int:
    """``main(argv)`` with its output discarded, for module-scoped fixtures (capsys is per test)."""
    import contextlib
    import io

    saved = {s: signal.getsignal(s) for s in _SIGNALS}
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return main(list(argv))
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
