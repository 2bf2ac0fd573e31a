"""Where the tensors live: the torch device a job asked for, seeded random draws on it, and the CPU thread count.

Every tensor a stage creates is made on the device of the tensors it meets (``device=x.device``
or a ``*_like`` creator). Seeded random draws go through :func:`randn` / :func:`rand`: the
generator is a CPU one by default, so a seed makes the same choices on every device, and the
draw is moved to the tensor it is combined with (a few numbers per step; no GPU sync).
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from dataclasses import dataclass

import torch
from torch import Tensor

from backend.infra.errors import LoopscapeError

CUDA_FIX = "Install an NVIDIA driver and a CUDA build of torch (LOOPSCAPE_TORCH), or use --device cpu."
TOOLKIT_FIX = ("Install the CUDA toolkit (nvcc, the version of torch's CUDA) so gsplat can compile its kernels "
               "once (about a minute), or use --device cpu.")


# ----------------------------------------------------------------------------- seeded draws

def seeded_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded with ``seed`` on ``device`` (CPU by default: the same draws on every device)."""
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


def randn(shape: tuple[int, ...] | torch.Size, gen: torch.Generator, like: Tensor) -> Tensor:
    """Standard normal draws of ``shape`` from ``gen``, on ``like``'s device and dtype."""
    return torch.randn(tuple(shape), generator=gen, device=gen.device, dtype=like.dtype).to(like.device)


def rand(shape: tuple[int, ...] | torch.Size, gen: torch.Generator, like: Tensor) -> Tensor:
    """Uniform [0, 1) draws of ``shape`` from ``gen``, on ``like``'s device and dtype."""
    return torch.rand(tuple(shape), generator=gen, device=gen.device, dtype=like.dtype).to(like.device)


# ----------------------------------------------------------------------------- the job's device

@dataclass(frozen=True)
class GsplatStatus:
    ok: bool
    reason: str = ""  # why not, one clause


@functools.lru_cache(maxsize=1)
def gsplat_status() -> GsplatStatus:
    """Whether gsplat's CUDA kernels load, compiling them on first use (about a minute, once per machine).

    gsplat prints its compile banner with rich on stdout, which carries our JSON events: it is
    sent to stderr instead.
    """
    if not torch.cuda.is_available():
        return GsplatStatus(False, "torch sees no CUDA device")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            from gsplat.cuda._backend import _C
    except Exception as exc:  # a failed nvcc/ninja build raises RuntimeError/OSError/ImportError
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return GsplatStatus(False, f"gsplat's CUDA kernels failed to compile ({first})")
    if _C is None:
        return GsplatStatus(False, "gsplat found no CUDA toolkit (nvcc) to compile its kernels")
    return GsplatStatus(True)


def check_device(requested: str) -> torch.device:
    """The job's device, or LoopscapeError naming the fix. Cheap unless CUDA is asked for and gsplat
    still has to compile; call it before any stage (the CLI does, before it writes anything)."""
    if requested not in ("auto", "cpu", "cuda"):
        raise LoopscapeError(f"--device must be auto, cpu or cuda, got {requested!r}.", "Use --device cpu or cuda.")
    if requested == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if requested == "auto":
            return torch.device("cpu")
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}, but no GPU or driver is visible"
        raise LoopscapeError(f"--device cuda was requested but torch {torch.__version__} is {build}.", CUDA_FIX)
    if requested == "cuda":
        status = gsplat_status()
        if not status.ok:
            raise LoopscapeError(f"--device cuda needs gsplat's CUDA rasteriser, but {status.reason}.", TOOLKIT_FIX)
    # auto with CUDA: a broken gsplat leaves the pure-PyTorch rasteriser, which also runs on CUDA.
    return torch.device("cuda")


def resolve_device(requested: str) -> torch.device:
    return check_device(requested)


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError (torch.OutOfMemoryError), or the older RuntimeError wording."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or (
        isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc))


def configure_threads() -> int:
    """Use half the cores (at least one) for torch's CPU kernels unless LOOPSCAPE_THREADS says otherwise.

    torch's OpenMP workers spin while they wait; when other processes (Blender itself, a second
    job) share the cores, using all of them made training up to ten times slower here.
    """
    env = os.environ.get("LOOPSCAPE_THREADS")
    n = int(env) if env and env.isdigit() and int(env) > 0 else max(1, min(8, (os.cpu_count() or 2) // 2))
    torch.set_num_threads(n)
    return n
