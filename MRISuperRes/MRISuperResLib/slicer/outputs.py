"""Enhance a volume node and put the results into its scene: the MRML side of the MRISuperRes module (no Qt).

``EnhanceLogic(scene).enhance(volume_node, model="default", scale=2, device="auto")`` runs the engine
in-process (blocking) and adds, or updates when given, one scalar volume node per output map (the roles, names
and colour maps come from :data:`..engine.outputs.OUTPUT_MAPS`):

===========  ================================  ======================================================
role         node name (new nodes)             display
===========  ================================  ======================================================
sr           ``<input>_SR_x<scale>``           the input's colour table and window/level
baseline     ``<input>_baseline_x<scale>``     the input's colour table and window/level
difference   ``<input>_difference_x<scale>``   diverging map centred at 0, +-99.5th pct of ``|diff|``
consistency  ``<input>_consistency_x<scale>``  sequential map, 0 .. 99.5th pct (on the input grid)
uncertainty  ``<input>_uncertainty_x<scale>``  sequential map, 0 .. 99.5th pct (only when requested)
===========  ================================  ======================================================

``<scale>`` is :func:`~.geometry.format_scale` of the per-axis scale in ``i, j, k`` order (``x2``,
``x1,1,4``). Geometry crosses the bridge in LPS <-> RAS as described in :mod:`MRISuperResLib.slicer.volumes`.

* **Provenance**: the engine's ``MRISuperRes.*`` metadata become node attributes, and the node description
  starts with the notice ("AI-generated, not acquired").
* **Colours**: Slicer's own colour tables (``DivergingBlueRed``, ``Inferno``, ``Viridis``) when the scene has
  them (desktop Slicer loads them from its share folder); a bare scene (slicer-core) lacks them, so an
  equivalent table of the same name is generated once per scene.
* **Colour legends** (difference and trust maps) use ``vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode``
  when the scene knows ``vtkMRMLColorLegendDisplayNode`` (desktop Slicer's Colors module registers it; a bare
  slicer-core scene does not, and then no legend is added).
* **Placement**: new nodes go beside the input in the subject hierarchy (the input's parent item: its study for
  DICOM-loaded volumes) and under the input's parent transform, so they overlay it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import slicer
import vtk

from ..engine.outputs import BY_KEY, OUTPUT_KEYS, OUTPUT_MAPS
from ..imaging.geometry import Scale, format_scale
from ..imaging.provenance import KEY_PREFIX, short_description
from .volumes import (NodeProblem, ensure_display_node, scalar_volume_problem, update_node_from_volume,
                      volume_from_node)
from ..imaging.volume import Volume

if TYPE_CHECKING:
    from ..engine.result import EnhanceResult

#: Percentile of the values (of ``|values|`` for the difference) that sets the colour window of the maps.
WINDOW_PERCENTILE = 99.5

#: Voxels sampled to estimate that percentile: enough for a stable estimate, cheap for any volume size.
WINDOW_SAMPLE_SIZE = 1_000_000


@dataclass(frozen=True)
class ColorMap:
    """A colour map Slicer ships as a colour file, with anchor colours to rebuild it where the file is absent.

    Attributes:
        name: node name of Slicer's table (``"DivergingBlueRed"``).
        slicer_file: Slicer's colour file; its node ID is ``vtkMRMLColorLogic.GetFileColorNodeID(slicer_file)``.
        anchors: RGB colours (0..1) evenly spaced from the lowest to the highest value.
        diverging: interpolate in VTK's diverging (Moreland) colour space instead of RGB.
    """

    name: str
    slicer_file: str
    anchors: tuple[tuple[float, float, float], ...]
    diverging: bool = False


DIFFERENCE_COLORS = ColorMap("DivergingBlueRed", "DivergingBlueRed.txt",
                             ((0.230, 0.299, 0.754), (0.706, 0.016, 0.150)), diverging=True)
CONSISTENCY_COLORS = ColorMap("Inferno", "Inferno.txt", (
    (0.001, 0.000, 0.014), (0.342, 0.062, 0.429), (0.736, 0.216, 0.330), (0.978, 0.558, 0.035),
    (0.988, 0.998, 0.645)))
UNCERTAINTY_COLORS = ColorMap("Viridis", "Viridis.txt", (
    (0.267, 0.005, 0.329), (0.230, 0.322, 0.546), (0.128, 0.567, 0.551), (0.369, 0.789, 0.383),
    (0.993, 0.906, 0.144)))

#: Slicer's colour maps the output maps use, by name (:attr:`~..engine.outputs.OutputMap.colors`).
COLOR_MAPS = {colors.name: colors for colors in (DIFFERENCE_COLORS, CONSISTENCY_COLORS, UNCERTAINTY_COLORS)}

#: Colour map of each quantitative map by key (the others, SR and baseline, are shown like the input).
MAP_COLORS = {output.key: COLOR_MAPS[output.colors] for output in OUTPUT_MAPS if output.colors is not None}


class EnhanceNodes:
    """Output nodes of one enhance run by map key (``vtkMRMLScalarVolumeNode`` or ``None`` when not produced).

    Each map of :data:`~..engine.outputs.OUTPUT_MAPS` is an attribute (``nodes.sr``, ``nodes.difference``) and,
    read-only, a Slicer-style ``<key>VolumeNode`` (``nodes.srVolumeNode``: the documented shape of the module
    logic's result). Passed to :meth:`EnhanceLogic.enhance` as ``outputs``, its non-``None`` nodes are reused
    (updated in place, names kept) instead of new ones being created.

    Args:
        nodes: nodes by map key; keyword arguments (``sr=node``) add to them.

    Attributes:
        summary: the run summary (:meth:`~..engine.result.EnhanceResult.summary`: model, device, consistency
            scores ...).
        warnings: messages for the user (device fallback, label-map-like input, suspicious consistency).

    Raises:
        TypeError: a key that is not an output map.
    """

    _SUFFIX = "VolumeNode"

    def __init__(self, nodes: Mapping[str, Any] | None = None, /, *, summary: dict[str, Any] | None = None,
                 warnings: list[str] | None = None, **by_key: Any) -> None:
        object.__setattr__(self, "_nodes", dict.fromkeys(OUTPUT_KEYS))
        for key, node in {**dict(nodes or {}), **by_key}.items():
            if key not in BY_KEY:
                raise TypeError(f"EnhanceNodes got {key!r}, which is not an output map; known: "
                                f"{', '.join(OUTPUT_KEYS)}")
            self._nodes[key] = node
        self.summary: dict[str, Any] = dict(summary or {})
        self.warnings: list[str] = list(warnings or [])

    def nodes(self) -> dict[str, Any]:
        """The nodes by map key (every map, ``None`` where absent)."""
        return dict(self._nodes)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a map's key or its Slicer-style name reads its node.
        nodes = self.__dict__.get("_nodes")
        key = name[: -len(self._SUFFIX)] if name.endswith(self._SUFFIX) else name
        if nodes is not None and key in nodes:
            return nodes[key]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in BY_KEY:
            self._nodes[name] = value
        else:
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        shown = {key: node.GetName() if hasattr(node, "GetName") else node for key, node in self._nodes.items()}
        return f"EnhanceNodes({shown})"


class Enhancer(Protocol):
    """What :class:`EnhanceLogic` calls to compute the outputs (``enhance.enhance_volume`` by default)."""

    def __call__(self, volume: Volume, model: Any, scale: Any, *, device: str, **options: Any) -> EnhanceResult: ...


def output_name(input_name: str, role: str, scale: Scale) -> str:
    """Name of a new output node, e.g. ``T1_SR_x2`` or ``T2_difference_x1,1,4``."""
    return f"{input_name}_{BY_KEY[role].label}_x{format_scale(scale)}"


class EnhanceLogic:
    """Enhance volume nodes of one scene and show the results there.

    Args:
        scene: the ``vtkMRMLScene`` holding the inputs and receiving the outputs.
        enhancer: computes the outputs from a :class:`~MRISuperResLib.imaging.volume.Volume`; defaults to
            :func:`~.enhance.enhance_volume` (imported on first use: it loads torch).
    """

    def __init__(self, scene: Any, enhancer: Enhancer | None = None) -> None:
        self.scene = scene
        self._enhancer = enhancer

    @property
    def enhancer(self) -> Enhancer:
        if self._enhancer is None:
            from ..engine.enhance import enhance_volume

            self._enhancer = enhance_volume
        return self._enhancer

    def enhance(
        self,
        volume_node: Any,
        model: Any = "default",
        scale: float | str | Scale = 2,
        device: str = "auto",
        *,
        outputs: EnhanceNodes | None = None,
        **options: Any,
    ) -> EnhanceNodes:
        """Super-resolve ``volume_node`` (never modified) and add or update the output nodes.

        Blocks until done. Nothing is added to the scene when the engine raises.

        Args:
            volume_node: scalar volume node in this logic's scene.
            model: shipped model name, ``"default"``, a model file path or a loaded model.
            scale: per-axis factors in image index order (``2``, ``"1,1,4"``, ``(1, 1, 4)``).
            device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
            outputs: existing nodes to reuse, by role; roles left ``None`` get new nodes.
            options: passed to :func:`~.enhance.enhance_volume` (``tile``, ``uncertainty``, ``progress``,
                ``cancel`` ...).

        Raises:
            ValueError: the input or a reused node is not a scalar volume of this scene, or a reused node is the
                input or is given twice.
            MRISuperResError: the engine's errors (bad input, model or scale; cancelled).
        """
        self.check_nodes(volume_node, outputs)
        options.setdefault("source_name", volume_node.GetName())
        result = self.enhancer(volume_from_node(volume_node), model, scale, device=device, **options)
        volumes = result.maps
        nodes = self.add_outputs(volume_node, volumes, result.scale, outputs)
        nodes.summary = result.summary()
        nodes.warnings = list(result.warnings)
        record_scores(nodes, {"consistency_nrmse": result.consistency_nrmse,
                              "baseline_consistency_nrmse": result.baseline_consistency_nrmse})
        return nodes

    def add_outputs(
        self,
        volume_node: Any,
        volumes: Mapping[str, Volume | None],
        scale: Scale,
        outputs: EnhanceNodes | None = None,
    ) -> EnhanceNodes:
        """Put computed outputs (by role, e.g. read back from a background run's files) into the scene.

        Args:
            volume_node: the input node the outputs were computed from.
            volumes: output volumes by map key (see :data:`~..engine.outputs.OUTPUT_MAPS`), each carrying its
                ``MRISuperRes.*`` metadata.
            scale: the per-axis scale that was used (for node names).
            outputs: existing nodes to reuse, by role.
        """
        self.check_nodes(volume_node, outputs)
        reuse = outputs.nodes() if outputs is not None else {}
        nodes = EnhanceNodes()
        for role in OUTPUT_KEYS:
            volume = volumes.get(role)
            if volume is None:
                continue
            node = reuse.get(role)
            if node is None:
                node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", output_name(volume_node.GetName(),
                                                                                             role, scale))
                update_node_from_volume(node, volume)
                place_beside(volume_node, node)
            else:
                update_node_from_volume(node, volume)
            set_provenance(node, volume.metadata)
            self._show(volume_node, node, role, volume.array)
            setattr(nodes, role, node)
        return nodes

    def add_output_files(
        self,
        volume_node: Any,
        files: Mapping[str, str | os.PathLike],
        scale: Scale,
        outputs: EnhanceNodes | None = None,
        metadata: Mapping[str, str] | None = None,
        loaded: Mapping[str, Any] | None = None,
    ) -> EnhanceNodes:
        """Put a background run's output files (NRRD, by role) into the scene without a Python copy of the voxels.

        A role in ``loaded`` (a :class:`~MRISuperResLib.slicer.volumes.LoadedVolumeFile` read by a worker thread, with its colour
        ``window`` when it is a map) becomes its node's image data as it is (milliseconds on the GUI thread);
        another file is read straight into its node by Slicer's C++ reader. Provenance comes from the file's NRRD
        key-values (``MRISuperRes.*``), with ``metadata`` on top. New or reused nodes as in :meth:`add_outputs`.

        Raises:
            OutputError: a file cannot be read (nodes added so far stay; the caller removes them).
        """
        from .volumes import nrrd_key_values, read_file_into_node, set_node_image

        self.check_nodes(volume_node, outputs)
        reuse = outputs.nodes() if outputs is not None else {}
        nodes = EnhanceNodes()
        for role in OUTPUT_KEYS:
            path = files.get(role)
            if path is None:
                continue
            ready = (loaded or {}).get(role)
            node = reuse.get(role)
            new = node is None
            if new:
                node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", output_name(volume_node.GetName(),
                                                                                             role, scale))
            # Before the voxels arrive: no automatic window/level over every voxel (_show sets the window).
            ensure_display_node(node, auto_window_level=False)
            if ready is not None:
                set_node_image(node, ready)
                key_values = {k: v for k, v in ready.key_values.items() if k.startswith(KEY_PREFIX)}
            else:
                read_file_into_node(node, path)
                key_values = nrrd_key_values(path, KEY_PREFIX)
            if new:
                place_beside(volume_node, node)
            set_provenance(node, {**key_values, **(metadata or {})})
            window = getattr(ready, "window", None)
            self._show(volume_node, node, role, slicer.util.arrayFromVolume(node) if window is None else None, window)
            setattr(nodes, role, node)
        return nodes

    def _show(self, input_node: Any, node: Any, role: str, values: np.ndarray | None, window: float | None = None) -> None:
        display = ensure_display_node(node)
        if role in MAP_COLORS:
            show_as_map(display, values, MAP_COLORS[role], centred=BY_KEY[role].signed, top=window)
        else:
            copy_display(input_node.GetDisplayNode(), display)

    def check_nodes(self, volume_node: Any, outputs: EnhanceNodes | None = None) -> None:
        """Raise ``ValueError`` unless the input and the reused output nodes can take part in a run."""
        self._check_volume_node(volume_node, "input")
        reused = [node for node in (outputs.nodes() if outputs is not None else {}).values() if node is not None]
        for node in reused:
            self._check_volume_node(node, "output")
            if node is volume_node:
                raise ValueError(f"output node {node.GetName()} is the input; choose another node or create one")
        if len({node.GetID() for node in reused}) != len(reused):
            raise ValueError("one node is given for two outputs; give each output its own node")

    def _check_volume_node(self, node: Any, what: str) -> None:
        # Voxels are checked when a run starts: a reused output node may be empty.
        if scalar_volume_problem(node) not in (None, NodeProblem.NO_VOXELS):
            kind = node.GetClassName() if node is not None else "None"
            raise ValueError(f"the {what} must be a scalar volume node, not {kind}")
        if node.GetScene() is not self.scene:
            raise ValueError(f"the {what} node {node.GetName()} is not in this logic's scene")


def record_scores(nodes: EnhanceNodes, scores: Mapping[str, float]) -> None:
    """Write the run's scalar scores (``consistency_nrmse`` ...) as ``MRISuperRes.*`` attributes of the SR and
    consistency nodes."""
    for node in (nodes.sr, nodes.consistency):
        if node is not None:
            for key, value in scores.items():
                node.SetAttribute(f"{KEY_PREFIX}{key}", f"{float(value):.6g}")


def set_provenance(node: Any, metadata: Mapping[str, str]) -> None:
    """Write ``MRISuperRes.*`` metadata as node attributes (dropping stale ones) and as the description."""
    for name in node.GetAttributeNames() or ():
        if name.startswith(KEY_PREFIX) and name not in metadata:
            node.RemoveAttribute(name)
    for key, value in metadata.items():
        node.SetAttribute(key, str(value))
    node.SetDescription(describe(metadata))


def describe(metadata: Mapping[str, str]) -> str:
    """Node description: the one-line notice (what the output is, "AI-generated, not acquired"), then every
    provenance field as ``key: value``."""
    provenance = {key[len(KEY_PREFIX):]: value for key, value in metadata.items() if key.startswith(KEY_PREFIX)}
    if not {"notice", "role", "scale", "model"} <= provenance.keys():
        return "\n".join(f"{key}: {value}" for key, value in provenance.items())
    return "\n".join([short_description(provenance), *(f"{key}: {value}" for key, value in provenance.items())])


def place_beside(input_node: Any, node: Any) -> None:
    """Put ``node`` under the input's parent transform and beside it in the subject hierarchy.

    In desktop Slicer every node has a hierarchy item; a bare scene may not: then ``node`` gets an item only
    when the input has one (otherwise there is no study to follow).
    """
    node.SetAndObserveTransformNodeID(input_node.GetTransformNodeID())
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(input_node.GetScene())
    input_item = hierarchy.GetItemByDataNode(input_node) if hierarchy is not None else 0
    if not input_item:
        return
    parent = hierarchy.GetItemParent(input_item)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:
        hierarchy.CreateItem(parent, node)


def copy_display(source: Any, target: Any) -> None:
    """Show ``target`` like ``source``: same colour table and window/level (automatic window/level off)."""
    if source is None:
        return
    if source.GetColorNodeID():
        target.SetAndObserveColorNodeID(source.GetColorNodeID())
    target.SetAutoWindowLevel(False)
    target.SetWindowLevel(source.GetWindow(), source.GetLevel())


def show_as_map(display: Any, values: np.ndarray | None, colors: ColorMap, centred: bool,
                top: float | None = None) -> None:
    """Show a quantitative map: ``colors`` over ``[-p, p]`` when ``centred`` (``p`` the 99.5th percentile of
    ``|values|``, or ``top`` when given: 0 sits mid-scale) else ``[0, p]``; add a colour legend when the scene
    supports one."""
    if top is None:
        top = window_percentile(values, centred)
    display.SetAndObserveColorNodeID(color_node_id(display.GetScene(), colors))
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(-top if centred else 0.0, top)
    add_color_legend(display)


def window_percentile(values: np.ndarray, absolute: bool) -> float:
    """The 99.5th percentile of ``values`` (of ``|values|`` when ``absolute``) from a strided sample; 1.0 when
    that is not positive (an all-zero map still needs a non-empty window)."""
    flat = values.reshape(-1)
    sample = flat[:: max(1, flat.size // WINDOW_SAMPLE_SIZE)]
    top = float(np.percentile(np.abs(sample) if absolute else sample, WINDOW_PERCENTILE)) if sample.size else 0.0
    return top if np.isfinite(top) and top > 0 else 1.0


def color_node_id(scene: Any, colors: ColorMap) -> str:
    """ID of Slicer's colour table for ``colors``, or of an equivalent table generated once in ``scene``."""
    shipped = scene.GetNodeByID(slicer.vtkMRMLColorLogic.GetFileColorNodeID(colors.slicer_file))
    if shipped is not None:
        return shipped.GetID()
    tag = f"MRISuperRes{colors.name}"
    existing = scene.GetSingletonNode(tag, "vtkMRMLColorTableNode")
    if existing is not None:
        return existing.GetID()
    return scene.AddNode(build_color_table(colors, tag)).GetID()


def build_color_table(colors: ColorMap, singleton_tag: str, size: int = 256) -> Any:
    """A continuous ``vtkMRMLColorTableNode`` of ``size`` entries interpolated between the anchors."""
    transfer = vtk.vtkColorTransferFunction()
    if colors.diverging:
        transfer.SetColorSpaceToDiverging()
    for position, rgb in zip(np.linspace(0.0, 1.0, len(colors.anchors)), colors.anchors):
        transfer.AddRGBPoint(float(position), *rgb)
    table = slicer.vtkMRMLColorTableNode()
    table.SetName(colors.name)
    table.SetSingletonTag(singleton_tag)
    table.SetTypeToUser()
    table.SetNumberOfColors(size)
    for index in range(size):
        table.SetColor(index, *transfer.GetColor(index / (size - 1)), 1.0)
    table.SetAttribute(f"{KEY_PREFIX}colorMap", f"generated equivalent of Slicer's {colors.slicer_file}")
    return table


def add_color_legend(display: Any) -> Any:
    """The display node's colour legend (added when missing), or ``None`` where the scene has no legend class
    registered (a bare scene without desktop Slicer's Colors module)."""
    scene = display.GetScene()
    color_logic = getattr(slicer, "vtkSlicerColorLogic", None)
    if color_logic is None or not scene.IsNodeClassRegistered("vtkMRMLColorLegendDisplayNode"):
        return None
    return color_logic.AddDefaultColorLegendDisplayNode(display)
