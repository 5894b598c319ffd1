"""MRML bridge for volumes: scalar volume nodes <-> the engine's :class:`~.volume.Volume`.

Conventions:

* **Geometry.** A volume node stores IJK->RAS as origin (RAS), spacing and IJK->RAS directions; the engine's
  :class:`~.volume.Grid` stores the same grid in LPS. The two differ only by :data:`~.volume.LPS_TO_RAS` (sign
  flips of the first two axes), which is exact in floating point, so node -> Volume -> node keeps IJK->RAS
  bit for bit. The geometry is the node's own, before any parent transform.
* **Array order.** ``slicer.util.arrayFromVolume`` is a ``[k, j, i]`` view of the node's voxels; engine arrays
  are ``[i, j, k]``. Reading always copies, so the engine never holds (or changes) a node's memory.
* **Scene.** Functions take the scene (or a node in it) as a parameter: nothing here uses ``slicer.mrmlScene``,
  ``slicer.app`` or Qt, so it runs in desktop Slicer and headless with the ``slicer-core`` wheel alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import slicer
import vtk

from .errors import InputError
from .volume import LPS_TO_RAS, Grid, Volume

#: ``[i, j, k]`` (engine) <-> ``[k, j, i]`` (slicer.util, VTK memory order); the permutation is its own inverse.
KJI = (2, 1, 0)

#: The colour table Slicer gives a new scalar volume (vtkMRMLScalarVolumeNode::CreateDefaultDisplayNodes).
GREY_COLOR_NODE_ID = "vtkMRMLColorTableNodeGrey"

_LPS_RAS_3 = LPS_TO_RAS[:3, :3]


def volume_from_node(node: Any) -> Volume:
    """Copy a scalar volume node into a :class:`Volume` (array ``[i, j, k]``, LPS grid, node dtype kept).

    The node is never modified; the returned array owns its memory. The metadata is empty.

    Raises:
        InputError: the node has no voxels or more than one component per voxel (vector / RGB volume).
    """
    image = node.GetImageData() if node is not None else None
    if image is None or image.GetNumberOfPoints() == 0:
        name = node.GetName() if node is not None else "None"
        raise InputError(f"volume {name} has no voxels; load or select a volume with image data")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(
            f"volume {node.GetName()} has {image.GetNumberOfScalarComponents()} components per voxel; "
            "super-resolution needs a scalar (single-component) volume"
        )
    view_kji = slicer.util.arrayFromVolume(node)
    array = np.array(view_kji.transpose(KJI), order="C", copy=True)
    return Volume(array, grid_from_node(node))


def grid_from_node(node: Any) -> Grid:
    """The node's voxel grid in LPS (shape ``(i, j, k)`` from its image data)."""
    shape = tuple(int(n) for n in node.GetImageData().GetDimensions())
    directions = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(directions)
    ras_directions = slicer.util.arrayFromVTKMatrix(directions)[:3, :3]
    return Grid(
        shape,
        tuple(node.GetSpacing()),
        tuple(_LPS_RAS_3 @ np.asarray(node.GetOrigin(), dtype=np.float64)),
        _LPS_RAS_3 @ ras_directions,
    )


def set_node_geometry(node: Any, grid: Grid) -> None:
    """Give ``node`` the IJK->RAS of ``grid`` (set from spacing, origin and directions, never decomposed)."""
    directions = np.eye(4)
    directions[:3, :3] = _LPS_RAS_3 @ grid.direction
    node.SetIJKToRASDirectionMatrix(slicer.util.vtkMatrixFromArray(directions))
    node.SetSpacing(*grid.spacing)
    node.SetOrigin(*(_LPS_RAS_3 @ np.asarray(grid.origin)))


def slicer_compatible_array(array: np.ndarray) -> np.ndarray:
    """``array`` in a dtype Slicer can hold and display; unchanged when it already is one.

    Slicer rejects 64-bit integers (``slicer.util.updateVolumeFromArray``) and VTK has no bool or float16:
    those become the narrowest dtype that holds every value exactly (int32 / uint32 / float64, uint8, float32).
    """
    dtype = array.dtype
    if dtype == np.bool_:
        return array.astype(np.uint8)
    if dtype == np.float16:
        return array.astype(np.float32)
    if dtype in (np.int64, np.uint64):
        narrow = np.dtype(np.int32 if dtype == np.int64 else np.uint32)
        info = np.iinfo(narrow)
        fits = array.size == 0 or (array.min() >= info.min and array.max() <= info.max)
        return array.astype(narrow if fits else np.float64)
    return array


def update_node_from_volume(node: Any, volume: Volume) -> None:
    """Replace a scalar volume node's voxels and geometry with ``volume``'s (copied; dtype kept where Slicer
    supports it, see :func:`slicer_compatible_array`). Display, storage and attributes are left alone."""
    was_modifying = node.StartModify()
    try:
        set_node_geometry(node, volume.grid)
        slicer.util.updateVolumeFromArray(node, slicer_compatible_array(volume.array).transpose(KJI))
    finally:
        node.EndModify(was_modifying)


def add_volume_node(scene: Any, volume: Volume, name: str) -> Any:
    """Add a new ``vtkMRMLScalarVolumeNode`` named ``name`` holding ``volume`` to ``scene``, with the default
    display node Slicer would create (grey colour table, automatic window/level)."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    update_node_from_volume(node, volume)
    ensure_display_node(node)
    return node


def ensure_display_node(node: Any) -> Any:
    """The node's scalar volume display node, created as Slicer does when missing; returns it."""
    display = node.GetDisplayNode()
    if display is None:
        ensure_default_color_nodes(node.GetScene())
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
    return display


def ensure_default_color_nodes(scene: Any) -> None:
    """Add Slicer's built-in colour tables to a scene that lacks them.

    Desktop Slicer's Colors module adds them to every scene; a bare ``vtkMRMLScene`` (headless, slicer-core) has
    none, so display nodes would point at a missing grey table. A temporary ``vtkMRMLColorLogic`` adds them;
    detaching it afterwards leaves the nodes in place.
    """
    if scene is None or scene.GetNodeByID(GREY_COLOR_NODE_ID) is not None:
        return
    color_logic = slicer.vtkMRMLColorLogic()
    color_logic.SetMRMLScene(scene)
    color_logic.SetMRMLScene(None)
