"""The add-on's backend runner without bpy: events, refusals, and real processes behind a fake interpreter."""
from __future__ import annotations

import os
import time

import pytest
from test_blender_support import fake_interpreter

from loopscape_addon.blender_addon import runner
from loopscape_addon.contract import LoopscapeError
from loopscape_addon.contract.protocol import DONE, ERROR, LOG, PROGRESS, RESULT_NAME, WARNING

@pytest.fixture
def fake_python(tmp_path) -> str:
    """A fake interpreter (tests/blender/fake_backend.py) whose ok mode leaves an empty result.json."""
    (tmp_path / "result").mkdir()
    (tmp_path / "result" / RESULT_NAME).write_text("{}")
    (tmp_path / "backend").mkdir()  # the backend folder check_interpreter looks for
    return str(fake_interpreter(tmp_path))


def _run(tmp_path, python: str, mode: str) -> runner.BackendRun:
    (tmp_path / "mode").write_text(mode)
    job = tmp_path / "job.json"
    job.write_text("{}")
    return runner.BackendRun(python, str(tmp_path), job, tmp_path / f"out_{mode}", runner.new_log_path(tmp_path))


def test_state_follows_the_protocol_events():
    st = runner.RunState()
    for ev in ({"event": PROGRESS, "stage": "depth", "fraction": 0.25}, {"event": WARNING, "message": "slow"},
               {"event": LOG, "message": "hello"}, {"event": runner.TEXT, "message": "raw"},
               {"event": DONE, "result": "/x/result.json"},
               {"event": ERROR, "message": "Bad mask.", "hint": "Paint it.", "kind": "input"},
               {"event": runner.EXIT, "returncode": 2}):
        st.apply(ev)
    assert (st.stage, st.fraction) == ("depth", 0.25)
    assert st.warnings == ["slow"] and st.log_tail == ["warning: slow", "hello", "raw"]
    assert st.result_path == "/x/result.json"
    assert (st.error, st.hint) == ("Bad mask.", "Paint it.")
    assert st.finished and st.returncode == 2


def test_output_lines_become_events():
    assert runner._parse('{"event": "log", "message": "m"}') == {"event": "log", "message": "m"}
    assert runner._parse('{"no": "event"}') == {"event": runner.TEXT, "message": '{"no": "event"}'}
    assert runner._parse("  Traceback  ") == {"event": runner.TEXT, "message": "Traceback"}
    assert runner._parse("   ") is None


def test_interpreter_problems_say_what_to_do(tmp_path, fake_python):
    with pytest.raises(LoopscapeError) as exc:
        runner.check_interpreter("", "")
    assert "build.py setup" in exc.value.hint
    with pytest.raises(LoopscapeError) as exc:
        runner.check_interpreter(str(tmp_path / "nope"), "")
    assert "does not exist" in exc.value.message and "Preferences" in exc.value.hint
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(LoopscapeError, match="not executable"):
        runner.check_interpreter(str(plain), "")
    with pytest.raises(LoopscapeError, match="has no 'backend' package"):
        runner.check_interpreter(fake_python, str(tmp_path / "out"))
    ok, report = runner.check_backend(str(tmp_path / "nope"), "")
    assert not ok and "does not exist" in report


def test_backend_env_puts_the_backend_first_and_drops_blenders_python(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/other")
    monkeypatch.setenv("PYTHONHOME", "/blender/python")
    env = runner.backend_env("/repo")
    assert env["PYTHONPATH"] == "/repo" + os.pathsep + "/other"
    assert "PYTHONHOME" not in env and env["PYTHONUNBUFFERED"] == "1"


def test_log_names_never_repeat(tmp_path):
    first = runner.new_log_path(tmp_path)
    first.write_text("")
    second = runner.new_log_path(tmp_path)
    assert second != first and second.name.startswith("backend-") and second.suffix == ".log"


def test_a_successful_run_names_its_result(tmp_path, fake_python):
    run = _run(tmp_path, fake_python, "ok")
    seen = []
    st = run.wait(timeout=30, on_event=seen.append)
    assert st.finished and st.returncode == 0 and st.stage == "depth"
    assert [e["event"] for e in seen] == [PROGRESS, runner.TEXT, WARNING, DONE, runner.EXIT]
    assert st.warnings == ["fake warning"]
    assert run.outcome() == (True, str(tmp_path / "out_ok" / RESULT_NAME))
    log = run.log_path.read_text()
    assert "plain text from a library" in log and "[exit code 0]" in log


def test_a_backend_error_shows_message_and_hint(tmp_path, fake_python):
    run = _run(tmp_path, fake_python, "error")
    run.wait(timeout=30)
    ok, msg = run.outcome()
    assert not ok and msg == f"Backend failed: The mask is empty. Paint it. Full log: {run.log_path}"


def test_a_crash_shows_the_exit_code_and_last_output(tmp_path, fake_python):
    run = _run(tmp_path, fake_python, "crash")
    run.wait(timeout=30)
    ok, msg = run.outcome()
    assert not ok and "exited with code 1" in msg and "RuntimeError: fake segfault-like crash" in msg


def test_cancel_stops_the_whole_process_group(tmp_path, fake_python):
    run = _run(tmp_path, fake_python, "hang")
    t = time.monotonic()
    while not (tmp_path / "pids").is_file() or len((tmp_path / "pids").read_text().split()) < 2:
        assert time.monotonic() - t < 30, "the fake backend never started"
        time.sleep(0.05)
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    run.cancel(grace=0.5)  # the fake ignores SIGINT: cancel must escalate
    st = run.wait(timeout=30)
    assert st.finished and st.cancelled and run.outcome()[1].startswith("Cancelled")
    t = time.monotonic()
    while any(_alive(p) for p in pids):
        assert time.monotonic() - t < 5, "a process of the group outlived cancel"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie is dead for our purposes
    except OSError:
        return False
