"""Stage artifacts cached in the work folder, keyed by the content of everything a stage reads.

The orchestrator derives each stage's key from the stage's name, its declared parameters and
the keys of its declared inputs; the inputs read from files (the ``load`` stage's artifacts) are
keyed by their content. So an edited photo, a negated flow or a moved arrow invalidates exactly
the stages downstream of it, and a rerun that changed only the camera path reuses the depth,
the views and the trained Gaussians.
"""
from __future__ import annotations

import dataclasses
import hashlib
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np

from backend.io.atomic import atomic_path


def file_digest(path: Path | None) -> str | None:
    """Content hash of an input file (None when there is no such file)."""
    if path is None or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def content_digest(value: Any) -> str:
    """Hash of a value by content: arrays and tensors by dtype, shape and bytes; dataclasses,
    mappings and sequences element by element; other scalars by their repr."""
    h = hashlib.sha256()
    _feed(h, value)
    return h.hexdigest()[:16]


def make_key(*parts: Any) -> str:
    return content_digest(parts)


def _feed(h: "hashlib._Hash", v: Any) -> None:
    if hasattr(v, "cache_identity"):  # an artifact that names what identifies it (not, say, its file path)
        v = v.cache_identity()
    if hasattr(v, "detach") and hasattr(v, "cpu"):  # a torch tensor, without importing torch here
        v = v.detach().cpu().numpy()
    if isinstance(v, np.ndarray):
        a = np.ascontiguousarray(v)
        h.update(f"nd{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    elif dataclasses.is_dataclass(v) and not isinstance(v, type):
        h.update(f"dc{type(v).__qualname__}".encode())
        for f in dataclasses.fields(v):
            h.update(f.name.encode())
            _feed(h, getattr(v, f.name))
    elif isinstance(v, dict):
        h.update(f"d{len(v)}".encode())
        for k in sorted(v, key=str):
            h.update(str(k).encode())
            _feed(h, v[k])
    elif isinstance(v, (list, tuple)):
        h.update(f"l{len(v)}".encode())
        for x in v:
            _feed(h, x)
    else:
        h.update(f"s{type(v).__name__}:{v!r};".encode())


class StageCache:
    def __init__(self, folder: Path, enabled: bool = True) -> None:
        self.folder = folder
        self.enabled = enabled
        self.hits: list[str] = []

    def get_or_compute(self, stage: str, key: str, compute: Callable[[], Any]) -> Any:
        path = self.folder / f"{stage}-{key}.pkl"
        if self.enabled and path.is_file():
            try:
                with open(path, "rb") as f:
                    value = pickle.load(f)
                self.hits.append(stage)
                return value
            except Exception:  # a stale or truncated cache entry is just recomputed
                path.unlink(missing_ok=True)
        value = compute()
        if self.enabled:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        return value
