"""JSON-lines progress protocol on stdout: the contract with Blender and other callers.

Every line is one JSON object with an ``event`` key: ``progress`` (stage, fraction),
``warning`` (message), ``log`` (message), ``done`` (result path) or ``error`` (message).
"""
from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, Callable, TextIO

_lock = threading.Lock()


class EventSink:
    """Writes events as JSON lines; tests swap ``stream`` or collect with ``listener``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.warnings: list[str] = []

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        if event == "warning":
            self.warnings.append(str(fields.get("message", "")))
        with _lock:
            self.stream.write(json.dumps(record, default=_jsonable) + "\n")
            self.stream.flush()
        for fn in self.listeners:
            fn(record)

    def progress(self, stage: str, fraction: float, **fields: Any) -> None:
        self.emit("progress", stage=stage, fraction=round(float(min(max(fraction, 0.0), 1.0)), 4), **fields)

    def warning(self, message: str, **fields: Any) -> None:
        self.emit("warning", message=message, **fields)

    def log(self, message: str, **fields: Any) -> None:
        self.emit("log", message=message, **fields)


def _jsonable(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(obj)


class NullSink(EventSink):
    """Discards output but still records warnings; for library use and tests."""

    def __init__(self) -> None:
        super().__init__(stream=_Null())


class _Null:
    def write(self, _s: str) -> int:
        return 0

    def flush(self) -> None:
        pass
