"""Human progress display on a terminal, JSON lines everywhere else (Blender's runner reads a pipe)."""
from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from rich.console import Console

from backend.tools.demo_scene import make_demo_scene
from backend.infra.events import EventSink
from backend.infra.progress_display import HumanSink, ProgressDisplay, make_sink, resolve_mode, stage_plan, time_text

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def cli_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), LOOPSCAPE_THREADS="1", HF_HUB_OFFLINE="1", TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    return env


def run_in_pty(args: list[str], timeout: float = 300) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal (100 x 40); returns (rc, raw output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "backend", *args], cwd=REPO, env=cli_env(),
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return rc, b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture(scope="module")
def job_args(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("progress")
    scene = make_demo_scene(128, 96, seed=3)
    cv2.imwrite(str(root / "photo.png"), (scene.rgb[..., ::-1] * 255 + 0.5).astype(np.uint8))
    cv2.imwrite(str(root / "mask.png"), scene.mask.astype(np.uint8) * 255)
    return ["run", "--image", str(root / "photo.png"), "--mask", str(root / "mask.png"), "--hint", "10,70,60,70",
            "--hint", "10,50,20,50",  # starts on the static ridge, outside the mask: a warning the display must show
            "--max-side", "64", "--quality", "preview", "--frames", "4", "--depth", "prior", "--device", "cpu"]


def test_terminal_run_shows_the_live_display(job_args, tmp_path):
    out = tmp_path / "tty"
    rc, raw = run_in_pty([*job_args, "--out", str(out)])
    assert rc == 0, raw[-3000:]
    assert "\x1b[" in raw  # rich drew (and redrew) the display with terminal control sequences
    text = ANSI.sub("", raw)
    assert not any(line.lstrip().startswith('{"event"') for line in text.splitlines()), text[-2000:]
    final = text[text.rindex("overall"):]  # the last frame of the display, then the summary
    for stage in ("load", "depth", "gaussians3d", "mom3d", "gaussians4d", "validate", "render", "export"):
        assert re.search(rf"{stage}\s+\S+\s+100%\s+\d+:\d\d\s+done", final), (stage, final)
    assert re.search(r"overall\s+\S+\s+100%", final)
    assert re.search(r"warning: .*hint.*outside the motion mask", text), text[-3000:]
    assert f"result: {out}" in text.replace("\r", "")
    assert re.search(r"preview\s+\S*preview\.png", text)
    assert (out / "result.json").is_file()


def test_piped_run_prints_only_json_lines(job_args, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "backend", *job_args, "--out", str(tmp_path / "pipe")], cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines()]
    assert len(lines) >= 20 and all(ln.strip() for ln in lines)
    events = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert all(isinstance(e, dict) and "event" in e and "time" in e for e in events)
    assert events[-1]["event"] == "done"
    assert any(e["event"] == "warning" for e in events)
    assert "\x1b[" not in proc.stdout


def test_events_json_on_a_terminal_prints_json_lines(job_args, tmp_path):
    rc, raw = run_in_pty([*job_args, "--out", str(tmp_path / "forced"), "--events", "json"])
    assert rc == 0, raw[-3000:]
    lines = [ln for ln in raw.replace("\r", "").splitlines() if ln.strip()]
    assert all(json.loads(ln)["event"] for ln in lines), lines[:5]
    assert json.loads(lines[-1])["event"] == "done"


def test_mode_resolution():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert resolve_mode("auto", io.StringIO()) == "json"
    assert resolve_mode("auto", Tty()) == "human"
    assert resolve_mode("json", Tty()) == "json"
    assert type(make_sink("auto", io.StringIO())) is EventSink
    assert isinstance(make_sink("auto", Tty()), HumanSink)
    with pytest.raises(ValueError):
        resolve_mode("xml")


def test_overall_fraction_is_weighted_and_substeps_move_their_stage():
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    d = ProgressDisplay(console)
    d.set_plan(stage_plan(has_motion=False))
    plan = stage_plan(has_motion=False)
    assert list(plan) == ["load", "depth", "lift", "multiview", "gaussians3d", "render", "export"]
    for stage in ("load", "depth", "lift", "multiview"):
        d.handle({"event": "progress", "stage": stage, "fraction": 0.0})
        d.handle({"event": "progress", "stage": stage, "fraction": 1.0, "seconds": 0.1})
    d.handle({"event": "progress", "stage": "gaussians3d", "fraction": 0.5})
    expected = (plan["load"] + plan["depth"] + plan["lift"] + plan["multiview"] + 0.5 * plan["gaussians3d"]) / sum(plan.values())
    assert d.progress.tasks[0].completed == pytest.approx(expected)  # the overall row
    # A name outside the plan (an older backend's sub-step) moves the running stage, below 100%.
    d.handle({"event": "progress", "stage": "3d-motion", "fraction": 1.0})
    assert d.rows["gaussians3d"].fraction == pytest.approx(0.99) and "3d-motion" not in d.rows
    d.handle({"event": "warning", "message": "something to read"})
    d.handle({"event": "error", "message": "Internal error: boom.", "kind": "internal"})
    text = ANSI.sub("", console.file.getvalue())
    assert "warning: something to read" in text and "error: Internal error: boom." in text
    assert d.progress is None and d.failed_stage == "gaussians3d"
    assert "render" not in d.rows  # stages that never ran are dropped at the end


def test_time_text():
    assert time_text(0.0, None, False) == ""
    assert time_text(0.01, 3.0, False) == "0:03  left -:--"
    assert time_text(0.25, 30.0, False) == "0:30  left 1:30"
    assert time_text(1.0, 75.0, True) == "1:15  done"
