"""Idempotent cancellation: SIGTERM/SIGINT become one ``Cancelled`` exception, raised at most once.

Blender (or a user pressing Ctrl+C twice) may send a second signal while the first one is still
unwinding. If that second signal raised again it would interrupt the cleanup (a staging folder
left behind, a half-rolled-back publish, a traceback from an atexit hook). So:

* the first signal raises ``Cancelled`` unless a ``shielded()`` block is running, in which case it
  is only recorded and ``checkpoint()`` raises it at a safe point;
* every later signal is recorded and ignored;
* ``settle()`` (the CLI calls it when it starts reporting) ignores every further signal, through
  interpreter shutdown too.
"""
from __future__ import annotations

import signal
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from backend.infra.errors import Cancelled

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class _State:
    requested: int | None = None  # the first signal received
    raised: bool = False  # Cancelled has been raised once; never again
    shield_depth: int = 0
    settled: bool = False


_state = _State()


def _on_signal(signum: int, _frame) -> None:
    if _state.settled or _state.requested is not None:
        return  # a repeated signal must not interrupt the cleanup the first one started
    _state.requested = signum
    if _state.shield_depth == 0:
        _state.raised = True
        raise Cancelled(f"cancelled by signal {signum}")


def install() -> None:
    """Route SIGTERM/SIGINT through the idempotent handler (main thread only)."""
    global _state
    _state = _State()
    for s in SIGNALS:
        signal.signal(s, _on_signal)


def requested() -> bool:
    return _state.requested is not None


def checkpoint() -> None:
    """Raise the pending cancellation, once, if a signal came while shielded."""
    if _state.requested is not None and not _state.raised and not _state.settled:
        _state.raised = True
        raise Cancelled(f"cancelled by signal {_state.requested}")


@contextmanager
def shielded() -> Iterator[None]:
    """A block a signal must not interrupt (publishing, rollback, removing the staging folder)."""
    _state.shield_depth += 1
    try:
        yield
    finally:
        _state.shield_depth -= 1


def settle() -> None:
    """From now on signals change nothing: the process is reporting its outcome and exiting.

    SIG_IGN, not just a flag: interpreter shutdown puts Python-level handlers back to SIG_DFL
    (a late SIGTERM then kills the process with -15 instead of exit code 130) but keeps SIG_IGN.
    """
    _state.settled = True
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
