"""The add-on's own modules, below the extension's entry (the repository root's ``__init__.py``).

This package imports no bpy, so its bpy-free modules (runner, mask_io, ply_read, camera_math,
result_io) import and are unit-tested without Blender; the others import bpy themselves.
"""
