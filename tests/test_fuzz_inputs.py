"""Issue 14: seeded random mutations of a valid job, a camera-path file and a labelme file, through
validation and the cheap constructors after it. The only exception allowed out is LoopscapeError;
numpy must not warn (an overflow warning means a hostile number slipped through).
"""
from __future__ import annotations

import copy
import json
import random
import warnings
from typing import Any, Callable

import numpy as np
import pytest

from backend.model.camera_paths import load_path_json
from backend.infra.errors import LoopscapeError
from backend.job import JobSpec
from backend.io.motion_inputs import _hint_from_dict
from backend.stages.load import input_camera
from contract.labelme import parse_labelme
from backend.io.input_checks import camera_path, check_intrinsics, parse_json_text

N_MUTANTS = 2000  # per file type, object level; plus half as many text-level mutants
W0, H0 = 128, 96  # the photo
W, H = 64, 48  # its working size

HOSTILE: list[Any] = [
    None, True, False, 0, -1, 1, 2, 0.5, -0.0, 1e-300, -1e-300, 1e300, -1e300, 1e15, 10**15 + 1, 10**400,
    float("nan"), float("inf"), float("-inf"), "", "x", "y", "1", "nan", "inf", "hint", "prior", "auto", "é" * 300,
    [], {}, [[]], [1, 2], [1, 2, 3], [[1, 2, 3]] * 3, [[0, 0, 0, 1]] * 4, {"a": 1}, {"K": None},
]


def deep(n: int) -> Any:
    v: Any = 1
    for _ in range(n):
        v = [v]
    return v


def valid_path(n: int = 4) -> dict:
    K = [[60.0, 0.0, 32.0], [0.0, 60.0, 24.0], [0.0, 0.0, 1.0]]
    frames = []
    for i in range(n):
        w2c = np.eye(4)
        w2c[0, 3] = 0.02 * i
        frames.append({"K": copy.deepcopy(K), "w2c": w2c.tolist()})
    return {"width": W, "height": H, "frames": frames}


def valid_job() -> dict:
    return {
        "image": "photo.png", "mask": "mask.png", "labelme": None, "flow": None,
        "hints": [{"start": [10.0, 80.0], "end": [110.0, 80.0], "speed": None},
                  {"start": [20, 66], "end": [120, 70], "speed": 1.5}],
        "anchors": [[5.0, 5.0]], "speed": 1.0,
        "camera": {"K": [[120.0, 0.0, 64.0], [0.0, 120.0, 48.0], [0.0, 0.0, 1.0]], "width": W0, "height": H0},
        "path": valid_path(), "depth": "prior", "depth_kind": "depth", "frames": 4, "fps": 24.0, "max_side": 64,
        "quality": "preview", "device": "cpu", "seed": 0, "png_frames": False, "mom3d": True,
    }


def nodes(obj: Any, path: tuple = ()) -> list[tuple]:
    """Paths (key tuples) of every node under ``obj``, the root excluded."""
    out: list[tuple] = []
    if len(path) > 12:  # do not walk into the deep-nesting mutants themselves
        return out
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return out
    for k, v in items:
        out.append(path + (k,))
        out.extend(nodes(v, path + (k,)))
    return out


def get(obj: Any, path: tuple) -> Any:
    for k in path:
        obj = obj[k]
    return obj


def mutate(obj: Any, rng: random.Random) -> Any:
    obj = copy.deepcopy(obj)
    for _ in range(rng.randint(1, 3)):
        paths = nodes(obj)
        if not paths:
            return rng.choice(HOSTILE)
        p = rng.choice(paths)
        parent, key = get(obj, p[:-1]), p[-1]
        op = rng.random()
        if op < 0.45:
            parent[key] = rng.choice(HOSTILE)
        elif op < 0.55:
            parent[key] = deep(rng.choice([5, 40, 200]))
        elif op < 0.65:
            del parent[key]
        elif op < 0.72:
            if isinstance(parent, dict):
                parent[rng.choice(["extra", "K", "w2c", "fov_deg", "width", "name", "speed"])] = rng.choice(HOSTILE)
            else:
                parent.insert(key, copy.deepcopy(parent[key]))
        elif op < 0.82:
            v = parent[key]
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                parent[key] = v * rng.choice([-1, 0, 1e-9, 1e9, 1e300, 10**20])
            else:
                parent[key] = [v]
        elif op < 0.9:
            parent[key] = str(parent[key])
        else:
            v = parent[key]
            if isinstance(v, list) and v:
                parent[key] = v[: rng.randrange(len(v))]
            else:
                parent[key] = {"value": v}
    return obj


def mutate_text(text: str, rng: random.Random) -> str:
    alphabet = '{}[],:"0123456789eE.-+ NaInfinityrueals\\'
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(text) + 1)
        op = rng.random()
        if op < 0.35:
            text = text[:i] + text[i + rng.randint(1, 8):]
        elif op < 0.7:
            text = text[:i] + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) + text[i:]
        elif op < 0.85:
            j = rng.randrange(len(text) + 1)
            text = text[:i] + text[min(i, j):max(i, j)] + text[i:]
        else:
            text = text[:i] + rng.choice(["9" * 400, "1e999", "[" * 3000, "NaN", "-Infinity"]) + text[i:]
    return text


def downstream_job(job: JobSpec) -> None:
    """The cheap constructors the pipeline applies to a validated job before any heavy stage."""
    cam = input_camera(job, (W0, H0), (W, H))
    assert np.isfinite(cam.K).all()
    if job.path is not None:
        cams = camera_path(job, cam)
        assert len(cams) == job.frames
    for i, h in enumerate(job.hints):
        hint = _hint_from_dict(h, i, W / W0, H / H0, W0, H0)
        assert np.isfinite(hint.velocity()).all()


def downstream_path(doc: Any) -> None:
    cams = load_path_json(doc, W, H)
    for c in cams:
        assert np.isfinite(c.K).all() and np.isfinite(c.w2c).all()
        check_intrinsics(c.K.tolist(), c.width, c.height, "scaled K", "")
        np.linalg.inv(c.w2c)


def run_fuzz(seed: int, base: Any, to_object: Callable[[Any], Any], check: Callable[[Any], None]) -> dict[str, int]:
    rng = random.Random(seed)
    text0 = json.dumps(base)
    counts = {"accepted": 0, "refused": 0}
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        warnings.simplefilter("error")
        for i in range(N_MUTANTS + N_MUTANTS // 2):
            if i < N_MUTANTS:
                mutant: Any = mutate(base, rng)
                label = f"object mutant {i}: {repr(mutant)[:300]}"
            else:
                mutant = mutate_text(text0, rng)
                label = f"text mutant {i}: {mutant[:300]!r}"
            try:
                if isinstance(mutant, str) and i >= N_MUTANTS:
                    mutant = parse_json_text(mutant, "fuzzed file", "fix it")
                check(to_object(mutant))
                counts["accepted"] += 1
            except LoopscapeError as exc:
                assert str(exc).strip(), label
                counts["refused"] += 1
            except Exception as exc:  # noqa: BLE001 - the point of the test
                pytest.fail(f"{type(exc).__name__}: {exc} from {label}")
    return counts


def test_fuzz_job(tmp_path):
    base = valid_job()
    job = JobSpec.from_dict(base, base_dir=tmp_path)
    downstream_job(job)  # the unmutated job is fine
    counts = run_fuzz(1414, base, lambda d: JobSpec.from_dict(d, base_dir=tmp_path), downstream_job)
    assert counts["accepted"] > 100 and counts["refused"] > 1000, counts


def test_fuzz_camera_path():
    base = valid_path()
    downstream_path(base)
    counts = run_fuzz(2714, base, lambda d: d, downstream_path)
    assert counts["accepted"] > 100 and counts["refused"] > 1000, counts


def test_mutations_are_deterministic():
    a = [repr(mutate(valid_job(), random.Random(5))) for _ in range(3)]
    b = [repr(mutate(valid_job(), random.Random(5))) for _ in range(3)]
    assert a == b


def valid_labelme() -> dict:
    return {"version": "5.0", "imageWidth": W0, "imageHeight": H0, "imageData": None, "shapes": [
        {"label": "water", "shape_type": "polygon", "points": [[10, 50], [120, 50], [120, 90], [10, 90]]},
        {"label": "sky", "shape_type": "rectangle", "points": [[0, 0], [128, 20]]},
        {"label": "hint_0", "shape_type": "line", "points": [[20, 70], [80, 72]]},
        {"label": "", "shape_type": "linestrip", "points": [[30, 10], [40, 12], [60, 12]]},
        {"label": "anchor_0", "shape_type": "point", "points": [[100, 30]]},
        {"label": "note", "shape_type": "circle", "points": [[5, 5], [9, 9]]},
    ]}


def downstream_labelme(doc: Any) -> None:
    """What both processes do with a parsed file: the mask and the arrows at the working size."""
    lm = parse_labelme(doc, "fuzzed.json")
    mask = lm.mask(W, H)
    assert mask is None or mask.shape == (H, W)
    for h in lm.scaled_hints(W, H):
        assert np.isfinite(h.start).all() and np.isfinite(h.end).all() and h.start != h.end
    assert all(np.isfinite(a).all() for a in lm.scaled_anchors(W, H))


def test_fuzz_labelme():
    base = valid_labelme()
    downstream_labelme(base)
    counts = run_fuzz(3141, base, lambda d: d, downstream_labelme)
    assert counts["accepted"] > 100 and counts["refused"] > 500, counts
