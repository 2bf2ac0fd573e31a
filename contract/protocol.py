"""The progress protocol and the result index, as both processes read them.

The backend prints one JSON object per line on stdout; every object has an ``event`` key. The
pipeline's stages, in the order they run, are ``STAGES``: the same words name the progress
events, the timings in result.json, the stage modules (``backend/stages/<name>.py``) and the
README's stage table.
"""
from __future__ import annotations

# Events (the ``event`` key of each JSON line).
PROGRESS = "progress"  # stage, fraction in [0, 1], optional seconds / message
WARNING = "warning"  # message
LOG = "log"  # message
DONE = "done"  # result: path of result.json
ERROR = "error"  # message, hint, kind (one of ERROR_KINDS)
EVENTS = (PROGRESS, WARNING, LOG, DONE, ERROR)
ERROR_KINDS = ("input", "cancelled", "internal")

# Stages in run order. Stages after "gaussians3d" up to "validate" run only for jobs with motion.
STAGES = ("load", "depth", "lift", "multiview", "gaussians3d", "flows", "mom3d", "loop2d", "gaussians4d",
          "validate", "render", "export")
MOTION_STAGES = ("flows", "mom3d", "loop2d", "gaussians4d", "validate")
SETUP = "setup"  # log lines before the first stage carry this stage name

# result.json: its file name and the keys the add-on reads.
RESULT_NAME = "result.json"
USD_FRAME_START = 1  # Blender's first frame for the USD point stream
KEY_PLY_FRAMES = "ply_frames"  # frame 0 alone in the loop-layers layout; every frame with full_ply_sequence
# The compact loop layout (docs/DESIGN.md "Result layout"; file format in contract.splats): present
# for a loop, absent for a still result (ply_frames + one USD prim).
KEY_LAYOUT = "layout"
LAYOUT_LOOP_LAYERS = "loop-layers-1"
KEY_PLY_STATIC = "ply_static"  # static Gaussians (still ones and the backdrop), once
KEY_PLY_FORWARD = "ply_forward"  # the moving Gaussians' forward layer: frame 0 + per-frame state
KEY_PLY_BACKWARD = "ply_backward"  # the backward layer, likewise
KEY_FULL_PLY_SEQUENCE = "full_ply_sequence"  # true when ply_frames lists every frame (job field too)
KEY_PLY_LOOP_END = "ply_loop_end"
KEY_USD = "usd"
KEY_USD_FRAME_START = "usd_frame_start"
KEY_VIDEO = "video"
KEY_INPUT_VIEW_VIDEO = "input_view_video"
KEY_INPUT_IMAGE = "input_image"
KEY_CAMERA = "camera"
KEY_FRAMES = "frames"
KEY_FPS = "fps"
KEY_QUALITY = "quality"
KEY_TIMINGS = "timings"
KEY_METRICS = "metrics"
KEY_WARNINGS = "warnings"
KEY_JOB = "job"
KEY_PREVIEW = "preview"  # preview.png: the contact sheet
KEY_PREVIEW_ANIM = "preview_anim"  # preview.webp: the path video, looping
