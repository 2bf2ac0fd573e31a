"""Run the backend: modal with a timer in the UI, blocking in background mode; and cancel."""
from __future__ import annotations

import re
from pathlib import Path

import bpy

from ..blender_addon import importer, job_writer, preferences, runner
from ..contract import LoopscapeError
from ..contract.protocol import RESULT_NAME

_ACTIVE: dict = {"run": None}


def active_run():
    return _ACTIVE["run"]


def job_folder(context) -> Path:
    prefs = preferences.get(context)
    photo = context.scene.loopscape.photo
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(photo.filepath).stem if photo else "scene") or "scene"
    return preferences.resolved_work_dir(prefs) / stem


def start_run(context) -> runner.BackendRun:
    """Validate, write the job and start the backend (raises LoopscapeError or OSError)."""
    scene = context.scene
    prefs = preferences.get(context)
    folder = job_folder(context)
    job = job_writer.build_job(scene, folder, device_default=prefs.device)
    job_path = job_writer.write_job(job, folder / "job.json")
    run = runner.BackendRun(preferences.resolved_python(prefs), preferences.resolved_root(prefs), job_path,
                            folder / "out", runner.new_log_path(folder))
    props = scene.loopscape
    props.running, props.progress, props.stage, props.last_error = True, 0.0, "starting", ""
    props.log_tail, props.log_path = "", str(run.log_path)
    _ACTIVE["run"] = run
    return run


def sync_props(scene, run: runner.BackendRun) -> None:
    props = scene.loopscape
    props.progress = min(max(run.state.fraction, 0.0), 1.0)
    props.stage = run.state.stage
    props.log_tail = "\n".join(run.state.log_tail)


def finish_run(context, run: runner.BackendRun) -> tuple[bool, str]:
    """Import on success; on failure or cancel leave the scene as it was. Returns (ok, message)."""
    _ACTIVE["run"] = None
    scene = context.scene
    props = scene.loopscape
    props.running = False
    ok, msg = run.outcome()
    if ok and Path(msg).stat().st_mtime < run.started - 1:
        ok, msg = False, f"Backend finished without writing a new {RESULT_NAME}. Full log: {run.log_path}"
    if not ok:
        props.last_error = msg
        props.stage = "cancelled" if run.state.cancelled else "failed"
        return False, msg
    try:
        rep = importer.import_result(context, run.out_dir)
    except LoopscapeError as exc:
        props.last_error = f"{exc} Full log: {run.log_path}"
        props.stage = "failed"
        return False, props.last_error
    props.stage, props.progress = "done", 1.0
    warn = f" ({len(run.state.warnings)} warnings, see log)" if run.state.warnings else ""
    return True, f"Imported {rep.frames} frames from {run.out_dir}{warn}"


class LOOPSCAPE_OT_run(bpy.types.Operator):
    """Run the backend on the photo, mask, hints and camera path; imports the result when done"""

    bl_idname = "loopscape.run"
    bl_label = "Run"

    timeout: bpy.props.FloatProperty(name="Timeout (s)", default=0.0, min=0.0,
                                     description="Blocking mode only: cancel after this many seconds (0: no limit)")

    @classmethod
    def poll(cls, context):
        return active_run() is None

    def execute(self, context):
        try:
            run = start_run(context)
        except (LoopscapeError, OSError) as exc:
            context.scene.loopscape.last_error = str(exc)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if bpy.app.background or context.window is None:
            return self._blocking(context, run)
        self._run = run
        self._timer = context.window_manager.event_timer_add(0.1, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _blocking(self, context, run):
        scene = context.scene
        run.wait(timeout=self.timeout or None, on_event=lambda _ev: sync_props(scene, run))
        sync_props(scene, run)
        ok, msg = finish_run(context, run)
        self.report({"INFO"} if ok else {"ERROR"}, msg)
        return {"FINISHED"} if ok else {"CANCELLED"}

    def on_error(self, context) -> None:
        """After an unexpected error (op_guard): no timer, status text or backend process outlives it."""
        timer = getattr(self, "_timer", None)
        if timer is not None:
            context.window_manager.event_timer_remove(timer)
            self._timer = None
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        run = active_run()
        if run is not None:
            run.cancel()
            _ACTIVE["run"] = None
        context.scene.loopscape.running = False

    def modal(self, context, event):
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        run = self._run
        if run.drain():
            sync_props(context.scene, run)
            pct = int(round(run.state.fraction * 100))
            context.workspace.status_text_set(f"Loopscape: {run.state.stage} {pct}%  (Cancel in the Run panel)")
            _redraw(context)
        if not run.state.finished:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        context.workspace.status_text_set(None)
        ok, msg = finish_run(context, run)
        _redraw(context)
        self.report({"INFO"} if ok else {"ERROR"}, msg)
        return {"FINISHED"} if ok else {"CANCELLED"}


class LOOPSCAPE_OT_cancel(bpy.types.Operator):
    """Stop the running backend job (interrupt, then terminate its process group)"""

    bl_idname = "loopscape.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return active_run() is not None

    def execute(self, context):
        run = active_run()
        run.cancel()
        context.scene.loopscape.stage = "cancelling"
        self.report({"INFO"}, f"Cancelling the backend; log: {run.log_path}")
        return {"FINISHED"}


class LOOPSCAPE_OT_check_backend(bpy.types.Operator):
    """Start the backend interpreter and report backend, torch, CUDA and gsplat versions, or the problem"""

    bl_idname = "loopscape.check_backend"
    bl_label = "Check Backend"

    def execute(self, context):
        prefs = preferences.get(context)
        ok, msg = runner.check_backend(preferences.resolved_python(prefs), preferences.resolved_root(prefs))
        prefs.check_report = ("OK: " if ok else "Problem: ") + msg
        self.report({"INFO"} if ok else {"ERROR"}, prefs.check_report)
        return {"FINISHED"} if ok else {"CANCELLED"}


def _redraw(context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "IMAGE_EDITOR", "PROPERTIES"}:
                area.tag_redraw()


def shutdown() -> None:
    """On unregister: stop a running job so that no process outlives the add-on."""
    run = _ACTIVE["run"]
    if run is not None:
        run.cancel(grace=1.0)
        _ACTIVE["run"] = None


classes = (LOOPSCAPE_OT_run, LOOPSCAPE_OT_cancel, LOOPSCAPE_OT_check_backend)
