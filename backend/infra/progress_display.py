"""A live progress display for people at a terminal; the JSON-lines protocol stays for programs.

``make_sink("auto")`` returns the plain JSON-lines :class:`EventSink` when stdout is not a
terminal (Blender's runner reads a pipe) and a :class:`HumanSink` when it is. The human sink
writes no JSON: the same events drive a rich display instead. It shows one bar per stage, an
overall bar weighted by how long each stage usually takes, elapsed and remaining time, warnings
as readable lines, and the result folder at the end.
"""
from __future__ import annotations

import atexit
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from backend.infra.events import EventSink, NullSink
from contract import protocol

# rich is imported only for the human display, so JSON-lines callers (Blender's runner) never need it.

EVENT_MODES = ("auto", "human", "json")

# Relative stage durations, from the 256-px demo at preview quality on CPU (README benchmark:
# 3D Gaussians 30 s, 3D-MOM 12 s, validate 39 s, render 32 s; the rest takes a few seconds).
# They only shape the overall bar and its time estimate.
STAGE_WEIGHTS: dict[str, float] = {"load": 0.5, "depth": 2.0, "lift": 0.5, "multiview": 2.0, "gaussians3d": 30.0,
                                   "flows": 2.0, "mom3d": 12.0, "loop2d": 2.0, "gaussians4d": 1.0, "validate": 39.0,
                                   "render": 32.0, "export": 3.0}
assert tuple(STAGE_WEIGHTS) == protocol.STAGES
# 4D training time as a multiple of the 3D training (3dmom_scene_0, 256 px, 30 frames): draft
# shares preview's short 3D schedule (30 s) and trains 4D for 259 s; final trains the same scene for
# up to 20x the steps, and its patience stopped it at 70% of them at 96 px (step 2100 of 3000).
TRAINED_4D_FACTOR = {"draft": 8.5, "final": 120.0}
ETA_MIN_FRACTION = 0.02  # below this the remaining time is a guess not worth showing


def stage_plan(has_motion: bool = True, quality: str = "preview") -> dict[str, float]:
    """Stage name -> weight, in the order the pipeline runs them."""
    plan = {s: w for s, w in STAGE_WEIGHTS.items() if has_motion or s not in protocol.MOTION_STAGES}
    if has_motion and quality in TRAINED_4D_FACTOR:
        plan["gaussians4d"] = TRAINED_4D_FACTOR[quality] * plan["gaussians3d"]
    if not has_motion:
        plan["render"] /= 2  # one render per frame instead of the two blended loop layers
    return plan


def resolve_mode(requested: str, stream: TextIO | None = None) -> str:
    """``auto`` becomes ``human`` on a terminal and ``json`` otherwise."""
    if requested not in EVENT_MODES:
        raise ValueError(f"events mode must be one of {EVENT_MODES}, got {requested!r}")
    if requested != "auto":
        return requested
    stream = stream if stream is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    return "human" if isatty is not None and isatty() else "json"


def make_sink(requested: str = "auto", stream: TextIO | None = None) -> EventSink:
    """The event sink for ``--events``: JSON lines exactly as before, or the live display."""
    stream = stream if stream is not None else sys.stdout
    if resolve_mode(requested, stream) == "json":
        return EventSink(stream)
    try:
        from rich.console import Console
    except ImportError:
        print("note: the progress display needs rich (pip install rich); printing JSON lines instead", file=sys.stderr)
        return EventSink(stream)
    return HumanSink(Console(file=stream, highlight=False))


def plan_job(events: EventSink, job: Any) -> None:
    """Tell a human display which stages ``job`` will run; other sinks ignore it."""
    if isinstance(events, HumanSink):
        events.display.set_plan(stage_plan(bool(job.has_motion), str(job.quality)))


def _clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "-:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def time_text(completed: float, elapsed: float | None, finished: bool) -> str:
    """A row's time cell: elapsed, then the time left extrapolated from the fraction done."""
    if elapsed is None:
        return ""  # not started
    if finished:
        return f"{_clock(elapsed)}  done"
    left = _clock(elapsed * (1.0 - completed) / completed) if completed >= ETA_MIN_FRACTION else "-:--"
    return f"{_clock(elapsed)}  left {left}"


def _label(name: str, style: str = "") -> str:
    return f"[{style}]{name:<12}[/]" if style else f"{name:<12}"


def _time_column():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class TimeColumn(ProgressColumn):
        def render(self, task) -> Text:  # tasks here all have total 1.0
            return Text(time_text(task.completed / (task.total or 1.0), task.elapsed, task.finished), style="cyan")

    return TimeColumn()


@dataclass
class StageRow:
    task: int  # rich TaskID
    weight: float
    fraction: float = 0.0
    seconds: float | None = None
    started: bool = False


@dataclass
class ProgressDisplay:
    """Turns event records into a rich live display; ``handle`` is an EventSink listener."""

    console: Any  # rich.console.Console
    plan: dict[str, float] = field(default_factory=stage_plan)
    rows: dict[str, StageRow] = field(default_factory=dict)
    progress: Any = None  # rich.progress.Progress while the display is live
    overall: int | None = None
    t0: float = field(default_factory=time.monotonic)
    failed_stage: str | None = None

    def set_plan(self, plan: dict[str, float]) -> None:
        """Replace the planned stages; those already started keep their rows."""
        self.plan = dict(plan)
        if self.progress is not None:
            for name in [n for n, r in self.rows.items() if not r.started and n not in plan]:
                self.progress.remove_task(self.rows.pop(name).task)
            for name, w in plan.items():
                self._row(name, w).weight = w
            self._update_overall()

    def start(self) -> None:
        if self.progress is not None:
            return
        from rich.progress import BarColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=30), TextColumn("{task.percentage:>3.0f}%"),
            _time_column(), console=self.console, refresh_per_second=4,
        )
        self.overall = self.progress.add_task(_label("overall", "bold"), total=1.0)
        for name, w in self.plan.items():
            self._row(name, w)
        self.progress.start()
        atexit.register(self.stop)  # leave the terminal's cursor visible on any exit

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _row(self, name: str, weight: float) -> StageRow:
        assert self.progress is not None
        if name not in self.rows:
            self.rows[name] = StageRow(self.progress.add_task(_label(name, "dim"), total=1.0, start=False), weight)
        return self.rows[name]

    def _drop_unstarted(self) -> None:
        """Remove the rows of planned stages that never ran, once the run has ended."""
        for name in [n for n, r in self.rows.items() if not r.started]:
            self.progress.remove_task(self.rows.pop(name).task)

    def _update_overall(self) -> None:
        total = sum(r.weight for r in self.rows.values()) or 1.0
        done = sum(r.weight * r.fraction for r in self.rows.values())
        assert self.progress is not None and self.overall is not None
        self.progress.update(self.overall, completed=min(done / total, 1.0))

    def handle(self, record: dict[str, Any]) -> None:
        from rich.text import Text

        kind = record.get("event")
        self.start()
        assert self.progress is not None
        if kind == "progress":
            self._on_progress(str(record.get("stage", "?")), float(record.get("fraction", 0.0)), record.get("seconds"))
        elif kind == "warning":
            self.console.print(Text.assemble(("warning: ", "bold yellow"), str(record.get("message", ""))))
        elif kind == "log":
            self.console.print(Text(str(record.get("message", "")), style="dim"))
        elif kind == "done":
            self._on_done(Path(str(record.get("result", ""))))
        elif kind == "error":
            self._on_error(record)

    def _on_progress(self, stage: str, fraction: float, seconds: Any) -> None:
        assert self.progress is not None
        if stage not in self.rows and stage not in self.plan:
            # A name outside the plan (an older backend's sub-step): its fraction moves the bar of
            # the stage that is running; that stage's 1.0 closes it.
            running = [n for n, r in self.rows.items() if r.started and r.fraction < 1.0]
            if running:
                row = self.rows[running[-1]]
                row.fraction = max(row.fraction, min(fraction, 0.99))
                self.progress.update(row.task, completed=row.fraction)
                self._update_overall()
                return
        row = self._row(stage, self.plan.get(stage, 1.0))
        if not row.started:
            self.progress.start_task(row.task)
            self.progress.update(row.task, description=_label(stage, "bold"))
            row.started = True
        row.fraction = max(row.fraction, fraction)
        self.progress.update(row.task, completed=row.fraction)
        if fraction >= 1.0:
            row.seconds = float(seconds) if isinstance(seconds, (int, float)) else None
            self.progress.update(row.task, description=_label(stage))
            self.progress.stop_task(row.task)
        self._update_overall()

    def _on_done(self, result_json: Path) -> None:
        from rich.text import Text

        assert self.progress is not None and self.overall is not None
        self._drop_unstarted()
        self.progress.update(self.overall, completed=1.0)
        self.stop()
        folder = result_json.parent
        self.console.print(Text.assemble(("done", "bold green"), f" in {_clock(time.monotonic() - self.t0)}"))
        self.console.print(Text.assemble(("result: ", "bold"), str(folder)))
        try:
            result = json.loads(result_json.read_text())
        except (OSError, ValueError):
            return
        for key in ("video", "input_view_video", "preview", "preview_anim", "usd"):
            if result.get(key):
                self.console.print(f"  {key:<17} {folder / result[key]}")
        n_warn = len(result.get("warnings", []))
        if n_warn:
            self.console.print(Text(f"  {n_warn} warning(s), printed above and listed in result.json", style="yellow"))

    def _on_error(self, record: dict[str, Any]) -> None:
        from rich.text import Text

        assert self.progress is not None
        running = [n for n, r in self.rows.items() if r.started and r.fraction < 1.0]
        if running:
            self.failed_stage = running[-1]
            self.progress.update(self.rows[running[-1]].task, description=_label(running[-1], "bold red"))
        self._drop_unstarted()
        self.stop()
        # The CLI prints input and cancel errors to stderr as one line; an internal error's
        # stderr is a traceback, so its summary line is printed here.
        if record.get("kind") not in ("input", "cancelled"):
            self.console.print(Text.assemble(("error: ", "bold red"), str(record.get("message", ""))))


class HumanSink(NullSink):
    """Writes no JSON; feeds every event to a :class:`ProgressDisplay` (warnings are still recorded)."""

    def __init__(self, console: Any) -> None:
        super().__init__()
        self.display = ProgressDisplay(console)
        self.listeners.append(self.display.handle)
