"""The shot's files, farm-ready: relative to the .blend, one source of truth, loud when missing.

- Paths are kept relative to the .blend on save (``save_pre``), so a copied project still renders.
- A result streamed from USD keeps one path: its CacheFile's. The result folder (Play Video, Open
  Folder, re-import) is derived from it, because packers such as Blender Asset Tracer (``bat pack``,
  used by Flamenco) rewrite CacheFile paths but not add-on properties or custom properties.
- A missing cache is reported when a file loads (``load_post``) and when a render starts
  (``render_init``); the render itself shows the splat group's magenta "missing cache" card, even on
  a farm without the add-on (the object keeps no baked points to fall back to).
"""
from __future__ import annotations

import os
import sys
from pathlib import PurePosixPath

import bpy
from bpy.app.handlers import persistent

RESULT_TAG = "loopscape_result"
USD_REL_KEY = "loopscape_usd"  # the USD's path inside the result folder (result.json's "usd")
RESULT_DIR_KEY = "loopscape_result_dir"  # PLY imports only: they have no cache to derive it from


def _relative(path: str, blend_dir: str) -> str:
    if not path or path.startswith("//"):
        return path
    try:
        return "//" + os.path.relpath(bpy.path.abspath(path), blend_dir).replace(os.sep, "/")
    except ValueError:  # another drive (Windows): keep it absolute
        return path


def cache_file_of(obj):
    """The CacheFile an imported result streams from, or None."""
    for mod in getattr(obj, "modifiers", ()) if obj is not None else ():
        if mod.type == "MESH_SEQUENCE_CACHE" and mod.cache_file is not None:
            return mod.cache_file
    return None


def folder_of_cache(cache_path: str, usd_rel: str) -> str:
    """The result folder for a cache at ``cache_path`` that sits at ``usd_rel`` inside it; the
    '//' prefix (relative to the .blend) is kept, so the folder moves with the cache."""
    norm = cache_path.replace("\\", "/")
    rel = PurePosixPath(usd_rel.replace("\\", "/")) if usd_rel else PurePosixPath(norm).name
    prefix = "//" if norm.startswith("//") else ""
    p = PurePosixPath(norm[len(prefix):])
    depth = len(PurePosixPath(rel).parts)
    if tuple(p.parts[-depth:]) == PurePosixPath(rel).parts and len(p.parts) > depth:
        folder = PurePosixPath(*p.parts[:-depth])
    else:  # a packer renamed the file: its folder is the best guess
        folder = p.parent
    text = str(folder)
    return prefix + ("" if text == "." else text)


def result_dir_of(obj) -> str:
    """The result folder of an imported result object ('' when unknown)."""
    if obj is None:
        return ""
    # A layered loop's static cloud has no samples and so no cache; its moving siblings do.
    family = [obj, *(obj.parent.children if obj.parent is not None else ())]
    cache = next((c for c in map(cache_file_of, family) if c is not None), None)
    if cache is not None:
        return folder_of_cache(cache.filepath, str(obj.get(USD_REL_KEY, "")))
    return str(obj.get(RESULT_DIR_KEY, ""))


def scene_result_dir(props) -> str:
    """scene.loopscape.result_dir: from the result's cache when it has one, else the stored folder."""
    derived = result_dir_of(props.result_object)
    return derived or props.result_dir_stored


def make_relative(blend_path: str) -> None:
    blend_dir = os.path.dirname(os.path.abspath(blend_path))
    for scene in bpy.data.scenes:
        props = getattr(scene, "loopscape", None)
        if props is None:
            continue
        props.result_dir_stored = _relative(props.result_dir_stored, blend_dir)
        for image in (props.photo,):
            if image is not None and image.source == "FILE" and image.packed_file is None:
                image.filepath = _relative(image.filepath, blend_dir)
    for obj in bpy.data.objects:
        if obj.get(RESULT_TAG):
            if RESULT_DIR_KEY in obj:
                obj[RESULT_DIR_KEY] = _relative(str(obj[RESULT_DIR_KEY]), blend_dir)
            cache = cache_file_of(obj)
            if cache is not None:
                cache.filepath = _relative(cache.filepath, blend_dir)


def missing_caches() -> list[tuple[str, str]]:
    """(object name, absolute cache path) for every imported result whose point cache is missing."""
    out = []
    for obj in bpy.data.objects:
        cache = cache_file_of(obj) if obj.get(RESULT_TAG) else None
        if cache is not None:
            path = bpy.path.abspath(cache.filepath, library=cache.library)
            if not os.path.isfile(path):
                out.append((obj.name, path))
    return out


def missing_cache_message(missing: list[tuple[str, str]]) -> str:
    name, path = missing[0]
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    return (f"Loopscape: the point cache of '{name}' is missing: {path}{more}. This shot renders a magenta "
            f"'missing cache' card instead of the landscape. Copy the result folder back, or re-import it.")


def report_missing(context_label: str) -> str:
    """Print and store the missing-cache message ('' when every cache is there)."""
    missing = missing_caches()
    if not missing:
        return ""
    msg = missing_cache_message(missing)
    print(f"ERROR ({context_label}): {msg}", file=sys.stderr, flush=True)
    for scene in bpy.data.scenes:
        props = getattr(scene, "loopscape", None)
        if props is not None:
            props.last_error = msg
    if not bpy.app.background:
        _popup_later(msg)  # no window in a load_post handler; in the UI a timer shows it next
    return msg


def _popup_later(msg: str) -> None:
    # Never in background mode: timers do not fire there, and one left registered crashes on exit.
    def show() -> None:
        wm = bpy.context.window_manager
        if wm is not None:
            wm.popup_menu(lambda self, _ctx: self.layout.label(text=msg), title="Loopscape", icon="ERROR")
        return None

    bpy.app.timers.register(show, first_interval=0.1)


@persistent
def _on_save_pre(*args) -> None:
    target = args[0] if args and isinstance(args[0], str) and args[0] else bpy.data.filepath
    if target:
        make_relative(target)


@persistent
def _on_load_post(*_args) -> None:
    report_missing("file load")


@persistent
def _on_render_init(*_args) -> None:
    report_missing("render")


_HANDLERS = (("save_pre", _on_save_pre), ("load_post", _on_load_post), ("render_init", _on_render_init))


def register() -> None:
    for kind, fn in _HANDLERS:
        handlers = getattr(bpy.app.handlers, kind)
        if fn not in handlers:
            handlers.append(fn)


def unregister() -> None:
    for kind, fn in _HANDLERS:
        handlers = getattr(bpy.app.handlers, kind)
        if fn in handlers:
            handlers.remove(fn)
