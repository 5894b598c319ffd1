"""The compare layout (input | SR | difference over SR, linked) on real Slicer scenes from the slicer-core wheel.

Skipped when slicer-core is not installed. The layout node, layout logic, slice link logic and slice logics are
Slicer's own, so the checks show what desktop Slicer does with the description and the wiring: which view nodes
its layout logic creates, how its link logic propagates zoom and pan, and what each view displays.
"""

from __future__ import annotations

from xml.etree import ElementTree

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from helpers import sample_smooth_function

from MRISuperResLib.imaging.geometry import upsampled_grid  # noqa: E402
from MRISuperResLib.slicer.layout import (  # noqa: E402
    COMPARE_LAYOUT_ID,
    COMPARE_VIEW_GROUP,
    COMPARE_VIEWS,
    DIFFERENCE_VIEW,
    INPUT_VIEW,
    ORIENTATIONS,
    SR_VIEW,
    CompareViews,
    compare_layout_xml,
    composite_node,
    find_layout_node,
    set_difference_opacity,
    set_orientation,
    show_compare_views,
    slice_node,
)
from MRISuperResLib.slicer.outputs import DIFFERENCE_COLORS, show_as_map  # noqa: E402
from MRISuperResLib.slicer.volumes import add_volume_node  # noqa: E402
from MRISuperResLib.imaging.volume import Grid, Volume  # noqa: E402

SHAPE = (24, 28, 20)
VIEW_NAMES = ["SRInput", "SRResult", "SRDifference"]


def matrix(vtk_matrix) -> np.ndarray:
    return slicer.util.arrayFromVTKMatrix(vtk_matrix)


class Volumes:
    """An input on a 2 mm grid with its x2 SR and difference (SR - smooth input) on the cell-centred 1 mm grid,
    added as Slicer would show them (grey input and SR, diverging difference map)."""

    def __init__(self, scene) -> None:
        self.scene = scene
        coarse = Grid(SHAPE, (2.0, 2.0, 2.0), (-20.0, 15.0, -8.0))
        fine = upsampled_grid(coarse, (2.0, 2.0, 2.0))
        detail = 15.0 * np.cos(np.arange(fine.shape[0]) * np.pi / 2)[:, None, None] * np.ones(fine.shape)
        smooth = sample_smooth_function(fine)
        self.input = add_volume_node(scene, Volume(sample_smooth_function(coarse).astype(np.float32), coarse), "T1")
        self.sr = add_volume_node(scene, Volume((smooth + detail).astype(np.float32), fine), "T1_SR_x2")
        self.difference = add_volume_node(scene, Volume(detail.astype(np.float32), fine), "T1_difference_x2")
        show_as_map(self.difference.GetDisplayNode(), detail, DIFFERENCE_COLORS, centred=True)
        self.fine = fine


def desktop_like_scene():
    """A scene as desktop Slicer has it: orientation presets, a layout logic with its singleton layout node showing
    the conventional layout, and a slice link logic observing the view nodes."""
    scene = slicer.vtkMRMLScene()
    link_logic = slicer.vtkMRMLSliceLinkLogic()
    link_logic.SetMRMLScene(scene)
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    layout_logic = slicer.vtkMRMLLayoutLogic()
    layout_logic.SetMRMLScene(scene)
    layout_logic.GetLayoutNode().SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView)
    return scene, (link_logic, layout_logic)


@pytest.fixture()
def desktop():
    scene, logics = desktop_like_scene()
    yield scene, Volumes(scene)
    del logics


def view_properties(element) -> dict[str, str]:
    return {prop.get("name"): prop.text for prop in element.findall("property")}


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_layout_xml_has_three_slice_views_side_by_side(orientation) -> None:
    root = ElementTree.fromstring(compare_layout_xml(orientation))
    assert root.tag == "layout" and root.get("type") == "horizontal"
    items = root.findall("item")
    assert len(items) == 3
    views = [item.find("view") for item in items]
    assert [view.get("class") for view in views] == ["vtkMRMLSliceNode"] * 3
    assert [view.get("singletontag") for view in views] == VIEW_NAMES
    properties = [view_properties(view) for view in views]
    assert {p["orientation"] for p in properties} == {orientation}
    assert {p["viewgroup"] for p in properties} == {str(COMPARE_VIEW_GROUP)}
    assert len({p["viewlabel"] for p in properties}) == 3
    colours = {p["viewcolor"] for p in properties}
    assert len(colours) == 3 and not colours & {"#F34A33", "#6EB04B", "#EDD54C"}
    assert all(prop.get("action") == "default" for view in views for prop in view.findall("property"))


def test_layout_xml_takes_orientation_names_in_any_case_and_refuses_others() -> None:
    assert compare_layout_xml("sagittal") == compare_layout_xml("Sagittal")
    with pytest.raises(ValueError, match="Axial, Coronal, Sagittal"):
        compare_layout_xml("Oblique")


def test_show_registers_the_layout_and_restore_goes_back(desktop) -> None:
    scene, volumes = desktop
    layout_node = find_layout_node(scene)
    views = show_compare_views(scene, volumes.input, volumes.sr, volumes.difference, orientation="Coronal")
    assert layout_node.GetViewArrangement() == COMPARE_LAYOUT_ID
    assert layout_node.GetLayoutDescription(COMPARE_LAYOUT_ID) == compare_layout_xml("Coronal")
    assert layout_node.GetCurrentLayoutDescription() == compare_layout_xml("Coronal")
    assert views.previous_arrangement == slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView
    assert scene.GetNumberOfNodesByClass("vtkMRMLLayoutNode") == 1

    # Showing again (new outputs, another orientation) keeps the layout to go back to.
    views.show(volumes.input, volumes.sr, volumes.difference, orientation="Axial")
    assert layout_node.GetLayoutDescription(COMPARE_LAYOUT_ID) == compare_layout_xml("Axial")
    assert views.previous_arrangement == slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView

    # Another object (e.g. after a module reload) restores from what the layout node remembers.
    assert CompareViews(scene).restore()
    assert layout_node.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView
    assert not views.restore()


def test_restore_leaves_a_layout_chosen_since_alone(desktop) -> None:
    scene, volumes = desktop
    views = show_compare_views(scene, volumes.input, volumes.sr, volumes.difference)
    layout_node = find_layout_node(scene)
    layout_node.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
    assert not views.restore()
    assert layout_node.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView


def test_slicer_layout_logic_creates_the_views_the_description_names(desktop) -> None:
    scene, volumes = desktop
    show_compare_views(scene, volumes.input, volumes.sr, volumes.difference, orientation="Sagittal")
    properties = {view.get("singletontag"): view_properties(view)
                  for view in ElementTree.fromstring(compare_layout_xml("Sagittal")).iter("view")}
    for view in COMPARE_VIEWS:
        node = slice_node(scene, view)
        assert node.GetID() == f"vtkMRMLSliceNode{view.name}"
        assert node.GetLayoutName() == view.name == node.GetSingletonTag()
        assert node.GetLayoutLabel() == properties[view.name]["viewlabel"] == view.label
        assert node.GetViewGroup() == COMPARE_VIEW_GROUP
        assert node.GetOrientation() == node.GetDefaultOrientation() == "Sagittal"
        colour = properties[view.name]["viewcolor"]
        assert node.GetLayoutColor() == pytest.approx([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
        assert composite_node(scene, view).GetID() == f"vtkMRMLSliceCompositeNode{view.name}"


def test_a_bare_scene_gets_one_layout_node_and_the_views() -> None:
    scene = slicer.vtkMRMLScene()
    volumes = Volumes(scene)
    assert find_layout_node(scene) is None
    views = show_compare_views(scene, volumes.input, volumes.sr, volumes.difference, orientation="axial")
    assert scene.GetNumberOfNodesByClass("vtkMRMLLayoutNode") == 1
    assert find_layout_node(scene).GetViewArrangement() == COMPARE_LAYOUT_ID
    assert views.previous_arrangement == slicer.vtkMRMLLayoutNode.SlicerLayoutInitialView
    assert [slice_node(scene, view).GetOrientation() for view in COMPARE_VIEWS] == ["Axial"] * 3


def test_views_show_input_sr_and_difference_over_sr_linked(desktop) -> None:
    scene, volumes = desktop
    show_compare_views(scene, volumes.input, volumes.sr, volumes.difference, opacity=0.35)
    expected = {INPUT_VIEW: (volumes.input, None), SR_VIEW: (volumes.sr, None),
                DIFFERENCE_VIEW: (volumes.sr, volumes.difference)}
    for view, (background, foreground) in expected.items():
        node = composite_node(scene, view)
        assert node.GetBackgroundVolumeID() == background.GetID()
        assert node.GetForegroundVolumeID() == (foreground.GetID() if foreground else None)
        assert node.GetLabelVolumeID() is None
        assert node.GetLinkedControl() and node.GetHotLinkedControl()
    assert composite_node(scene, DIFFERENCE_VIEW).GetForegroundOpacity() == pytest.approx(0.35)
    red = slicer.vtkMRMLSliceLogic.GetSliceCompositeNode(scene.GetNodeByID("vtkMRMLSliceNodeRed"))
    assert red is None or not red.GetLinkedControl()


def test_difference_opacity_is_set_and_checked(desktop) -> None:
    scene, volumes = desktop
    with pytest.raises(LookupError, match="show them first"):
        set_difference_opacity(scene, 0.5)
    views = show_compare_views(scene, volumes.input, volumes.sr, volumes.difference)
    views.set_difference_opacity(0.8)
    assert composite_node(scene, DIFFERENCE_VIEW).GetForegroundOpacity() == pytest.approx(0.8)
    with pytest.raises(ValueError, match="between 0 and 1"):
        set_difference_opacity(scene, 1.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        views.show(volumes.input, volumes.sr, volumes.difference, opacity=-0.1)


@pytest.mark.parametrize("orientation", ["Coronal", "Sagittal", "Axial"])
def test_orientation_switch_turns_all_three_views(desktop, orientation) -> None:
    scene, volumes = desktop
    views = show_compare_views(scene, volumes.input, volumes.sr, volumes.difference, orientation="Axial")
    views.set_orientation(orientation)
    assert [slice_node(scene, view).GetOrientation() for view in COMPARE_VIEWS] == [orientation] * 3
    red = scene.GetNodeByID("vtkMRMLSliceNodeRed")
    assert red.GetOrientation() == "Axial"
    set_orientation(scene, "coronal")
    assert {slice_node(scene, view).GetOrientation() for view in COMPARE_VIEWS} == {"Coronal"}


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_the_views_show_one_plane_fitted_to_the_sr(desktop, orientation) -> None:
    scene, volumes = desktop
    show_compare_views(scene, volumes.input, volumes.sr, volumes.difference, orientation=orientation)
    nodes = [slice_node(scene, view) for view in COMPARE_VIEWS]
    for node in nodes[1:]:
        np.testing.assert_allclose(matrix(node.GetSliceToRAS()), matrix(nodes[0].GetSliceToRAS()), atol=1e-9)
        np.testing.assert_allclose(node.GetFieldOfView(), nodes[0].GetFieldOfView())
        np.testing.assert_allclose(node.GetXYZOrigin(), nodes[0].GetXYZOrigin())
    bounds = np.zeros(6)
    volumes.sr.GetRASBounds(bounds)
    centre, extent = (bounds[0::2] + bounds[1::2]) / 2, bounds[1::2] - bounds[0::2]
    slice_to_ras = matrix(nodes[1].GetSliceToRAS())
    in_plane = np.abs(slice_to_ras[:3, :2]).argmax(axis=0)
    np.testing.assert_allclose(slice_to_ras[:3, 3][in_plane], centre[in_plane], atol=1e-6)
    fov = np.asarray(nodes[1].GetFieldOfView()[:2])
    assert np.all(fov >= extent[in_plane] - 1e-6) and np.any(np.isclose(fov, extent[in_plane]))


def test_slicer_link_logic_pans_and_zooms_the_three_views_together(desktop) -> None:
    scene, volumes = desktop
    show_compare_views(scene, volumes.input, volumes.sr, volumes.difference)
    red = scene.GetNodeByID("vtkMRMLSliceNodeRed")
    red_view = (red.GetFieldOfView(), red.GetXYZOrigin())
    sr = slice_node(scene, SR_VIEW)
    # What a slice view's interactor does when the user zooms and pans the SR view.
    sr.SetInteractionFlags(slicer.vtkMRMLSliceNode.FieldOfViewFlag | slicer.vtkMRMLSliceNode.XYZOriginFlag)
    sr.SetInteracting(1)
    sr.SetFieldOfView(31.0, 31.0, sr.GetFieldOfView()[2])
    sr.SetXYZOrigin(4.0, -3.0, 0.0)
    sr.SetInteracting(0)
    for view in (INPUT_VIEW, DIFFERENCE_VIEW):
        node = slice_node(scene, view)
        assert node.GetFieldOfView()[0] == pytest.approx(31.0)
        assert node.GetXYZOrigin() == pytest.approx((4.0, -3.0, 0.0))
    assert (red.GetFieldOfView(), red.GetXYZOrigin()) == red_view


def test_showing_leaves_the_volume_nodes_unchanged(desktop) -> None:
    scene, volumes = desktop
    nodes = (volumes.input, volumes.sr, volumes.difference)
    before = [(node.GetMTime(), node.GetImageData().GetMTime(), node.GetDisplayNode().GetMTime(),
               slicer.util.arrayFromVolume(node).copy()) for node in nodes]
    views = show_compare_views(scene, volumes.input, volumes.sr, volumes.difference)
    views.set_orientation("Sagittal")
    views.set_difference_opacity(0.2)
    views.render((64, 48))
    views.restore()
    for node, (mtime, image_mtime, display_mtime, values) in zip(nodes, before, strict=True):
        assert (node.GetMTime(), node.GetImageData().GetMTime()) == (mtime, image_mtime)
        assert node.GetDisplayNode().GetMTime() == display_mtime
        assert np.array_equal(slicer.util.arrayFromVolume(node), values)


def test_show_refuses_what_it_cannot_display(desktop) -> None:
    scene, volumes = desktop
    elsewhere = Volumes(slicer.vtkMRMLScene())
    with pytest.raises(ValueError, match="not in this scene"):
        show_compare_views(scene, volumes.input, elsewhere.sr, volumes.difference)
    model = scene.AddNewNodeByClass("vtkMRMLModelNode", "surface")
    with pytest.raises(ValueError, match="must be a volume node"):
        show_compare_views(scene, volumes.input, volumes.sr, model)
    with pytest.raises(ValueError, match="orientation"):
        show_compare_views(scene, volumes.input, volumes.sr, volumes.difference, orientation="Oblique")
    assert find_layout_node(scene).GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView


def test_rendered_views_show_the_difference_only_in_the_right_view(desktop) -> None:
    """What each view displays, as its vtkMRMLSliceLogic composites it (reslice, window/level, colours, blend)."""
    scene, volumes = desktop
    views = show_compare_views(scene, volumes.input, volumes.sr, volumes.difference, orientation="Axial",
                               opacity=0.0)
    transparent = views.render((96, 80))
    assert list(transparent) == VIEW_NAMES
    assert all(image.shape == (80, 96, 4) and image.dtype == np.uint8 for image in transparent.values())
    assert np.array_equal(transparent["SRDifference"], transparent["SRResult"])

    views.set_difference_opacity(1.0)
    overlaid = views.render()
    assert np.array_equal(overlaid["SRResult"], transparent["SRResult"])
    rgb = overlaid["SRDifference"][..., :3].astype(float)
    # The diverging map is coloured (R != B) where the SR is shown in grey (R == G == B).
    assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 20
    sr_rgb = overlaid["SRResult"][..., :3].astype(float)
    assert np.abs(sr_rgb[..., 0] - sr_rgb[..., 2]).max() == 0

    # Input and SR views show the same anatomy at the same place (the SR adds a small high-frequency detail).
    inside = sr_rgb[..., 0] > 0
    input_grey = overlaid["SRInput"][..., 0].astype(float)
    assert inside.mean() > 0.3
    assert np.corrcoef(input_grey[inside], sr_rgb[..., 0][inside])[0, 1] > 0.8


def test_a_scene_saved_with_a_custom_layout_reopens_with_it() -> None:
    """The layout node saves only the arrangement number; the descriptions registered at startup make a saved
    scene with the compare (or training) layout reopen with its views."""
    from MRISuperResLib.slicer.layout import COMPARE_LAYOUT_ID, register_startup_layouts
    from MRISuperResLib.slicer.training import TRAINING_LAYOUT_ID

    def application_scene():
        scene = slicer.vtkMRMLScene()
        layout = slicer.vtkMRMLLayoutNode()
        layout.SetSingletonTag("vtkMRMLLayoutNode")
        scene.AddNode(layout)
        register_startup_layouts(layout)  # what the module does when Slicer has started
        return scene, layout

    for arrangement in (COMPARE_LAYOUT_ID, TRAINING_LAYOUT_ID):
        saved, layout = application_scene()
        layout.SetViewArrangement(arrangement)
        saved.SetSaveToXMLString(1)
        saved.Commit()
        xml = saved.GetSceneXMLString()
        assert "currentViewArrangement" in xml and "<layout" not in xml  # the description is not saved

        reopened, layout = application_scene()
        reopened.SetSceneXMLString(xml)
        reopened.SetLoadFromXMLString(1)
        reopened.Import()
        assert layout.GetViewArrangement() == arrangement
        assert "<layout" in layout.GetCurrentLayoutDescription()
