"""Synthetic ground-truth landscapes rendered with Blender in a subprocess (this package never imports bpy)."""
from backend.tools.synthetic.scene import PATH_NAMES, eval_path_translations, generate_scene

__all__ = ["PATH_NAMES", "eval_path_translations", "generate_scene"]
