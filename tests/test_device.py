"""Device correctness without a GPU: the audit finds CPU/CUDA mixes on a CPU, the job's device is
checked before anything is written, and a GPU out of memory is one clear line with no result."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import backend.pipeline as pipeline
from backend.infra import device as D
from backend.stages import gaussians3d
from contract.quality import PRESETS
from cli_harness import TINY, assert_clean_failure, run_inprocess, write_photo
from device_audit import JOB_DEVICE, DeviceAudit, DeviceMix


def test_audit_catches_the_mixes_cuda_refuses() -> None:
    with DeviceAudit():
        x = torch.ones(4, 3).to(JOB_DEVICE)
        with pytest.raises(DeviceMix, match="mixes host and job"):
            torch.randn(4, 3, generator=torch.Generator()) * x  # the draft/final crash of issue 9
        with pytest.raises(DeviceMix, match="numpy"):
            x.numpy()
        # What CUDA allows: 0-dim CPU scalars, CPU indices, host-only work, .cpu() before numpy.
        (x * torch.tensor(2.0)).sum()
        x[torch.tensor([0, 2])]
        (torch.zeros(3) + 1).numpy()
        x.cpu().numpy()
        (D.randn((4, 3), D.seeded_generator(0), like=x) * x).sum()


def test_seeded_draws_match_torch_and_follow_like() -> None:
    like = torch.zeros(2, dtype=torch.float64)
    a = D.randn((5, 3), D.seeded_generator(7), like=like)
    b = torch.randn(5, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert a.dtype == torch.float64 and torch.equal(a, b)
    assert torch.equal(D.rand((4,), D.seeded_generator(3), like=like.float()),
                       torch.rand(4, generator=torch.Generator().manual_seed(3)))


def _tiny_draft(monkeypatch: pytest.MonkeyPatch) -> None:
    """Draft with short schedules that still densify (clone and split) and train the 4D field."""
    d = PRESETS["draft"]
    monkeypatch.setitem(PRESETS, "draft", dataclasses.replace(
        d, train3d=dataclasses.replace(d.train3d, iters=40, refine_start=10, refine_every=10, refine_stop=31),
        mom3d_iters=50, iters_4d=6))


def test_draft_run_mixes_no_devices(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole draft pipeline (densification, 4D training, validate, render, export) on a stand-in
    job device: every tensor that meets the job's tensors was made on their device."""
    _tiny_draft(monkeypatch)
    monkeypatch.setattr(pipeline, "resolve_device", lambda requested: JOB_DEVICE)
    splits: list[int] = []
    real_split = gaussians3d.DensityControl._split_rows

    def counting_split(g, mask, gen):  # noqa: ANN001
        splits.append(int(mask.sum()))
        return real_split(g, mask, gen)

    monkeypatch.setattr(gaussians3d.DensityControl, "_split_rows", staticmethod(counting_split))
    out = tmp_path / "o"
    with DeviceAudit() as audit:
        run = run_inprocess(capsys, "run", "--demo", *TINY[:-2], "--quality", "draft", "--device", "cpu",
                            "--events", "json", "--out", str(out))
    assert run.code == 0, run.stderr[-3000:]
    assert (out / "result.json").is_file()
    assert sum(splits) > 0, "the run never split a Gaussian, so the seeded draw went unchecked"
    assert audit.ops > 10_000


def test_cuda_without_cuda_writes_nothing(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "never"
    run = run_inprocess(capsys, "run", "--demo", "--device", "cuda", "--max-side", "64", "--events", "json",
                        "--out", str(out))
    assert_clean_failure(run, out, "--device cuda", "--device cpu", "cuda build of torch")
    assert not out.exists(), "the output folder was created before the device was checked"


def test_cuda_from_the_job_file_is_checked_too(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    job = tmp_path / "job.json"
    job.write_text('{"image": "%s", "device": "cuda"}' % write_photo(tmp_path / "p.png"))
    out = tmp_path / "never"
    run = run_inprocess(capsys, "run", str(job), "--events", "json", "--out", str(out))
    assert_clean_failure(run, out, "--device cpu")
    assert not out.exists()


def test_gsplat_that_does_not_compile(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(D, "gsplat_status", lambda: D.GsplatStatus(False, "gsplat found no CUDA toolkit (nvcc) "
                                                                          "to compile its kernels"))
    out = tmp_path / "never"
    run = run_inprocess(capsys, "run", "--image", str(write_photo(tmp_path / "p.png")), "--device", "cuda",
                        "--events", "json", "--out", str(out))
    assert_clean_failure(run, out, "nvcc", "install the cuda toolkit", "--device cpu")
    assert not out.exists()


def test_gpu_out_of_memory_is_one_line_and_no_result(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    photo = write_photo(tmp_path / "p.png")
    out = tmp_path / "o"
    ok = run_inprocess(capsys, "run", "--image", str(photo), *TINY, "--events", "json", "--out", str(out))
    assert ok.code == 0, ok.stderr[-2000:]
    from cli_harness import snapshot

    earlier = snapshot(out)

    def oom(*args, **kwargs):  # noqa: ANN002, ANN003
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 139 GiB total)")

    monkeypatch.setattr(gaussians3d, "run", oom)
    run = run_inprocess(capsys, "run", "--image", str(photo), *TINY, "--seed", "5", "--events", "json",
                        "--out", str(out))
    msg = assert_clean_failure(run, out, "out of memory", "gaussians3d", "--max-side", earlier=earlier,
                               input_error=False)
    assert "--max-side 64" in msg


def test_is_out_of_memory() -> None:
    assert D.is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert D.is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 20 MiB"))
    assert not D.is_out_of_memory(RuntimeError("Expected all tensors to be on the same device"))
