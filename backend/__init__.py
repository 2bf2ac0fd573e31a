"""Loopscape compute backend: one landscape photo to looping 4D Gaussians.

Never imports bpy; runs in its own Python environment as ``python -m backend``.
"""
__version__ = "0.1.0"
