"""Every Loopscape operator reports a failure as one readable line, never as a raw traceback.

``guard`` wraps an operator class's ``execute``, ``invoke`` and ``modal``: a LoopscapeError is
reported as its message and hint; anything else (a Blender API change, a bug) as the operator's
name, the exception's type and the first line of its message, with the traceback on the system
console for a bug report. The operator then returns CANCELLED, so Blender pushes no undo step for
a half-done change. An operator may define ``on_error(context)`` to clean up (timers, status text).
"""
from __future__ import annotations

import functools
import sys
import traceback

from ..contract import LoopscapeError

_METHODS = ("execute", "invoke", "modal")


def failure_message(label: str, exc: BaseException) -> str:
    if isinstance(exc, LoopscapeError):
        return " ".join(str(exc).split())
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return f"{label} failed: {what}. The system console has the details."


def _fail(self, context, exc: Exception) -> set[str]:
    if not isinstance(exc, LoopscapeError):
        traceback.print_exc(file=sys.stderr)
    cleanup = getattr(self, "on_error", None)
    if cleanup is not None:
        try:
            cleanup(context)
        except Exception:  # noqa: BLE001 - the first error is the one to report
            traceback.print_exc(file=sys.stderr)
    self.report({"ERROR"}, failure_message(getattr(self, "bl_label", type(self).__name__), exc))
    return {"CANCELLED"}


def _wrap(name: str, method):
    # Blender checks the argument count of these callbacks, so each keeps its exact signature.
    if name == "execute":
        def guarded(self, context):
            try:
                return method(self, context)
            except Exception as exc:  # noqa: BLE001 - the point: no exception reaches Blender raw
                return _fail(self, context, exc)
    else:
        def guarded(self, context, event):
            try:
                return method(self, context, event)
            except Exception as exc:  # noqa: BLE001
                return _fail(self, context, exc)
    functools.update_wrapper(guarded, method)
    guarded.__loopscape_guarded__ = True
    return guarded


def guard(cls):
    """Wrap the class's own execute/invoke/modal (once); returns the class."""
    for name in _METHODS:
        method = cls.__dict__.get(name)
        if method is not None and not getattr(method, "__loopscape_guarded__", False):
            setattr(cls, name, _wrap(name, method))
    return cls
