"""The contract between the Blender add-on and the backend: every rule both processes know.

This package is imported by the backend (as ``contract``) and shipped inside the extension zip
(as ``<extension>.contract``), so it imports neither bpy nor torch, only the standard library and
numpy, and refers to its own modules relatively. Nothing here may be redefined on either side:

- ``labelme``   labelme parsing and the mask / hint / anchor semantics
- ``quality``   the quality presets, one complete config each
- ``camera``    the default field of view and the preset camera paths
- ``splats``    the 3DGS PLY layout, the SH constant and gsplat's rasterisation constants
- ``protocol``  event names, the ordered stage list, error fields and result.json keys
"""
from __future__ import annotations


class LoopscapeError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback.

    ``message`` names the problem and ``hint`` says what to do; both processes show them together.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()
