"""Catch CPU/CUDA device mixes on a CPU-only machine.

A CUDA run crashes ("Expected all tensors to be on the same device") wherever a tensor made
without a device meets one on the job's device. On one CPU both live in the same memory, so the
audit keeps its own books, with a ``TorchFunctionMode``:

- *host* tensors: made by a creator without ``device=`` (``torch.randn(..., generator=g)``,
  ``torch.zeros(n)``, ``torch.as_tensor(array)``, ``torch.from_numpy``), by ``.cpu()`` or
  ``.to("cpu")``, and whatever is computed from host tensors only;
- *job* tensors: everything else (made with ``device=``, moved with ``.to(JOB_DEVICE)``, the
  parameters, the results of any op that saw a job tensor).

It raises :class:`DeviceMix` when one op meets a host tensor with one or more dimensions and a
job tensor (CUDA accepts 0-dim CPU scalars and CPU index tensors, so those pass), and when
``.numpy()`` is called on a job tensor (CUDA needs ``.cpu()`` first). Run the pipeline with the
job device :data:`JOB_DEVICE`: a ``.to(ctx.device)`` or ``device=x.device`` then reads as "on the
job's device", and ``.to("cpu")`` or ``.cpu()`` as "back to the host".
"""
from __future__ import annotations

import traceback
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

JOB_DEVICE = torch.device("cpu", 0)  # any torch.device reads as the job's; the string "cpu" as the host
_TAG = "_loopscape_host"
_FACTORIES = {torch.zeros, torch.ones, torch.full, torch.empty, torch.rand, torch.randn, torch.randint,
              torch.randperm, torch.arange, torch.linspace, torch.logspace, torch.eye, torch.tensor,
              torch.as_tensor, torch.from_numpy, torch.normal}
_INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__}
_TO_NUMPY = {torch.Tensor.numpy, torch.Tensor.__array__}


class DeviceMix(AssertionError):
    """A tensor op that would mix the CPU and the job's CUDA device."""


def is_host(t: torch.Tensor) -> bool:
    return bool(getattr(t, _TAG, False))


def _tensors(obj: Any) -> list[torch.Tensor]:
    return [x for x in tree_flatten(obj)[0] if isinstance(x, torch.Tensor)]


def _device_tag(args: tuple, kwargs: dict) -> bool | None:
    """For ``.to`` and ``device=``: True (host), False (job), or None when no device is named.

    Only the literal string ``"cpu"`` means "the host": a ``torch.device`` is read as another
    tensor's device (``device=x.device``), i.e. the job's."""
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            return is_host(a)
        if isinstance(a, torch.device):
            return False
        if isinstance(a, str):
            try:
                torch.device(a)
            except RuntimeError:
                continue
            return a == "cpu"
    return None


def _where() -> str:
    """The innermost project frame: the line to fix."""
    for fr in reversed(traceback.extract_stack()[:-3]):
        if "/backend/" in fr.filename or "/contract/" in fr.filename:
            return f"{fr.filename.split('/backend/')[-1]}:{fr.lineno} {fr.name}: {fr.line}"
    return "?"


class DeviceAudit(TorchFunctionMode):
    """``with DeviceAudit(): ...`` raises DeviceMix at the first op that would mix devices on CUDA."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        self.ops += 1
        name = getattr(func, "__qualname__", getattr(func, "__name__", str(func)))
        if func in _TO_NUMPY and args and not is_host(args[0]):
            raise DeviceMix(f"{name} of a job-device tensor (CUDA needs .cpu() first) at {_where()}")
        if func in _FACTORIES:
            out = func(*args, **kwargs)
            data = args[0] if args else None
            if isinstance(data, torch.Tensor) and "device" not in kwargs:  # as_tensor(t): t itself or a copy
                return _tag(out, is_host(data), alias=out is data)
            return _tag(out, "device" not in kwargs or _device_tag((kwargs["device"],), {}) is True)
        if func in (torch.Tensor.cpu,):
            return _tag(func(*args, **kwargs), True, alias=True)
        if func in (torch.Tensor.cuda,):
            return _tag(func(*args, **kwargs), False, alias=True)
        if func is torch.Tensor.to:
            target = _device_tag(args[1:], kwargs)
            out = func(*args, **kwargs)
            return _tag(out, is_host(args[0]) if target is None else target, alias=target is not None)
        checked = _tensors(([args[0]] + list(args[2:]), kwargs) if func in _INDEXING else (args, kwargs))
        hosts = [t for t in checked if is_host(t)]
        if any(t.dim() > 0 for t in hosts) and len(hosts) < len(checked):
            shapes = [(tuple(t.shape), "host" if is_host(t) else "job") for t in checked]
            raise DeviceMix(f"{name} mixes host and job-device tensors {shapes} at {_where()}")
        out = func(*args, **kwargs)
        if checked and len(hosts) == len(checked):
            for t in _tensors(out):
                _set(t, True)
        return out


def _set(t: torch.Tensor, host: bool) -> None:
    try:
        setattr(t, _TAG, host)
    except (AttributeError, RuntimeError):  # some C-made tensors take no attributes
        pass


def _tag(out: Any, host: bool, alias: bool = False) -> Any:
    if isinstance(out, torch.Tensor):
        if alias:  # .cpu()/.to() may return the same object: tag a fresh alias, not the caller's tensor
            out = out.view_as(out)
        _set(out, host)
    return out
