"""The Blender API differences between the supported versions, in one place.

Tested on the bpy wheels 4.2 LTS, 4.5 LTS, 5.0 and 5.2 LTS (README, "Blender versions"). Every
other module goes through these helpers instead of testing ``bpy.app.version`` itself, so a new
Blender that moves an API again needs one fix here.
"""
from __future__ import annotations

from typing import Any

import bpy


def _input_identifier(mod, name: str) -> str:
    """The interface identifier (``Socket_N``) of the group input called ``name``."""
    group = mod.node_group
    if group is None:
        raise KeyError(f"modifier '{mod.name}' has no node group")
    for item in group.interface.items_tree:
        if getattr(item, "in_out", None) == "INPUT" and item.item_type == "SOCKET" and item.name == name:
            return item.identifier
    raise KeyError(f"node group '{group.name}' has no input '{name}'")


def _input_slot(mod, identifier: str):
    """Blender 5.2+: the modifier's RNA slot for one input (``mod.properties.inputs.<identifier>``);
    None before 5.2, where the inputs are ID properties on the modifier (``mod[identifier]``)."""
    props = getattr(mod, "properties", None)
    inputs = getattr(props, "inputs", None) if props is not None else None
    return getattr(inputs, identifier, None) if inputs is not None else None


def set_modifier_input(mod, name: str, value: Any) -> None:
    """Set the Geometry Nodes modifier input called ``name`` (its interface name, not its identifier)."""
    identifier = _input_identifier(mod, name)
    slot = _input_slot(mod, identifier)
    if slot is not None:
        slot.value = value
    else:
        mod[identifier] = value  # 4.2-5.1: 5.2 raises TypeError here ("id properties not supported")
    mod.id_data.update_tag()  # neither write re-evaluates the object by itself (checked on 5.0 and 5.2)


def get_modifier_input(mod, name: str) -> Any:
    identifier = _input_identifier(mod, name)
    slot = _input_slot(mod, identifier)
    return slot.value if slot is not None else mod[identifier]


def _supports_blend_relative_option() -> bool:
    # The option that lets a path property hold '//...' quietly arrived with 4.5/5.0; 4.2 rejects it.
    return "is_path_supports_blend_relative" in bpy.types.Property.bl_rna.properties


def path_options(*extra: str) -> set[str]:
    """``options`` for a FILE_PATH/DIR_PATH StringProperty that may hold a '//' (blend-relative) path:
    without PATH_SUPPORTS_BLEND_RELATIVE, 5.x prints a RuntimeWarning on every such assignment."""
    opts = set(extra)
    if _supports_blend_relative_option():
        opts.add("PATH_SUPPORTS_BLEND_RELATIVE")
    return opts


def can_make_pointcloud() -> bool:
    """Whether Python can build a point cloud (Convert to Point Cloud exists from Blender 4.3 on)."""
    prop = bpy.ops.object.convert.get_rna_type().properties["target"]
    return "POINTCLOUD" in {item.identifier for item in prop.enum_items}


def new_empty_pointcloud(name: str):
    """A point cloud with no points, or None where Python cannot make one."""
    coll = getattr(bpy.data, "pointclouds", None)
    if coll is None or not hasattr(coll, "new"):
        return None
    return coll.new(name)


def solid_attribute_color_type() -> str:
    """Solid shading's colour-by-attribute enum item: 'VERTEX' (its identifier on every supported
    version, shown as 'Attribute' in the UI)."""
    items = bpy.types.View3DShading.bl_rna.properties["color_type"].enum_items
    return "ATTRIBUTE" if "ATTRIBUTE" in items else "VERTEX"
