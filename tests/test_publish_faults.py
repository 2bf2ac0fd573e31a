"""Issue 14: the publish swap keeps the earlier result until the new one is complete, one writer per
OUT, disk full and signals end in one line, result.json is strict JSON, and the cache follows its
inputs' content."""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from backend.infra import cancel
from backend.io import publish
from backend.infra.errors import Cancelled, LoopscapeError
from backend.infra.events import EventSink
from cli_harness import TINY, assert_clean_failure, run_inprocess, run_quietly, snapshot, write_photo

REPO = Path(__file__).resolve().parents[1]


def cli_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), LOOPSCAPE_THREADS="1", HF_HUB_OFFLINE="1",
                PYTHONDONTWRITEBYTECODE="1")


class Events(EventSink):
    def __init__(self) -> None:
        super().__init__(stream=open(os.devnull, "w"))
        self.records: list[dict] = []
        self.listeners.append(self.records.append)


@pytest.fixture
def restore_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


# ----------------------------------------------------------------------------- the swap, unit level

def make_result(folder: Path, tag: str, extra: bool = False) -> dict:
    """Files of a fake result whose every byte says which version it belongs to."""
    (folder / "ply").mkdir(parents=True)
    for i in range(3):
        (folder / "ply" / f"frame_{i:04d}.ply").write_text(f"{tag} ply {i}")
    (folder / "video.mp4").write_text(f"{tag} video")
    (folder / "input.png").write_text(f"{tag} png")
    if extra:
        (folder / "frames").mkdir()
        (folder / "frames" / "0000.png").write_text(f"{tag} frame")
    return {"tag": tag, "video": "video.mp4", "input_image": "input.png",
            "ply_frames": [f"ply/frame_{i:04d}.ply" for i in range(3)], "warnings": []}


def published(out: Path, tag: str, extra: bool = False) -> Path:
    staging = out / ".staging-old"
    result = make_result(staging, tag, extra)
    publish.publish(staging, out, result, Events())
    shutil.rmtree(staging)
    return out


def consistent_view(out: Path) -> str | None:
    """What a reader sees: the version of a complete result, or None when there is no result.json."""
    try:
        res = json.loads((out / "result.json").read_text())
    except FileNotFoundError:
        return None
    for rel in [res["video"], res["input_image"], *res["ply_frames"]]:
        assert (out / rel).read_text().startswith(res["tag"] + " "), f"{rel} does not belong to {res['tag']}"
    return res["tag"]


def test_reader_sees_old_or_new_never_a_mix(tmp_path, monkeypatch):
    out = published(tmp_path / "out", "old", extra=True)
    staging = out / ".staging-1"
    result = make_result(staging, "new")
    seen = []
    real = publish._rename

    def rename_and_look(src, dst):
        real(src, dst)
        seen.append(consistent_view(out))

    monkeypatch.setattr(publish, "_rename", rename_and_look)
    publish.publish(staging, out, result, Events())
    assert seen[0] is None and seen[-1] == "new" and set(seen) == {None, "new"}
    assert consistent_view(out) == "new"
    assert not (out / "frames").exists(), "the earlier result's extra files must not outlive it"
    assert not list(out.glob(".previous-*"))


def count_moves(tmp_path: Path) -> int:
    out = published(tmp_path / "count", "old", extra=True)
    staging = out / ".staging-1"
    result = make_result(staging, "new")
    n = 0
    real = publish._rename

    def counting(src, dst):
        nonlocal n
        n += 1
        real(src, dst)

    publish._rename, saved = counting, publish._rename
    try:
        publish.publish(staging, out, result, Events())
    finally:
        publish._rename = saved
    return n


def test_a_failed_move_at_any_step_keeps_the_earlier_result(tmp_path, monkeypatch):
    for k in range(count_moves(tmp_path)):
        out = published(tmp_path / f"out{k}", "old", extra=True)
        before = snapshot(out)
        staging = out / ".staging-1"
        result = make_result(staging, "new")
        calls = 0
        real = publish._rename

        def failing(src, dst):
            nonlocal calls
            calls += 1
            if calls == k + 1:
                raise PermissionError(13, "Permission denied", str(src))
            real(src, dst)

        monkeypatch.setattr(publish, "_rename", failing)
        with pytest.raises(LoopscapeError, match="earlier result is unchanged"):
            publish.publish(staging, out, result, Events())
        monkeypatch.setattr(publish, "_rename", real)
        shutil.rmtree(staging)
        assert snapshot(out) == before, f"step {k}"
        assert not list(out.glob(".previous-*"))


def test_recover_after_a_crash_mid_swap(tmp_path):
    # crash after the old result moved aside and half the new files moved in: no result.json in OUT
    out = published(tmp_path / "out", "old")
    before = snapshot(out)
    backup = out / ".previous-999"
    backup.mkdir()
    for name in ("result.json", "ply"):
        os.rename(out / name, backup / name)
    (out / "ply").mkdir()
    (out / "ply" / "frame_0000.ply").write_text("new ply 0")
    (out / ".staging-999").mkdir()
    ev = Events()
    publish.recover(out, ev)
    assert snapshot(out) == before
    assert not list(out.glob(".previous-*")) and not list(out.glob(".staging-*"))
    assert any("restored" in r.get("message", "") for r in ev.records)
    # crash after the commit: the new result stands, the backup is dropped
    backup.mkdir()
    (backup / "video.mp4").write_text("older")
    publish.recover(out, Events())
    assert snapshot(out) == before and not backup.exists()


def test_strict_json_nulls_non_finite_numbers_with_a_warning():
    ev = Events()
    result = {"metrics": {"a": float("nan"), "b": [1.0, float("inf")], "c": np.float32(2.5), "d": np.float64("-inf")},
              "warnings": []}
    text = publish.strict_result_json(result, ev)

    def no_constants(name):
        raise AssertionError(f"{name} in result.json")

    data = json.loads(text, parse_constant=no_constants)
    assert data["metrics"] == {"a": None, "b": [1.0, None], "c": 2.5, "d": None}
    warned = [r["message"] for r in ev.records if r["event"] == "warning"]
    assert len(warned) == 1 and "metrics.a" in warned[0] and "metrics.b[1]" in warned[0]
    assert data["warnings"] == warned


# ----------------------------------------------------------------------------- the lock

def test_second_run_into_the_same_out_is_refused(tmp_path, capsys):
    out = published(tmp_path / "out", "old")
    before = snapshot(out)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from backend.io.publish import out_lock\n"
         f"with out_lock(Path({str(out)!r})):\n    print('locked', flush=True); sys.stdin.read()"],
        cwd=REPO, env=cli_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        run = run_inprocess(capsys, "run", "--demo", *TINY, "--out", str(out))
        msg = assert_clean_failure(run, out, "is writing into", "another --out", earlier=before)
        assert f"pid {holder.pid}" in msg
        assert not (out / "work" / "demo_input").exists(), "--demo must not write before it holds the lock"
    finally:
        holder.communicate("", timeout=30)
    assert not (out / publish.LOCK_NAME).exists(), "the holder removes its lock file"


def test_stale_lock_file_does_not_block(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / publish.LOCK_NAME).write_text("999999\n")  # a run that died without cleaning up
    with publish.out_lock(out):
        assert (out / publish.LOCK_NAME).read_text().strip() == str(os.getpid())
        with publish.out_lock(out):  # the CLI and run_job both take it: reentrant in one process
            pass
        assert (out / publish.LOCK_NAME).exists()
    assert not (out / publish.LOCK_NAME).exists()


# ----------------------------------------------------------------------------- signals, unit level

def test_second_signal_during_cleanup_is_ignored(tmp_path, monkeypatch, restore_signals):
    out = tmp_path / "out"
    out.mkdir()
    cancel.install()
    real_rmtree = shutil.rmtree

    def rmtree_under_fire(path, *a, **k):
        os.kill(os.getpid(), signal.SIGTERM)  # the second signal arrives in the middle of the cleanup
        os.kill(os.getpid(), signal.SIGINT)
        real_rmtree(path, *a, **k)

    monkeypatch.setattr(publish.shutil, "rmtree", rmtree_under_fire)
    with pytest.raises(Cancelled):
        with publish.staging_dir(out) as staging:
            (staging / "partial.ply").write_text("x")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises here
            pytest.fail("the first signal did not cancel")
    assert not list(out.glob(".staging-*"))


def test_signal_during_publish_rolls_back(tmp_path, monkeypatch, restore_signals):
    out = published(tmp_path / "out", "old")
    before = snapshot(out)
    staging = out / ".staging-1"
    result = make_result(staging, "new")
    cancel.install()
    real = publish._rename

    def rename_then_signal(src, dst):
        real(src, dst)
        os.kill(os.getpid(), signal.SIGTERM)  # deferred: the swap must not stop half-way

    monkeypatch.setattr(publish, "_rename", rename_then_signal)
    with pytest.raises(Cancelled):
        publish.publish(staging, out, result, Events())
    shutil.rmtree(staging)
    assert snapshot(out) == before and not list(out.glob(".previous-*"))


# ----------------------------------------------------------------------------- through the CLI

@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    return write_photo(tmp_path_factory.mktemp("photo") / "photo.png")


@pytest.fixture(scope="module")
def earlier_result(photo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("earlier") / "out"
    assert run_quietly("run", "--image", str(photo), *TINY, "--path", "side", "--out", str(out)) == 0
    return out


def copy_of(earlier: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    out = tmp_path / "out"
    shutil.copytree(earlier, out, symlinks=True)
    return out, snapshot(out)


def test_failed_publish_through_the_cli_keeps_the_earlier_result(photo, earlier_result, tmp_path, capsys, monkeypatch):
    out, before = copy_of(earlier_result, tmp_path)
    real = publish._rename

    def refuse_ply(src, dst):  # as if OUT/ply belonged to another user
        if src.name == "ply" and src.parent.name.startswith(".staging-"):
            raise PermissionError(13, "Permission denied", str(dst))
        real(src, dst)

    monkeypatch.setattr(publish, "_rename", refuse_ply)
    run = run_inprocess(capsys, "run", "--image", str(photo), *TINY, "--path", "zoom-in", "--out", str(out))
    assert_clean_failure(run, out, "could not move", "earlier result is unchanged", earlier=before,
                         input_error=False)


def test_symlinked_ply_folder_is_replaced_not_followed(photo, earlier_result, tmp_path, capsys):
    out, _ = copy_of(earlier_result, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(out / "ply"), elsewhere)
    (out / "ply").symlink_to(elsewhere, target_is_directory=True)
    theirs = snapshot(elsewhere)
    run = run_inprocess(capsys, "run", "--image", str(photo), *TINY, "--path", "zoom-in", "--out", str(out))
    assert run.code == 0, run.stderr[-2000:]
    res = json.loads((out / "result.json").read_text())
    assert not (out / "ply").is_symlink()
    assert all((out / p).is_file() for p in res["ply_frames"])
    assert snapshot(elsewhere) == theirs, "the link's target must not be touched"


def test_disk_full_is_one_line(photo, earlier_result, tmp_path):
    out, before = copy_of(earlier_result, tmp_path)  # cached stages: the first big write is the PLY export
    limit = 200_000

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "backend", "run", "--image", str(photo), *TINY, "--frames", "6",
                           "--mask", str(write_mask(tmp_path)), "--hint", "10,80,110,80", "--out", str(out)],
                          cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300, preexec_fn=small_files)
    from cli_harness import CliRun

    run = CliRun(proc.returncode, proc.stdout, proc.stderr)
    msg = assert_clean_failure(run, out, str(out), "file too large", "needs about", earlier=before,
                               input_error=False)
    assert "ulimit -f" in msg


def write_mask(tmp_path: Path) -> Path:
    import cv2

    mask = np.zeros((96, 128), np.uint8)
    mask[56:] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    return tmp_path / "mask.png"


@pytest.mark.parametrize("gap", [0.001, 0.03])
def test_double_sigterm_exits_130_and_leaves_nothing(photo, tmp_path, gap):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "backend", "run", "--image", str(photo), "--max-side", "64",
                             "--quality", "draft", "--depth", "prior", "--device", "cpu", "--out", str(out)],
                            cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    for line in proc.stdout:
        if '"stage": "gaussians3d"' in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    time.sleep(gap)
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=60)
    from cli_harness import CliRun

    run = CliRun(proc.returncode, rest, err)
    assert_clean_failure(run, out, "cancelled", code=130)
    assert run.events[-1]["kind"] == "cancelled"
    assert not (out / "ply").exists() and not (out / "video.mp4").exists()


# ----------------------------------------------------------------------------- cache keys (issue 12's work)

def mean_step(out: Path) -> np.ndarray:
    """Mean displacement of the moving Gaussians from frame 0 to frame 1 (the forward layer's states)."""
    from contract.splats import read_layer_ply

    res = json.loads((out / "result.json").read_text())
    _, states = read_layer_ply(out / res["ply_forward"])
    return (states["position"][1] - states["position"][0]).mean(axis=0)


def test_negated_flow_into_the_same_out_moves_the_other_way(shared_scenes, tmp_path, capsys):
    scene = shared_scenes / "cine_0000008"
    flow = np.load(scene / "motion.npy")
    np.save(tmp_path / "neg.npy", -flow)
    out = tmp_path / "out"
    base = ["run", "--image", str(scene / "image.png"), *TINY]
    assert run_inprocess(capsys, *base, "--flow", str(scene / "motion.npy"), "--out", str(out)).code == 0
    first = mean_step(out)
    assert run_inprocess(capsys, *base, "--flow", str(tmp_path / "neg.npy"), "--out", str(out)).code == 0
    second = mean_step(out)
    assert np.abs(first).max() > 0
    np.testing.assert_allclose(second, -first, rtol=0.25, atol=0.1 * np.abs(first).max())


def test_disk_full_message_names_folder_need_and_free_space(tmp_path):
    import errno

    try:
        with open(tmp_path / "x", "wb"):
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "video.mp4"))
    except OSError as inner:
        try:
            raise RuntimeError("ffmpeg failed") from inner  # wrapped by a library
        except RuntimeError as outer:
            cause = publish.disk_full_cause(outer)
    assert cause is not None and cause.errno == errno.ENOSPC
    msg = str(publish.disk_full_error(cause, tmp_path, 123_000_000))
    assert str(tmp_path) in msg and "video.mp4" in msg and "about 123.0 MB" in msg and "is free" in msg
    assert publish.disk_full_cause(LoopscapeError("x")) is None
