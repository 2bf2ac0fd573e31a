"""Runs ``<python> -m backend run job.json --out DIR`` and turns its JSON lines into events.

No bpy here: a reader thread tees the process's output into a log file and puts parsed events on
a queue; Blender drains the queue from a modal timer, or :meth:`BackendRun.wait` blocks (background
mode, where timers never fire).
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..contract import LoopscapeError
from ..contract.protocol import DONE, ERROR, LOG, PROGRESS, RESULT_NAME, WARNING

# The runner's own events, next to the protocol's: a non-JSON output line, and the process's end.
TEXT = "text"
EXIT = "exit"


@dataclass
class RunState:
    stage: str = ""
    fraction: float = 0.0
    log_tail: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    result_path: str = ""
    error: str = ""  # the backend's error message; ``hint`` says what to do about it
    hint: str = ""
    finished: bool = False
    cancelled: bool = False
    returncode: int | None = None

    def apply(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == PROGRESS:
            self.stage = str(ev.get("stage", self.stage))
            self.fraction = float(ev.get("fraction", self.fraction) or 0.0)
        elif kind == WARNING:
            self.warnings.append(str(ev.get("message", "")))
            self._tail("warning: " + str(ev.get("message", "")))
        elif kind in (LOG, TEXT):
            self._tail(str(ev.get("message", "")))
        elif kind == DONE:
            self.result_path = str(ev.get("result", ""))
        elif kind == ERROR:
            self.error = str(ev.get("message") or "backend error")
            self.hint = str(ev.get("hint") or "")
        elif kind == EXIT:
            self.finished = True
            self.returncode = ev.get("returncode")

    def _tail(self, line: str, keep: int = 6) -> None:
        self.log_tail = (self.log_tail + [line[:200]])[-keep:]


def check_interpreter(python: str, root: str) -> None:
    """Refuse an interpreter or backend folder that cannot run the backend (LoopscapeError)."""
    if not python:
        raise LoopscapeError("No backend interpreter is set and none was found in <backend folder>/.venv.",
                             "Set Backend Python in Preferences > Add-ons > Loopscape, "
                             "or run 'python3 build.py setup' in the backend folder.")
    if not os.path.isfile(python):
        raise LoopscapeError(f"Backend interpreter '{python}' does not exist.",
                             "Fix Backend Python in Preferences > Add-ons > Loopscape (use Check Backend to test it).")
    if not os.access(python, os.X_OK):
        raise LoopscapeError(f"Backend interpreter '{python}' is not executable.",
                             "Fix Backend Python in the preferences.")
    if root and not os.path.isdir(os.path.join(root, "backend")):
        raise LoopscapeError(f"Backend folder '{root}' has no 'backend' package.",
                             "Set Backend Folder in the preferences.")


def backend_env(root: str) -> dict:
    env = dict(os.environ)
    if root:
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    # Blender's own Python must not leak into the backend's interpreter.
    env.pop("PYTHONHOME", None)
    return env


def new_log_path(folder: Path) -> Path:
    """A fresh log name per run, so an error message's log is never overwritten by the next run."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        cand = Path(folder) / f"backend-{stamp}{'-' + str(i) if i else ''}.log"
        if not cand.exists():
            return cand
    return Path(folder) / f"backend-{stamp}-{os.getpid()}.log"


class BackendRun:
    """One backend process; ``events`` receives dicts, the last one is ``{"event": EXIT}``."""

    def __init__(self, python: str, root: str, job_path: Path, out_dir: Path, log_path: Path) -> None:
        check_interpreter(python, root)
        self.out_dir = Path(out_dir)
        self.log_path = Path(log_path)
        self.events: queue.Queue[dict] = queue.Queue()
        self.state = RunState()
        self.started = time.time()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        cmd = [python, "-m", "backend", "run", str(job_path), "--out", str(out_dir)]
        kw: dict = {}
        if os.name == "nt":
            kw["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kw["start_new_session"] = True  # own process group, so cancel reaches its children
        self._log = open(self.log_path, "w", encoding="utf-8")
        self._log.write("$ " + " ".join(cmd) + "\n")
        self._log.flush()
        try:
            self.proc = subprocess.Popen(cmd, cwd=root or None, env=backend_env(root), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
        except OSError as exc:
            self._log.close()
            raise LoopscapeError(f"Could not start the backend interpreter '{python}': {exc}.",
                                 "Check Backend Python in the preferences.") from exc
        self._reader = threading.Thread(target=self._read, name="loopscape-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self._log.write(line + "\n")
            self._log.flush()
            ev = _parse(line)
            if ev is not None:
                self.events.put(ev)
        rc = self.proc.wait()
        self._log.write(f"[exit code {rc}]\n")
        self._log.close()
        self.events.put({"event": EXIT, "returncode": rc})

    def drain(self) -> list[dict]:
        """Apply and return every queued event (call from Blender's main thread)."""
        got = []
        while True:
            try:
                ev = self.events.get_nowait()
            except queue.Empty:
                break
            self.state.apply(ev)
            got.append(ev)
        return got

    def wait(self, timeout: float | None = None, on_event=None) -> RunState:
        """Block until the process ends (background mode); ``on_event`` sees each event."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.state.finished:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                self.cancel()
                deadline = None
                continue
            try:
                ev = self.events.get(timeout=0.2 if left is None else min(0.2, left))
            except queue.Empty:
                continue
            self.state.apply(ev)
            if on_event is not None:
                on_event(ev)
        return self.state

    def cancel(self, grace: float = 3.0) -> None:
        """Interrupt, then terminate, then kill the whole process group."""
        self.state.cancelled = True
        if self.proc.poll() is not None:
            return
        threading.Thread(target=self._stop, args=(grace,), daemon=True).start()

    def _stop(self, grace: float) -> None:
        sequence = ([signal.CTRL_BREAK_EVENT, None] if os.name == "nt"
                    else [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
        for sig in sequence:
            if self.proc.poll() is not None:
                return
            try:
                if sig is None:
                    self.proc.kill()
                elif os.name == "nt":
                    self.proc.send_signal(sig)
                else:
                    os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError, OSError):
                return
            try:
                self.proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue

    @property
    def running(self) -> bool:
        return not self.state.finished

    def outcome(self) -> tuple[bool, str]:
        """(ok, message) once finished: ok means result.json exists and the backend said done."""
        st = self.state
        if st.cancelled:
            return False, f"Cancelled. Full log: {self.log_path}"
        result = Path(st.result_path) if st.result_path else self.out_dir / RESULT_NAME
        if st.returncode == 0 and not st.error and result.is_file():
            return True, str(result)
        reason = st.error or (f"the backend exited with code {st.returncode}" if st.returncode else
                              f"the backend finished without writing {RESULT_NAME}")
        if st.error:
            after = f" {st.hint}" if st.hint else ""
        else:
            after = f" Last output: {st.log_tail[-1]}" if st.log_tail else ""
        return False, f"Backend failed: {reason.rstrip('. ')}.{after} Full log: {self.log_path}"


def _parse(line: str) -> dict | None:
    s = line.strip()
    if s.startswith("{"):
        try:
            ev = json.loads(s)
        except json.JSONDecodeError:
            ev = None
        if isinstance(ev, dict) and "event" in ev:
            return ev
    return {"event": TEXT, "message": s} if s else None


def check_backend(python: str, root: str, timeout: float = 120.0) -> tuple[bool, str]:
    """Ask the interpreter for backend, torch, CUDA and gsplat versions; (ok, report lines)."""
    try:
        check_interpreter(python, root)
    except LoopscapeError as exc:
        return False, str(exc)
    code = (
        "import json, importlib.util as u\n"
        "r = {}\n"
        "import backend; r['backend'] = getattr(backend, '__version__', '?')\n"
        "import torch; r['torch'] = torch.__version__; r['cuda'] = torch.cuda.is_available()\n"
        "r['gpu'] = torch.cuda.get_device_name(0) if r['cuda'] else ''\n"
        "r['gsplat'] = None\n"
        "if u.find_spec('gsplat'):\n"
        "    from importlib.metadata import version; r['gsplat'] = version('gsplat')\n"
        "r['cli'] = u.find_spec('backend.cli') is not None\n"
        "print('LOOPSCAPE_CHECK ' + json.dumps(r))\n"
    )
    try:
        p = subprocess.run([python, "-c", code], cwd=root or None, env=backend_env(root), capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"'{python}' did not answer within {timeout:.0f} s."
    except OSError as exc:
        return False, f"Could not run '{python}': {exc}. Check Backend Python in the preferences."
    for line in p.stdout.splitlines():
        if line.startswith("LOOPSCAPE_CHECK "):
            r = json.loads(line[len("LOOPSCAPE_CHECK "):])
            cuda = f"CUDA yes ({r['gpu']})" if r["cuda"] else "CUDA no (CPU only)"
            gs = f"gsplat {r['gsplat']}" if r["gsplat"] else "gsplat not installed (CPU rasteriser only)"
            cli = "" if r["cli"] else "; backend CLI missing (backend/cli.py)"
            return r["cli"], f"backend {r['backend']}, torch {r['torch']}, {cuda}, {gs}{cli}"
    err = (p.stderr.strip().splitlines() or ["no output"])[-1]
    return False, f"The backend interpreter failed: {err} (interpreter: {python})"


