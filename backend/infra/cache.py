"""Stage artifacts cached in the work folder, keyed by a hash of everything a stage depends on.

A rerun with the same inputs (say, only the camera path changed) reuses the depth, the views and
the trained Gaussians instead of recomputing them.
"""
from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any, Callable

from backend.io.atomic import atomic_path


def file_digest(path: Path | None) -> str | None:
    """Content hash of an input file, so an edited photo or mask invalidates the cache."""
    if path is None or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def make_key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


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
