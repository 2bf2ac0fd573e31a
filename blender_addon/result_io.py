"""A backend result folder as the add-on reads it: result.json and the files it lists (no bpy)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..contract import LoopscapeError
from ..contract.protocol import (KEY_LAYOUT, KEY_PLY_BACKWARD, KEY_PLY_FORWARD, KEY_PLY_FRAMES, KEY_PLY_STATIC, KEY_USD,
                                 KEY_USD_FRAME_START, KEY_VIDEO, LAYOUT_LOOP_LAYERS, RESULT_NAME, USD_FRAME_START)

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


@dataclass
class LayerFiles:
    """The PLY files of the compact loop layout (contract.protocol LAYOUT_LOOP_LAYERS)."""

    static: Path
    forward: Path
    backward: Path


def is_layered(res: dict) -> bool:
    """Whether the result is a loop in the compact layout: static once, forward/backward layers per frame."""
    layout = res.get(KEY_LAYOUT)
    if layout is not None and layout != LAYOUT_LOOP_LAYERS:
        raise LoopscapeError(f"The result's layout '{layout}' is newer than this add-on knows.",
                             "Update the Loopscape extension, or run the job again with a matching backend.")
    return layout == LAYOUT_LOOP_LAYERS


def layer_files(res: dict) -> LayerFiles:
    """The layout's PLY files; a readable error when result.json or the folder lacks one."""
    d = Path(res["_dir"])
    paths = {}
    for name, key in (("static", KEY_PLY_STATIC), ("forward", KEY_PLY_FORWARD), ("backward", KEY_PLY_BACKWARD)):
        if not res.get(key) or not (d / res[key]).is_file():
            raise LoopscapeError(f"The result in {d} is incomplete: its {name} Gaussians ({res.get(key) or key}) "
                                 "are missing.", RERUN)
        paths[name] = d / res[key]
    return LayerFiles(**paths)
