"""Linked before / after / difference slice views: the compare layout as MRML logic (no Qt).

``CompareViews(scene).show(input_node, sr_node, difference_node)`` switches the scene's layout to three slice
views side by side, each showing one volume, all linked:

================  =====  ==========================================================================
view (layout)     label  content
================  =====  ==========================================================================
``SRInput``       In     background: the input (or its baseline)
``SRResult``      SR     background: the SR volume
``SRDifference``  Diff   background: the SR volume; foreground: the difference map at an adjustable opacity
================  =====  ==========================================================================

Conventions, following Slicer's CompareVolumes module (``CompareVolumesLogic.viewerPerVolume``) and Slicer's
own layouts (``vtkMRMLLayoutLogic``):

* **Layout.** The description (:func:`compare_layout_xml`) is registered on the scene's singleton
  ``vtkMRMLLayoutNode`` under :data:`COMPARE_LAYOUT_ID` with ``AddLayoutDescription`` / ``SetLayoutDescription``
  and shown with ``SetViewArrangement``. The arrangement shown before is remembered on the layout node (attribute
  :data:`PREVIOUS_LAYOUT_ATTRIBUTE`), so :meth:`CompareViews.restore` works from any object, after a module reload
  too.
* **View nodes.** Each view is a ``vtkMRMLSliceNode`` whose layout name and singleton tag are the view name, with a
  ``vtkMRMLSliceCompositeNode`` of the same layout name: the nodes desktop Slicer's layout manager and slice
  logics create and adopt. In desktop Slicer the application's ``vtkMRMLLayoutLogic`` creates the slice nodes from
  the description; in a bare scene (slicer-core) a ``vtkMRMLLayoutLogic`` held by :class:`CompareViews` does.
* **Linking.** The three views form their own view group (:data:`COMPARE_VIEW_GROUP`) and every composite node
  has linked and hot-linked control on, so Slicer's ``vtkMRMLSliceLinkLogic`` keeps slice position, zoom and pan
  identical across the three views, and only across them (the Red/Green/Yellow views are group 0).
* **Fit.** The SR view is fitted to the SR volume with its ``vtkMRMLSliceLogic`` and the two other views get the
  same slice geometry, so all three show the same plane (fitting each view to its own background would snap the
  input view to the coarse grid, a different plane).
* **Slice logics.** Pass ``application_logic`` (desktop: ``slicer.app.applicationLogic()``) so the slice logics
  of the displayed views are used; without one, or for views it has no logic for (headless), :class:`CompareViews`
  makes its own, attached to the scene (their composited images are what the views show; see
  :meth:`CompareViews.slice_logic`).
* **Scene.** Everything takes the scene as a parameter: nothing here uses ``slicer.mrmlScene``, ``slicer.app`` or
  Qt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

import numpy as np
import slicer
from vtk.util.numpy_support import vtk_to_numpy

#: View arrangement id of the compare layout. Slicer's built-in layouts use 0..43 and 98..100
#: (``vtkMRMLLayoutNode.SlicerLayout*``); extensions pick ids well above those.
COMPARE_LAYOUT_ID = 5301

#: View group of the three views: slice link logic only links views of the same group, so this one keeps the
#: compare views linked to each other and independent of the main (group 0) views.
COMPARE_VIEW_GROUP = 53

#: Slice orientation presets Slicer defines in every scene (``vtkMRMLSliceNode.AddDefaultSliceOrientationPresets``).
ORIENTATIONS = ("Axial", "Coronal", "Sagittal")

#: Foreground opacity of the difference map over the SR volume, unless given.
DEFAULT_DIFFERENCE_OPACITY = 0.5

#: Layout node attribute holding the view arrangement shown before the compare layout.
PREVIOUS_LAYOUT_ATTRIBUTE = "MRISuperRes.previousViewArrangement"


@dataclass(frozen=True)
class CompareView:
    """One view of the compare layout.

    Attributes:
        name: layout name and singleton tag of its slice and composite nodes (node IDs
            ``vtkMRMLSliceNode<name>``, ``vtkMRMLSliceCompositeNode<name>``).
        label: short label shown in the view's controller bar.
        color: the view's layout colour (``#RRGGBB``), distinct from Red / Green / Yellow.
        role: what the view shows: ``input``, ``sr`` or ``difference``.
    """

    name: str
    label: str
    color: str
    role: str


INPUT_VIEW = CompareView("SRInput", "In", "#8C8C8C", "input")
SR_VIEW = CompareView("SRResult", "SR", "#3D8FD9", "sr")
DIFFERENCE_VIEW = CompareView("SRDifference", "Diff", "#C2459A", "difference")

#: The views from left to right.
COMPARE_VIEWS = (INPUT_VIEW, SR_VIEW, DIFFERENCE_VIEW)


def orientation_name(orientation: str) -> str:
    """The Slicer preset name of ``orientation`` (case-insensitive: ``"axial"`` -> ``"Axial"``).

    Raises:
        ValueError: not one of :data:`ORIENTATIONS`.
    """
    for name in ORIENTATIONS:
        if str(orientation).lower() == name.lower():
            return name
    raise ValueError(f"orientation must be one of {', '.join(ORIENTATIONS)}, not {orientation!r}")


def compare_layout_xml(orientation: str = "Axial") -> str:
    """Slicer layout description of the three views side by side (split, equal widths), all in ``orientation``.

    Each ``<view class="vtkMRMLSliceNode" singletontag=...>`` carries the ``default`` properties Slicer applies
    when it creates the view node: orientation, label, colour and view group.
    """
    orientation = orientation_name(orientation)
    layout = ElementTree.Element("layout", {"type": "horizontal", "split": "true"})
    for view in COMPARE_VIEWS:
        item = ElementTree.SubElement(layout, "item", {"splitSize": "500"})
        element = ElementTree.SubElement(item, "view", {"class": "vtkMRMLSliceNode", "singletontag": view.name})
        properties = {"orientation": orientation, "viewlabel": view.label, "viewcolor": view.color,
                      "viewgroup": str(COMPARE_VIEW_GROUP)}
        for name, value in properties.items():
            ElementTree.SubElement(element, "property", {"name": name, "action": "default"}).text = value
    return ElementTree.tostring(layout, encoding="unicode")


def find_layout_node(scene: Any) -> Any:
    """The scene's layout node (a singleton; ``None`` in a bare scene that has none)."""
    return scene.GetFirstNodeByClass("vtkMRMLLayoutNode")


def ensure_orientation_presets(scene: Any) -> None:
    """Give the scene Slicer's Axial / Coronal / Sagittal presets when it lacks them.

    Desktop Slicer's application logic adds them to every scene; a bare scene has none, and slice nodes created
    there could not take a named orientation.
    """
    default = scene.GetDefaultNodeByClass("vtkMRMLSliceNode")
    if default is None or not all(default.HasSliceOrientationPreset(name) for name in ORIENTATIONS):
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)


def register_compare_layout(layout_node: Any, orientation: str = "Axial") -> None:
    """Add (or replace) the compare layout description on ``layout_node`` under :data:`COMPARE_LAYOUT_ID`."""
    description = compare_layout_xml(orientation)
    if layout_node.IsLayoutDescription(COMPARE_LAYOUT_ID):
        layout_node.SetLayoutDescription(COMPARE_LAYOUT_ID, description)
    else:
        layout_node.AddLayoutDescription(COMPARE_LAYOUT_ID, description)


def slice_node(scene: Any, view: CompareView) -> Any:
    """The view's ``vtkMRMLSliceNode`` (``None`` until the compare layout has been shown)."""
    return scene.GetSingletonNode(view.name, "vtkMRMLSliceNode")


def composite_node(scene: Any, view: CompareView) -> Any:
    """The view's ``vtkMRMLSliceCompositeNode`` (``None`` until the compare layout has been shown)."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        if node.GetLayoutName() == view.name:
            return node
    return None


def ensure_composite_node(scene: Any, view: CompareView) -> Any:
    """The view's composite node, created as ``vtkMRMLSliceLogic`` does (by class, with the view's layout name)
    when missing, so that the slice logic of the view adopts it."""
    node = composite_node(scene, view)
    if node is None:
        node = scene.CreateNodeByClass("vtkMRMLSliceCompositeNode")
        node.SetLayoutName(view.name)
        node = scene.AddNode(node)
    return node


def set_orientation(scene: Any, orientation: str) -> None:
    """Show ``orientation`` (``Axial``, ``Coronal`` or ``Sagittal``) in the three compare views.

    Views not created yet are skipped. :meth:`CompareViews.set_orientation` also refits the views.
    """
    orientation = orientation_name(orientation)
    for view in COMPARE_VIEWS:
        node = slice_node(scene, view)
        if node is not None:
            node.SetOrientation(orientation)


def set_difference_opacity(scene: Any, opacity: float) -> None:
    """Set the opacity (0 transparent .. 1 opaque) of the difference map over the SR in the difference view.

    Raises:
        ValueError: ``opacity`` outside 0..1.
        LookupError: the compare layout has not been shown in this scene.
    """
    opacity = float(opacity)
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1, not {opacity}")
    node = composite_node(scene, DIFFERENCE_VIEW)
    if node is None:
        raise LookupError("the compare views are not in this scene; show them first")
    node.SetForegroundOpacity(opacity)


def match_slice_geometry(source: Any, target: Any) -> None:
    """Give ``target`` the plane, centre and zoom of ``source`` (its field of view's height follows its own
    aspect ratio), as the slice link logic does when views are linked."""
    target.GetSliceToRAS().DeepCopy(source.GetSliceToRAS())
    target.SetXYZOrigin(*source.GetXYZOrigin())
    width, height = target.GetDimensions()[:2]
    fov_x, _, fov_z = source.GetFieldOfView()
    target.SetFieldOfView(fov_x, fov_x * height / width if width else fov_x, fov_z)
    target.UpdateMatrices()


def image_from_port(port: Any) -> np.ndarray:
    """The image an algorithm output port produces, as a ``[row, column, component]`` array, row 0 at the top
    (VTK's row 0 is the bottom)."""
    producer = port.GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(port.GetIndex())
    width, height, _ = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    pixels = vtk_to_numpy(scalars).reshape(height, width, scalars.GetNumberOfComponents())
    return np.ascontiguousarray(pixels[::-1])


def restore_previous_layout(scene: Any) -> bool:
    """Go back to the arrangement shown before the compare layout.

    Only while the compare layout is shown (a layout the user chose since is left alone). Returns whether the
    arrangement changed.
    """
    layout_node = find_layout_node(scene)
    previous = layout_node.GetAttribute(PREVIOUS_LAYOUT_ATTRIBUTE) if layout_node is not None else None
    if previous is None or layout_node.GetViewArrangement() != COMPARE_LAYOUT_ID:
        return False
    layout_node.SetViewArrangement(int(previous))
    return True


class CompareViews:
    """The compare layout of one scene: show it, re-orient, refit, set the difference opacity, go back.

    Args:
        scene: the ``vtkMRMLScene`` whose layout node and views are used.
        application_logic: Slicer's application logic (desktop: ``slicer.app.applicationLogic()``), whose slice
            logics are used to fit the displayed views; ``None`` in a bare scene.
    """

    def __init__(self, scene: Any, application_logic: Any = None) -> None:
        self.scene = scene
        self.application_logic = application_logic
        self._layout_logic: Any = None
        self._slice_logics: dict[str, Any] = {}

    def ensure_layout_node(self) -> Any:
        """The scene's layout node, created (with Slicer's built-in layouts) when the scene has none."""
        node = find_layout_node(self.scene)
        if node is None:
            node = self._attach_layout_logic().GetLayoutNode()
        return node

    @property
    def previous_arrangement(self) -> int | None:
        """The view arrangement :meth:`restore` goes back to (``None`` before :meth:`show`)."""
        node = find_layout_node(self.scene)
        previous = node.GetAttribute(PREVIOUS_LAYOUT_ATTRIBUTE) if node is not None else None
        return None if previous is None else int(previous)

    def show(
        self,
        input_node: Any,
        sr_node: Any,
        difference_node: Any,
        *,
        orientation: str = "Axial",
        opacity: float = DEFAULT_DIFFERENCE_OPACITY,
    ) -> None:
        """Switch to the compare layout showing the three volumes, linked, in ``orientation``, fitted to the SR.

        Calling it again (new outputs, another orientation) updates the views and keeps the remembered layout.
        No volume node is modified.

        Args:
            input_node: volume node of the left view: the input, or its baseline.
            sr_node: the super-resolved volume node (middle view; background of the right view).
            difference_node: the difference map node, overlaid on the SR in the right view.
            orientation: ``Axial``, ``Coronal`` or ``Sagittal``.
            opacity: of the difference map, 0..1.

        Raises:
            ValueError: a node is not a volume node of this scene, or a bad orientation or opacity.
        """
        orientation = orientation_name(orientation)
        if not 0.0 <= float(opacity) <= 1.0:
            raise ValueError(f"opacity must be between 0 and 1, not {opacity}")
        for node, what in ((input_node, "input"), (sr_node, "SR"), (difference_node, "difference")):
            self._check_volume_node(node, what)
        ensure_orientation_presets(self.scene)
        layout_node = self.ensure_layout_node()
        register_compare_layout(layout_node, orientation)
        if layout_node.GetViewArrangement() != COMPARE_LAYOUT_ID:
            layout_node.SetAttribute(PREVIOUS_LAYOUT_ATTRIBUTE, str(layout_node.GetViewArrangement()))
        layout_node.SetViewArrangement(COMPARE_LAYOUT_ID)
        self._ensure_slice_nodes()
        layers = {INPUT_VIEW: (input_node, None), SR_VIEW: (sr_node, None),
                  DIFFERENCE_VIEW: (sr_node, difference_node)}
        for view, (background, foreground) in layers.items():
            self._wire(view, background, foreground, opacity)
        set_orientation(self.scene, orientation)
        self.fit()

    def set_orientation(self, orientation: str) -> None:
        """Show ``orientation`` in the three views and refit them to the SR."""
        set_orientation(self.scene, orientation)
        self.fit()

    def set_difference_opacity(self, opacity: float) -> None:
        """Opacity of the difference map over the SR (see :func:`set_difference_opacity`)."""
        set_difference_opacity(self.scene, opacity)

    def fit(self) -> None:
        """Fit the SR view to its volume (Slicer's ``FitSliceToBackground`` at the view's size) and give the two
        other views the same plane, centre and zoom."""
        sr_slice = self._slice_node(SR_VIEW)
        self.slice_logic(SR_VIEW).FitSliceToBackground(*sr_slice.GetDimensions()[:2])
        for view in (INPUT_VIEW, DIFFERENCE_VIEW):
            match_slice_geometry(sr_slice, self._slice_node(view))

    def render(self, size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """Each view's image as its slice logic composites it for display, by view name.

        Args:
            size: ``(width, height)`` in pixels: resize the three views and refit them first (headless use; in
                desktop Slicer leave ``None``, the widgets own the sizes).

        Returns:
            ``[row, column, RGBA]`` uint8 arrays, row 0 at the top of the view.
        """
        if size is not None:
            for view in COMPARE_VIEWS:
                self.slice_logic(view).ResizeSliceNode(*size)
            self.fit()
        return {view.name: image_from_port(self.slice_logic(view).GetImageDataConnection()) for view in COMPARE_VIEWS}

    def restore(self) -> bool:
        """Go back to the layout shown before :meth:`show` (see :func:`restore_previous_layout`)."""
        return restore_previous_layout(self.scene)

    def slice_logic(self, view: CompareView) -> Any:
        """The ``vtkMRMLSliceLogic`` of ``view``: the application's when it has one, else one of this object's.

        Its ``GetImageDataConnection()`` gives the view's composited RGBA image at the slice node's dimensions
        (``ResizeSliceNode(width, height)`` sets them), i.e. what the view displays.
        """
        node = self._slice_node(view)
        if self.application_logic is not None:
            logic = self.application_logic.GetSliceLogic(node)
            if logic is not None:
                return logic
        if view.name not in self._slice_logics:
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLScene(self.scene)
            logic.SetSliceNode(node)
            self._slice_logics[view.name] = logic
        return self._slice_logics[view.name]

    def _attach_layout_logic(self) -> Any:
        # Kept alive: the layout logic creates the view nodes of each arrangement it is shown (CreateMissingViews).
        if self._layout_logic is None:
            self._layout_logic = slicer.vtkMRMLLayoutLogic()
            self._layout_logic.SetMRMLScene(self.scene)
        return self._layout_logic

    def _ensure_slice_nodes(self) -> None:
        # Desktop Slicer's layout logic has created them on SetViewArrangement; a bare scene needs its own logic.
        if any(slice_node(self.scene, view) is None for view in COMPARE_VIEWS):
            self._attach_layout_logic()
        missing = [view.name for view in COMPARE_VIEWS if slice_node(self.scene, view) is None]
        if missing:
            raise RuntimeError(f"Slicer's layout logic did not create the views {', '.join(missing)}")

    def _slice_node(self, view: CompareView) -> Any:
        node = slice_node(self.scene, view)
        if node is None:
            raise LookupError("the compare views are not in this scene; show them first")
        return node

    def _wire(self, view: CompareView, background: Any, foreground: Any, opacity: float) -> None:
        node = ensure_composite_node(self.scene, view)
        was_modifying = node.StartModify()
        try:
            node.SetBackgroundVolumeID(background.GetID())
            node.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
            node.SetLabelVolumeID(None)
            if foreground is not None:
                node.SetForegroundOpacity(float(opacity))
            node.SetLinkedControl(True)
            node.SetHotLinkedControl(True)
        finally:
            node.EndModify(was_modifying)

    def _check_volume_node(self, node: Any, what: str) -> None:
        if node is None or not node.IsA("vtkMRMLVolumeNode"):
            kind = node.GetClassName() if node is not None else "None"
            raise ValueError(f"the {what} must be a volume node, not {kind}")
        if node.GetScene() is not self.scene:
            raise ValueError(f"the {what} node {node.GetName()} is not in this scene")


def show_compare_views(
    scene: Any,
    input_node: Any,
    sr_node: Any,
    difference_node: Any,
    *,
    orientation: str = "Axial",
    opacity: float = DEFAULT_DIFFERENCE_OPACITY,
    application_logic: Any = None,
) -> CompareViews:
    """Show the compare layout (see :meth:`CompareViews.show`) and return the object that can change or leave it."""
    views = CompareViews(scene, application_logic)
    views.show(input_node, sr_node, difference_node, orientation=orientation, opacity=opacity)
    return views


def register_startup_layouts(layout_node: Any) -> None:
    """Register the compare layout and the training layout on the application's layout node at startup.

    A layout node saves only the number of the shown layout, never its description, so a scene saved while one of
    these layouts is shown reopens with an empty view area unless the number is known before the scene is read
    (Slicer's ``vtkMRMLLayoutNode::WriteXML``). Registering both when Slicer starts makes such scenes reopen as
    they were saved.
    """
    from .training import TRAINING_LAYOUT_ID, TRAINING_LAYOUT_XML

    if not layout_node.IsLayoutDescription(COMPARE_LAYOUT_ID):
        register_compare_layout(layout_node)
    if not layout_node.IsLayoutDescription(TRAINING_LAYOUT_ID):
        layout_node.AddLayoutDescription(TRAINING_LAYOUT_ID, TRAINING_LAYOUT_XML)
