"""A backend result folder as the add-on reads it: result.json and the files it lists (no bpy)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..contract import LoopscapeError
from ..contract.protocol import (KEY_PLY_FRAMES, KEY_USD, KEY_USD_FRAME_START, KEY_VIDEO, RESULT_NAME,
                                 USD_FRAME_START)

RERUN = "Run the job again."


def load_result(directory: str | Path) -> dict:
    """result.json of an absolute result folder, with the folder under ``_dir``."""
    d = Path(directory)
    path = d / RESULT_NAME
    if not d.is_dir():
        raise LoopscapeError(f"'{d}' is not a folder.", f"Choose the backend's output folder (it holds {RESULT_NAME}).")
    if not path.is_file():
        raise LoopscapeError(f"'{d}' is not a Loopscape result: it has no {RESULT_NAME}.",
                             "Choose the folder you passed to the backend as --out.")
    try:
        res = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LoopscapeError(f"{path} is unreadable ({exc}).", RERUN) from exc
    if not isinstance(res, dict) or not (res.get(KEY_PLY_FRAMES) or res.get(KEY_USD)):
        raise LoopscapeError(f"{path} lists neither PLY frames nor a USD file.", RERUN)
    res["_dir"] = str(d)
    return res


def usd_path(res: dict) -> Path | None:
    return Path(res["_dir"]) / res[KEY_USD] if res.get(KEY_USD) else None


def ply_paths(res: dict) -> list[Path]:
    return [Path(res["_dir"]) / p for p in res.get(KEY_PLY_FRAMES) or []]


def video_path(res: dict) -> Path | None:
    """The result's video when it lists one that exists."""
    p = Path(res["_dir"]) / res[KEY_VIDEO] if res.get(KEY_VIDEO) else None
    return p if p is not None and p.is_file() else None


def usd_start(path: Path, res: dict) -> float:
    """Time code of the first frame: startTimeCode of a .usda, else result.json's usd_frame_start,
    else the protocol's first frame (the backend writes frame k at time code start + k)."""
    if path.suffix.lower() == ".usda":
        with path.open("r", errors="replace") as f:
            m = re.search(r"startTimeCode\s*=\s*([-0-9.eE]+)", f.read(4096))
        if m:
            return float(m.group(1))
    return float(res.get(KEY_USD_FRAME_START, USD_FRAME_START))
