"""MRML bridge for volumes: scalar volume nodes <-> the engine's :class:`~MRISuperResLib.imaging.volume.Volume`.

Conventions:

* **Geometry.** A volume node stores IJK->RAS as origin (RAS), spacing and IJK->RAS directions; the engine's
  :class:`~MRISuperResLib.imaging.volume.Grid` stores the same grid in LPS. The two differ only by :data:`~MRISuperResLib.imaging.volume.LPS_TO_RAS` (sign
  flips of the first two axes), which is exact in floating point, so node -> Volume -> node keeps IJK->RAS
  bit for bit. The geometry is the node's own, before any parent transform.
* **Array order.** ``slicer.util.arrayFromVolume`` is a ``[k, j, i]`` view of the node's voxels; engine arrays
  are ``[i, j, k]``. Reading always copies, so the engine never holds (or changes) a node's memory.
* **Scene.** Functions take the scene (or a node in it) as a parameter: nothing here uses ``slicer.mrmlScene``,
  ``slicer.app`` or Qt, so it runs in desktop Slicer and headless with the ``slicer-core`` wheel alike.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import slicer
import vtk

from ..errors import InputError
from ..imaging.volume import LPS_TO_RAS, Grid, Volume

#: ``[i, j, k]`` (engine) <-> ``[k, j, i]`` (slicer.util, VTK memory order); the permutation is its own inverse.
KJI = (2, 1, 0)

#: The colour table Slicer gives a new scalar volume (vtkMRMLScalarVolumeNode::CreateDefaultDisplayNodes).
GREY_COLOR_NODE_ID = "vtkMRMLColorTableNodeGrey"

_LPS_RAS_3 = LPS_TO_RAS[:3, :3]


class NodeProblem(str, Enum):
    """Why a node cannot be read as a scalar MRI volume (see :func:`scalar_volume_problem`)."""

    MISSING = "missing"  #: no node
    LABEL_MAP = "label map"  #: a label map (segmentation), not intensities
    NOT_SCALAR = "not scalar"  #: not a scalar volume node, or a vector/RGB one
    NO_VOXELS = "no voxels"  #: no image data, or an empty one


def scalar_volume_problem(node: Any) -> NodeProblem | None:
    """The first reason ``node`` is not a scalar MRI volume with voxels, checked in this order: missing, label
    map, not a (single-component class of) scalar volume node, no voxels; ``None`` when it is one.

    The one check of the Enhance panel, the Enhance logic and the Training logic; each words the reason for its
    own user (a status line, a ``ValueError`` for scripts, an ``InputError`` naming the pair).
    """
    if node is None:
        return NodeProblem.MISSING
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        return NodeProblem.LABEL_MAP
    if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLVectorVolumeNode"):
        return NodeProblem.NOT_SCALAR
    image = node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        return NodeProblem.NO_VOXELS
    return None


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


def ensure_display_node(node: Any, auto_window_level: bool = True) -> Any:
    """The node's scalar volume display node, created as Slicer does when missing; returns it.

    With ``auto_window_level=False`` a new display node never computes the automatic window/level (a histogram of
    every voxel: seconds for a large volume on the GUI thread); the caller sets the window itself. Call it before
    the node gets its voxels.
    """
    display = node.GetDisplayNode()
    if display is None:
        scene = node.GetScene()
        ensure_default_color_nodes(scene)
        if auto_window_level:
            node.CreateDefaultDisplayNodes()
            return node.GetDisplayNode()
        display = slicer.vtkMRMLScalarVolumeDisplayNode()
        display.SetAutoWindowLevel(False)
        scene.AddNode(display)
        display.SetDefaultColorMap()
        node.SetAndObserveDisplayNodeID(display.GetID())
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


def read_file_into_node(node: Any, path: str | Path) -> None:
    """Load a volume file into ``node`` with Slicer's C++ reader (an MRML archetype storage node used on its own:
    the node keeps no reference to it), replacing the node's voxels and geometry. No Python copy of the voxels is
    made, so this is what a background run's outputs go through on Slicer's GUI thread.

    Raises:
        OutputError: the file cannot be read.
    """
    from ..errors import OutputError

    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)  # the file alone, never a series of its neighbours
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise OutputError(f"cannot read {path} into volume {node.GetName()}; check that the file is complete")


def nrrd_key_values(path: str | Path, prefix: str = "") -> dict[str, str]:
    """The ``key:=value`` fields of a NRRD header (values unescaped as teem writes them), those whose key starts
    with ``prefix``. Reads the header only."""
    with open(path, "rb") as handle:
        header = b""
        while b"\n\n" not in header and len(header) < 16 * 2**20:
            block = handle.read(65536)
            if not block:
                break
            header += block
    text = header.split(b"\n\n", 1)[0].decode("utf-8", errors="replace")
    values = {}
    for line in text.splitlines()[1:]:
        key, separator, value = line.partition(":=")
        if separator and key.startswith(prefix):
            values[key] = value.replace("\\n", "\n").replace("\\\\", "\\")
    return values


#: NRRD ``type`` -> numpy dtype (the types the engine writes).
_NRRD_TYPES = {"float": np.float32, "double": np.float64, "short": np.int16, "ushort": np.uint16,
               "int": np.int32, "uint": np.uint32, "uchar": np.uint8, "signed char": np.int8, "char": np.int8}


class LoadedVolumeFile:
    """A NRRD file's voxels and geometry read off Slicer's GUI thread, ready to become a node's image data.

    Attributes:
        path: the file.
        array: the voxels, ``[k, j, i]`` (VTK memory order).
        ijk_to_ras: 4x4 IJK->RAS matrix.
        key_values: the header's ``key:=value`` fields.
        window: the colour window of a quantitative map (set by the reader's caller), else ``None``.
    """

    def __init__(self, path: Path, array: np.ndarray, ijk_to_ras: np.ndarray, key_values: dict[str, str]) -> None:
        self.path, self.array, self.ijk_to_ras, self.key_values = path, array, ijk_to_ras, key_values
        self.window: float | None = None  # colour window of a map, computed where the file was read


def load_nrrd(path: str | Path) -> LoadedVolumeFile | None:
    """Read a 3D scalar NRRD file (raw or gzip encoding, as the engine writes them) with numpy and zlib, which
    release the GIL while they read and inflate: run it in a worker thread and Slicer's GUI stays responsive.

    Returns ``None`` for a file this reader does not handle (another encoding, dimension or space): read that one
    with :func:`read_file_into_node`.

    Raises:
        OSError: the file cannot be read, or holds fewer voxels than its header says.
    """
    import zlib

    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(1 << 20)
        end = head.find(b"\n\n")
        if not head.startswith(b"NRRD") or end < 0:
            return None
        fields: dict[str, str] = {}
        key_values: dict[str, str] = {}
        for line in head[:end].decode("utf-8", errors="replace").splitlines()[1:]:
            if line.startswith("#"):
                continue
            key, separator, value = line.partition(":=")
            if separator:
                key_values[key] = value.replace("\\n", "\n").replace("\\\\", "\\")
                continue
            key, separator, value = line.partition(": ")
            if separator:
                fields[key.strip()] = value.strip()
        dtype = _NRRD_TYPES.get(fields.get("type", ""))
        encoding = fields.get("encoding")
        space = fields.get("space")
        if (dtype is None or fields.get("dimension") != "3" or encoding not in ("raw", "gzip", "gz")
                or space not in ("left-posterior-superior", "right-anterior-superior") or "data file" in fields):
            return None
        sizes = [int(n) for n in fields["sizes"].split()]
        columns = [[float(v) for v in vector.strip("()").split(",")] for vector in fields["space directions"].split()]
        origin = [float(v) for v in fields.get("space origin", "(0,0,0)").strip("()").split(",")]
        count = int(np.prod(sizes))
        stored = np.dtype(dtype).newbyteorder(">" if fields.get("endian") == "big" else "<")
        handle.seek(end + 2)
        array = np.empty(count, stored)  # a writable array of its own: it becomes the node's memory
        target = memoryview(array).cast("B")
        if encoding == "raw":
            read = handle.readinto(target)
        else:
            # Inflated in 1 MiB steps: zlib holds the GIL within a call, so Slicer's GUI thread gets it between.
            inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
            read = 0
            while chunk := handle.read(1 << 20):
                read = _append(target, read, inflater.decompress(chunk), path)
            read = _append(target, read, inflater.flush(), path)
    if read < count * stored.itemsize:
        raise OSError(f"{path} holds fewer voxels than its header says; the file is incomplete")
    array = array.astype(dtype, copy=False).reshape(sizes[::-1])
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(columns).T
    matrix[:3, 3] = origin
    if space == "left-posterior-superior":
        matrix = LPS_TO_RAS @ matrix
    return LoadedVolumeFile(path, array, matrix, key_values)


def _append(target: memoryview, position: int, data: bytes, path: Path) -> int:
    if position + len(data) > len(target):
        raise OSError(f"{path} holds more voxels than its header says; the file is not a valid volume")
    target[position:position + len(data)] = data
    return position + len(data)


def set_node_image(node: Any, loaded: LoadedVolumeFile) -> None:
    """Give ``node`` the loaded voxels (no copy: the image data uses the array's memory) and geometry."""
    from vtk.util import numpy_support

    image = vtk.vtkImageData()
    k, j, i = loaded.array.shape
    image.SetDimensions(i, j, k)
    scalars = numpy_support.numpy_to_vtk(loaded.array.reshape(-1), deep=False)  # keeps a reference to the array
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(loaded.ijk_to_ras[row, column]))
    node.SetIJKToRASMatrix(matrix)
    node.SetAndObserveImageData(image)
