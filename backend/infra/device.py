"""Where the tensors live: the torch device a job asked for, and the CPU thread count."""
from __future__ import annotations

import os

import torch

from backend.infra.errors import LoopscapeError


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise LoopscapeError("CUDA was requested but torch sees no CUDA device.",
                                 "Use --device cpu (or auto), or install a CUDA build of torch on a machine with an NVIDIA GPU.")
        return torch.device("cuda")
    if requested == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def configure_threads() -> int:
    """Use half the cores (at least one) for torch's CPU kernels unless LOOPSCAPE_THREADS says otherwise.

    torch's OpenMP workers spin while they wait; when other processes (Blender itself, a second
    job) share the cores, using all of them made training up to ten times slower here.
    """
    env = os.environ.get("LOOPSCAPE_THREADS")
    n = int(env) if env and env.isdigit() and int(env) > 0 else max(1, min(8, (os.cpu_count() or 2) // 2))
    torch.set_num_threads(n)
    return n
