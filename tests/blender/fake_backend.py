"""A stand-in for ``python -m backend run job.json --out DIR``, for runner tests without torch.

It is started through a shell-script "interpreter" that sets FAKE_DIR. ``FAKE_DIR/mode`` picks the
behaviour: ok (copy ``FAKE_DIR/result`` to DIR and report it done), crash, error (the protocol's
error event) or hang (ignore SIGINT, with a child process; their pids go to ``FAKE_DIR/pids``).
The job it was given is copied to ``FAKE_DIR/job_seen.json``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


def emit(**event) -> None:
    print(json.dumps(event), flush=True)


def main(args: list[str]) -> int:
    assert args[:3] == ["-m", "backend", "run"], args
    job, out = Path(args[3]), Path(args[args.index("--out") + 1])
    here = Path(os.environ["FAKE_DIR"])
    mode = (here / "mode").read_text().strip()
    shutil.copy(job, here / "job_seen.json")
    emit(event="progress", stage="depth", fraction=0.5)
    print("plain text from a library", flush=True)
    emit(event="warning", message="fake warning")
    if mode == "ok":
        shutil.copytree(here / "result", out, dirs_exist_ok=True)
        os.utime(out / "result.json")
        emit(event="done", result=str(out / "result.json"))
    elif mode == "crash":
        (out / "ply").mkdir(parents=True, exist_ok=True)
        (out / "ply" / "frame_0000.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\n")
        raise RuntimeError("fake segfault-like crash")
    elif mode == "error":
        emit(event="error", message="The mask is empty.", hint="Paint it.", kind="input")
        return 2
    elif mode == "hang":
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # make cancel escalate to SIGTERM
        child = subprocess.Popen(["sleep", "300"])
        (here / "pids").write_text(f"{os.getpid()} {child.pid}")
        emit(event="progress", stage="gaussians3d", fraction=0.2)
        time.sleep(300)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
