"""Publishing a run's outputs into OUT: one writer at a time, all or nothing, the old result kept.

Layout (unchanged for users): ``OUT/result.json`` next to the files it names (``video.mp4``,
``ply/``...). A run writes everything into ``OUT/.staging-PID/``. Publishing then

1. writes ``result.json`` (strict JSON) into the staging folder;
2. moves the earlier ``result.json`` and every earlier output into ``OUT/.previous-PID/``
   (renames inside one file system: nothing is copied or deleted yet);
3. moves the staged outputs into OUT and renames the new ``result.json`` in last.

``result.json`` is the commit mark: a reader sees the old complete result, no result for the few
renames of the swap, or the new complete result, never a mix. Any failure before step 3 ends
rolls every rename back, so the earlier result stays byte for byte. A crash in the middle
(power loss, SIGKILL) is repaired by ``recover`` at the start of the next run, under the lock:
without a ``result.json`` in OUT the backup is moved back, otherwise it is deleted.

``out_lock`` keeps a second run from writing into the same OUT (``flock``; the kernel drops it when
a process dies, so a stale lock file never blocks anyone).
"""
from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import resource
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from backend.infra import cancel
from backend.infra.errors import LoopscapeError
from backend.infra.events import EventSink
from contract.protocol import RESULT_NAME

LOCK_NAME = ".loopscape.lock"
STAGING_PREFIX = ".staging-"
BACKUP_PREFIX = ".previous-"
# Every top-level name a result may own; an earlier result's extra files (say frames/ from a run
# with --png-frames) must not survive next to a new result that does not list them.
RESULT_ENTRIES = ("input.png", "video.mp4", "input_view.mp4", "ply", "frames", "scene.usdc")
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


# ----------------------------------------------------------------------------- the lock

@dataclass
class _Held:
    fd: int
    count: int


_held: dict[Path, _Held] = {}  # reentrant per process: the CLI locks before --demo, run_job again


def _lock_holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "another run"
    return f"another run (pid {pid})" if pid.isdigit() else "another run"


@contextmanager
def out_lock(out: Path) -> Iterator[None]:
    """Hold ``OUT/.loopscape.lock`` for the block, or refuse at once if another run holds it."""
    out = Path(out).resolve()
    held = _held.get(out)
    if held is not None:
        held.count += 1
        try:
            yield
        finally:
            held.count -= 1
        return
    path = out / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LoopscapeError(f"Cannot create the lock file in the output folder {out} ({exc.strerror}).",
                                 "Choose a folder you can write to with --out.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LoopscapeError(f"{_lock_holder(path).capitalize()} is writing into {out}.",
                                 "Wait for it to finish or cancel it, or choose another --out.") from None
        # The previous holder unlinks the file before it unlocks; if we locked that unlinked inode,
        # start again on the current file.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[out] = _Held(fd, 1)
    try:
        yield
    finally:
        with cancel.shielded():
            _held.pop(out, None)
            try:
                path.unlink()
            except OSError:
                pass
            os.close(fd)


# ----------------------------------------------------------------------------- staging

def recover(out: Path, events: EventSink | None = None) -> None:
    """Under the lock: finish or undo a publish a crash interrupted, and drop dead staging folders."""
    with cancel.shielded():
        for backup in sorted(out.glob(BACKUP_PREFIX + "*")):
            if not backup.is_dir():
                continue
            if not (out / RESULT_NAME).exists():  # the swap did not commit: put the earlier result back
                for item in backup.iterdir():
                    target = out / item.name
                    if os.path.lexists(target):
                        _remove(target)
                    os.rename(item, target)
                if events is not None:
                    events.warning(f"An earlier run was interrupted while publishing; its previous result in {out} "
                                   "was restored.")
            shutil.rmtree(backup, ignore_errors=True)
        for staging in out.glob(STAGING_PREFIX + "*"):
            shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A fresh private folder inside OUT, removed afterwards even if a second signal arrives."""
    staging = out / f"{STAGING_PREFIX}{os.getpid()}"
    try:
        with cancel.shielded():
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir()
        cancel.checkpoint()
        yield staging
    finally:
        with cancel.shielded():
            shutil.rmtree(staging, ignore_errors=True)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


def _rename(src: Path, dst: Path) -> None:
    """The only way publish moves files (tests inject failures here)."""
    os.rename(src, dst)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- publish

def publish(staging: Path, out: Path, result: dict, events: EventSink) -> Path:
    """Swap the staged outputs and ``result`` into OUT; on any failure the earlier result is untouched."""
    text = strict_result_json(result, events)
    staged_result = staging / RESULT_NAME
    with open(staged_result, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staged_result, 0o666 & ~umask)
    _fsync_dir(staging)

    backup = out / f"{BACKUP_PREFIX}{os.getpid()}"
    moves: list[tuple[Path, Path]] = []  # (from, to) in the order done, for the rollback
    with cancel.shielded():
        if backup.exists():
            shutil.rmtree(backup)
        backup.mkdir()
        new_names = sorted(p.name for p in staging.iterdir() if p.name != RESULT_NAME)
        try:
            if os.path.lexists(out / RESULT_NAME):  # first: OUT must not look complete during the swap
                _move(out / RESULT_NAME, backup / RESULT_NAME, moves)
            for name in sorted(set(new_names) | set(RESULT_ENTRIES)):
                if os.path.lexists(out / name):
                    _move(out / name, backup / name, moves)
            for name in new_names:
                _move(staging / name, out / name, moves)
            cancel.checkpoint()  # the last moment a cancel can still undo the run
            _move(staged_result, out / RESULT_NAME, moves)
        except BaseException as exc:
            kept = _rollback(moves)
            if kept:
                shutil.rmtree(backup, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno not in DISK_FULL_ERRNOS:
                where = exc.filename or out
                earlier = ("The earlier result is unchanged." if kept else
                           f"The earlier result is kept in {backup} and is restored by the next run.")
                raise LoopscapeError(
                    f"Could not move the new result into {out} ({exc.strerror} at {where}). {earlier}",
                    f"Make sure you own {out} and everything in it (no links into other folders), "
                    "or choose another --out.") from None
            raise
        _fsync_dir(out)
        shutil.rmtree(backup, ignore_errors=True)
    return out / RESULT_NAME


def _move(src: Path, dst: Path, moves: list[tuple[Path, Path]]) -> None:
    _rename(src, dst)
    moves.append((src, dst))


def _rollback(moves: list[tuple[Path, Path]]) -> bool:
    """Undo ``moves`` newest first; False when some rename could not be undone."""
    ok = True
    for src, dst in reversed(moves):
        try:
            os.rename(dst, src)
        except OSError:
            ok = False
    return ok


# ----------------------------------------------------------------------------- strict JSON

def strict_result_json(result: dict, events: EventSink) -> str:
    """``result`` as strict JSON: non-finite numbers become null, with one warning naming them."""
    bad: list[str] = []

    def clean(v: Any, where: str) -> Any:
        if isinstance(v, dict):
            return {str(k): clean(x, f"{where}.{k}" if where else str(k)) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if hasattr(v, "item") and callable(v.item) and not isinstance(v, (str, bytes)):
            try:
                v = v.item()  # numpy scalars
            except (TypeError, ValueError):
                return str(v)
        if isinstance(v, float) and not math.isfinite(v):
            bad.append(where)
            return None
        return v

    cleaned = clean(result, "")
    if bad:
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        msg = f"result.json: {shown} {'was' if len(bad) == 1 else 'were'} not a finite number and is written as null."
        events.warning(msg)
        if isinstance(cleaned.get("warnings"), list):
            cleaned["warnings"].append(msg)
    return json.dumps(cleaned, indent=2, allow_nan=False) + "\n"


# ----------------------------------------------------------------------------- disk full

def disk_full_cause(exc: BaseException) -> OSError | None:
    """The ENOSPC/EFBIG/EDQUOT OSError behind ``exc`` (itself or its cause chain), if any."""
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 16:
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return e
        e = e.__cause__ if e.__cause__ is not None or e.__suppress_context__ else e.__context__
        seen += 1
    return None


def estimate_run_bytes(max_side: int, frames: int, moving: bool, n_views: int) -> int:
    """Rough space a run needs in OUT, measured on the demo at 64 px: ~2.7 Gaussians per working
    pixel per frame at ~90 bytes (PLY + USD), and ~60 bytes per pixel per training view of cache."""
    pixels = max_side * max_side * 0.75  # a 4:3 photo at the working size
    n_frames = frames + 1 if moving else 1
    return int(pixels * (245 * n_frames + 60 * n_views) + 1e6)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.1f} GB"


def disk_full_error(cause: OSError, out: Path, needed: int) -> LoopscapeError:
    """One line: which folder, what stopped the write, and about how much space the run needs."""
    what = Path(cause.filename).name if cause.filename else "a file"
    if cause.errno == errno.EFBIG:
        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        limit = "" if soft == resource.RLIM_INFINITY else f" (the file size limit, ulimit -f, is {_mb(soft)})"
        return LoopscapeError(
            f"Writing {what} in {out} failed: file too large{limit}; this run needs about {_mb(needed)} there.",
            "Raise the limit (ulimit -f unlimited), or lower --max-side or --frames.")
    try:
        free = f"; {_mb(shutil.disk_usage(out).free)} is free"
    except OSError:
        free = ""
    quota = " (disk quota exceeded)" if cause.errno == errno.EDQUOT else ""
    return LoopscapeError(
        f"The disk holding {out} is full{quota}: writing {what} failed. This run needs about {_mb(needed)} there{free}.",
        "Free some space, choose an --out on another disk, or lower --max-side or --frames.")
