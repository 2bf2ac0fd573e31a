"""Add-on preferences: where the backend lives, which interpreter runs it, device and work folder."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import bpy
from bpy.props import EnumProperty, StringProperty

ADDON_ID = __package__.rpartition(".")[0]  # the extension's root package, which Blender enables
DEVICE_ITEMS = [
    ("auto", "Auto", "CUDA when the backend finds a GPU, else CPU"),
    ("cuda", "CUDA", "NVIDIA GPU (gsplat)"),
    ("cpu", "CPU", "Reference rasteriser; slow, for previews and tests"),
]


class LoopscapePreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    backend_root: StringProperty(
        name="Backend Folder", subtype="DIR_PATH",
        description="Folder that contains the 'backend' package (the Loopscape repository). "
                    "Empty: use LOOPSCAPE_BACKEND_ROOT")
    backend_python: StringProperty(
        name="Backend Python", subtype="FILE_PATH",
        description="Python interpreter with torch installed. Empty: <backend folder>/.venv/bin/python")
    device: EnumProperty(name="Default Device", items=DEVICE_ITEMS, default="auto")
    work_dir: StringProperty(
        name="Work Folder", subtype="DIR_PATH",
        description="Jobs, masks, logs and results go here. Empty: a 'loopscape' folder in the temp folder")
    check_report: StringProperty(name="Last Check", default="")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "backend_root")
        layout.prop(self, "backend_python")
        col = layout.column(align=True)
        col.label(text=f"Using: {resolved_python(self) or '(not found)'}", icon="INFO")
        layout.prop(self, "device")
        layout.prop(self, "work_dir")
        layout.operator("loopscape.check_backend", icon="CHECKMARK")
        for line in self.check_report.splitlines():
            layout.label(text=line)


def get(context=None) -> LoopscapePreferences:
    context = context or bpy.context
    return context.preferences.addons[ADDON_ID].preferences


def resolved_root(prefs) -> str:
    root = bpy.path.abspath(prefs.backend_root) if prefs.backend_root else os.environ.get("LOOPSCAPE_BACKEND_ROOT", "")
    return str(Path(root).resolve()) if root else ""


def resolved_python(prefs) -> str:
    if prefs.backend_python:
        return bpy.path.abspath(prefs.backend_python)
    root = resolved_root(prefs)
    if not root:
        return ""
    for rel in (".venv/bin/python", ".venv/Scripts/python.exe"):
        cand = Path(root) / rel
        if cand.exists():
            return str(cand)
    return ""


def resolved_work_dir(prefs) -> Path:
    base = bpy.path.abspath(prefs.work_dir) if prefs.work_dir else os.path.join(tempfile.gettempdir(), "loopscape")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


classes = (LoopscapePreferences,)
