"""Benchmark: a tiny sweep in fresh subprocesses writes a CSV with per-stage time and memory and a plot."""
import csv

import numpy as np

from backend.tools.bench import main, scaling_exponent


def test_scaling_exponent():
    x = [100.0, 400.0, 1600.0]
    assert abs(scaling_exponent(x, [3 * v ** 1.5 for v in x]) - 1.5) < 1e-9
    assert np.isnan(scaling_exponent([1.0], [2.0]))


def test_tiny_bench_writes_csv_and_plot(tmp_path):
    out = tmp_path / "bench"
    assert main(["--sizes", "32", "48", "--frames", "4", "--loop-lengths", "4", "8", "--device", "cpu", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "bench.csv")))
    sizes = {r["size"] for r in rows}
    assert sizes == {"32", "48"}
    for size in ("32", "48"):
        stages = {r["stage"]: r for r in rows if r["size"] == size and r["frames"] == "4"}
        for s in ("load", "depth", "gaussians3d", "mom3d", "render", "export", "total"):
            assert s in stages, s
        total = float(stages["total"]["seconds"])
        assert total > 0 and sum(float(r["seconds"]) for k, r in stages.items() if k != "total") <= total * 1.05
        assert 50 < float(stages["total"]["peak_rss_mb"]) < 8000  # a real process peak, in MB
        assert all(float(r["peak_rss_mb"]) <= float(stages["total"]["peak_rss_mb"]) + 1 for r in stages.values())
    # more pixels -> more Gaussians
    n = {r["size"]: int(r["n_gaussians"]) for r in rows if r["stage"] == "total"}
    assert n["48"] > n["32"]
    assert any(r["frames"] == "8" for r in rows)  # the loop-length run
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG" and (out / "bench.png").stat().st_size > 5000
    assert "pixels^" in (out / "bench.md").read_text()


def test_qualities_each_run_at_every_size(tmp_path):
    out = tmp_path / "bench"
    assert main(["--sizes", "32", "--frames", "4", "--loop-lengths", "--qualities", "preview,draft", "--device", "cpu",
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "bench.csv")))
    assert {r["quality"] for r in rows if r["stage"] == "total"} == {"preview", "draft"}
    assert any(r["stage"] == "gaussians4d" and r["quality"] == "draft" and float(r["seconds"]) > 0 for r in rows)
    assert "| draft | 32 |" in (out / "bench.md").read_text()


def test_cuda_bench_without_cuda_is_one_line(tmp_path, capsys, monkeypatch):
    import pytest
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as bad:
        main(["--qualities", "preview,ultra"])
    assert bad.value.code == 2
    assert main(["--device", "cuda", "--sizes", "512", "1280", "--frames", "120", "--qualities", "preview,final",
                 "--out", str(tmp_path / "b")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err[-1].startswith("error: --device cuda") and "--device cpu" in err[-1]
    assert not (tmp_path / "b").exists()
