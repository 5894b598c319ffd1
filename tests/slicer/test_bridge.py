"""The MRML bridge and the scene-side enhance logic, with real Slicer nodes from the slicer-core wheel.

Skipped when slicer-core is not installed. Nodes are made with Slicer's own API (``slicer.util``, volumes logic)
wherever the bridge is under test, so the checks compare against Slicer's conventions, not our own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from helpers import oblique_grid, rotation_matrix, sample_smooth_function

from MRISuperResLib.errors import InputError  # noqa: E402
from MRISuperResLib.imaging.geometry import upsampled_grid  # noqa: E402
from MRISuperResLib.slicer.outputs import (  # noqa: E402
    DIFFERENCE_COLORS,
    EnhanceLogic,
    EnhanceNodes,
    output_name,
    show_as_map,
)
from MRISuperResLib.slicer.volumes import add_volume_node, ensure_display_node, volume_from_node  # noqa: E402
from MRISuperResLib.imaging.volume import LPS_TO_RAS, Volume  # noqa: E402
from MRISuperResLib.imaging.volume_io import read_volume  # noqa: E402

SHAPE = (20, 24, 16)


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def oblique_ijk_to_ras() -> np.ndarray:
    """An IJK->RAS with rotation, anisotropic spacing and a non-zero origin."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation_matrix((0.3, -1.0, 2.0), 0.7) @ np.diag([0.9, 1.3, 2.7])
    matrix[:3, 3] = (-31.5, 12.25, 48.0)
    return matrix


def slicer_volume_node(scene, array_kji: np.ndarray, matrix: np.ndarray, name: str = "input"):
    """A scalar volume node made the way slicer.util.addVolumeFromArray does, in a given scene."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))
    slicer.util.updateVolumeFromArray(node, array_kji)
    return node


def voxel_ras(matrix: np.ndarray, ijk: tuple[int, int, int]) -> np.ndarray:
    return (matrix @ np.array([*ijk, 1.0]))[:3]


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.float64])
def test_node_volume_node_round_trip_keeps_values_dtype_and_geometry(dtype) -> None:
    scene = slicer.vtkMRMLScene()
    rng = np.random.default_rng(0)
    array_kji = (rng.random(SHAPE[::-1]) * 200).astype(dtype)
    source = slicer_volume_node(scene, array_kji, oblique_ijk_to_ras())

    volume = volume_from_node(source)
    assert volume.shape == SHAPE and volume.array.dtype == dtype
    assert volume.array[3, 5, 7] == array_kji[7, 5, 3]
    np.testing.assert_allclose(volume.grid.ijk_to_ras(), ijk_to_ras(source), rtol=0, atol=1e-12)
    np.testing.assert_allclose(LPS_TO_RAS @ volume.grid.ijk_to_lps(), ijk_to_ras(source), rtol=0, atol=1e-12)

    copy = add_volume_node(scene, volume, "copy")
    assert np.array_equal(ijk_to_ras(copy), ijk_to_ras(source))
    copied = slicer.util.arrayFromVolume(copy)
    assert copied.dtype == dtype and np.array_equal(copied, array_kji)
    assert copy.GetDisplayNode() is not None
    assert copy.GetDisplayNode().GetColorNodeID() == "vtkMRMLColorTableNodeGrey"
    assert scene.GetNodeByID("vtkMRMLColorTableNodeGrey") is not None


def test_reading_a_node_copies_its_voxels() -> None:
    scene = slicer.vtkMRMLScene()
    array_kji = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE[::-1])
    node = slicer_volume_node(scene, array_kji, oblique_ijk_to_ras())
    volume = volume_from_node(node)
    volume.array[...] = -1
    assert np.array_equal(slicer.util.arrayFromVolume(node), array_kji)


def test_reading_a_node_without_voxels_is_an_input_error() -> None:
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="no voxels"):
        volume_from_node(node)


def test_engine_nifti_gives_the_same_voxel_positions_as_slicer_loading(tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    array_kji = np.random.default_rng(1).integers(0, 1000, SHAPE[::-1]).astype(np.int16)
    image = sitk.GetImageFromArray(array_kji)
    image.SetSpacing((1.1, 0.8, 2.5))
    image.SetOrigin((12.0, -40.5, 7.25))
    image.SetDirection(tuple(rotation_matrix((1.0, 0.5, -0.25), 0.5).ravel()))
    path = tmp_path / "oblique.nii.gz"
    sitk.WriteImage(image, str(path))

    scene = slicer.vtkMRMLScene()
    volumes_logic = slicer.vtkSlicerVolumesLogic()
    volumes_logic.SetMRMLScene(scene)
    loaded_by_slicer = volumes_logic.AddArchetypeScalarVolume(str(path), "slicer", 0, None)
    volume = read_volume(path)
    loaded_by_engine = add_volume_node(scene, volume, "engine")

    for ijk in [(0, 0, 0), (19, 0, 0), (0, 23, 0), (0, 0, 15), (7, 11, 3), (19, 23, 15)]:
        expected = voxel_ras(ijk_to_ras(loaded_by_slicer), ijk)
        np.testing.assert_allclose(voxel_ras(volume.grid.ijk_to_ras(), ijk), expected, atol=1e-4)
        np.testing.assert_allclose(voxel_ras(ijk_to_ras(loaded_by_engine), ijk), expected, atol=1e-4)
    assert np.array_equal(slicer.util.arrayFromVolume(loaded_by_engine), slicer.util.arrayFromVolume(loaded_by_slicer))


def test_output_names_follow_the_input_and_scale() -> None:
    assert output_name("T1", "sr", (2.0, 2.0, 2.0)) == "T1_SR_x2"
    assert output_name("T2 ax", "difference", (1.0, 1.0, 4.0)) == "T2 ax_difference_x1,1,4"


def test_a_difference_map_is_centred_on_zero() -> None:
    scene = slicer.vtkMRMLScene()
    values = np.linspace(-10.0, 10.0, int(np.prod(SHAPE)), dtype=np.float32).reshape(SHAPE)
    node = add_volume_node(scene, Volume(values, oblique_grid(SHAPE)), "difference")
    display = ensure_display_node(node)
    show_as_map(display, values, DIFFERENCE_COLORS, centred=True)
    top = np.percentile(np.abs(values), 99.5)
    assert display.GetLevel() == pytest.approx(0.0, abs=1e-9)
    assert display.GetWindow() == pytest.approx(2 * top)
    assert display.GetColorNode().GetName() == "DivergingBlueRed"
    assert display.GetColorNode().GetNumberOfColors() == 256


class StudyScene:
    """A scene as a user would have it: input in a patient's study, under a transform, with its own
    window/level, and the Colors module's legend node class registered."""

    def __init__(self) -> None:
        self.scene = slicer.vtkMRMLScene()
        self.scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
        grid = oblique_grid(SHAPE)
        self.input = add_volume_node(self.scene, Volume(sample_smooth_function(grid).astype(np.float32), grid), "T1")
        self.input.GetDisplayNode().SetAutoWindowLevel(False)
        self.input.GetDisplayNode().SetWindowLevel(123.0, 45.0)
        self.transform = self.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
        self.input.SetAndObserveTransformNodeID(self.transform.GetID())
        self.hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        patient = self.hierarchy.CreateSubjectItem(self.hierarchy.GetSceneItemID(), "patient")
        self.study = self.hierarchy.CreateStudyItem(patient, "study")
        self.hierarchy.CreateItem(self.study, self.input)
        self.input_values = slicer.util.arrayFromVolume(self.input).copy()


@pytest.fixture(scope="module")
def enhanced() -> tuple[StudyScene, EnhanceNodes]:
    study = StudyScene()
    nodes = EnhanceLogic(study.scene).enhance(study.input, model="default", scale=2, device="cpu")
    return study, nodes


def test_enhance_adds_named_output_nodes_on_the_right_grids(enhanced) -> None:
    study, nodes = enhanced
    assert [node.GetName() for node in (nodes.sr, nodes.baseline, nodes.difference, nodes.consistency)] == [
        "T1_SR_x2", "T1_baseline_x2", "T1_difference_x2", "T1_consistency_x2"]
    assert nodes.uncertainty is None
    input_grid = volume_from_node(study.input).grid
    fine = upsampled_grid(input_grid, (2.0, 2.0, 2.0))
    for node in (nodes.sr, nodes.baseline, nodes.difference):
        np.testing.assert_allclose(ijk_to_ras(node), fine.ijk_to_ras(), rtol=0, atol=1e-12)
        assert volume_from_node(node).shape == fine.shape
    assert np.array_equal(ijk_to_ras(nodes.consistency), ijk_to_ras(study.input))
    difference = volume_from_node(nodes.sr).array - volume_from_node(nodes.baseline).array
    np.testing.assert_allclose(volume_from_node(nodes.difference).array, difference, atol=1e-3)
    assert np.array_equal(slicer.util.arrayFromVolume(study.input), study.input_values)


def test_enhance_records_provenance_on_every_output(enhanced) -> None:
    study, nodes = enhanced
    for node, role in [(nodes.sr, "super-resolved"), (nodes.baseline, "baseline"),
                       (nodes.difference, "difference"), (nodes.consistency, "consistency")]:
        assert node.GetAttribute("MRISuperRes.role") == role
        assert node.GetAttribute("MRISuperRes.model") == nodes.summary["model"]
        assert node.GetAttribute("MRISuperRes.source") == "T1"
        assert node.GetAttribute("MRISuperRes.scale") == "2"
        assert "not acquired" in node.GetDescription()
    for node in (nodes.sr, nodes.difference, nodes.consistency):
        assert node.GetDescription().startswith("AI-generated, not acquired")
    assert float(nodes.sr.GetAttribute("MRISuperRes.consistency_nrmse")) == pytest.approx(
        nodes.summary["consistency_nrmse"], rel=1e-5)
    assert study.input.GetAttribute("MRISuperRes.role") is None


def test_enhance_shows_outputs_like_the_input_and_maps_with_colour_scales(enhanced) -> None:
    study, nodes = enhanced
    for node in (nodes.sr, nodes.baseline):
        display = node.GetDisplayNode()
        assert not display.GetAutoWindowLevel()
        assert (display.GetWindow(), display.GetLevel()) == pytest.approx((123.0, 45.0))
        assert display.GetColorNodeID() == study.input.GetDisplayNode().GetColorNodeID()
    difference = nodes.difference.GetDisplayNode()
    assert difference.GetColorNode() is not None and difference.GetColorNode().GetName() == "DivergingBlueRed"
    assert difference.GetLevel() == pytest.approx(0.0, abs=1e-9) and difference.GetWindow() > 0
    consistency = nodes.consistency.GetDisplayNode()
    assert consistency.GetColorNode() is not None and consistency.GetColorNode().GetName() == "Inferno"
    assert consistency.GetWindowLevelMin() == pytest.approx(0.0, abs=1e-9)
    for node in (nodes.difference, nodes.consistency):
        legends = [node.GetNthDisplayNode(n) for n in range(node.GetNumberOfDisplayNodes())]
        assert any(legend.IsA("vtkMRMLColorLegendDisplayNode") for legend in legends)


def test_enhance_places_outputs_in_the_input_study_and_transform(enhanced) -> None:
    study, nodes = enhanced
    for node in nodes.nodes().values():
        if node is None:
            continue
        assert study.hierarchy.GetItemParent(study.hierarchy.GetItemByDataNode(node)) == study.study
        assert node.GetTransformNodeID() == study.transform.GetID()


def test_enhance_reuses_given_output_nodes_in_a_bare_scene() -> None:
    scene = slicer.vtkMRMLScene()
    grid = oblique_grid(SHAPE)
    array_kji = sample_smooth_function(grid).astype(np.float32).transpose(2, 1, 0)
    source = slicer_volume_node(scene, array_kji, grid.ijk_to_ras(), "T2")
    mine = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my SR")
    logic = EnhanceLogic(scene)

    first = logic.enhance(source, device="cpu", outputs=EnhanceNodes(sr=mine))
    assert first.sr is mine and mine.GetName() == "my SR"
    assert first.baseline.GetName() == "T2_baseline_x2"
    # Without the Colors module's legend class (bare scene) the maps still get their colours, just no legend.
    assert first.difference.GetNumberOfDisplayNodes() == 1
    assert first.difference.GetDisplayNode().GetColorNode().GetName() == "DivergingBlueRed"
    counts = [scene.GetNumberOfNodesByClass(name) for name in ("vtkMRMLScalarVolumeNode", "vtkMRMLColorTableNode")]

    second = logic.enhance(source, device="cpu", outputs=first)
    assert [node.GetID() for node in second.nodes().values() if node] == [
        node.GetID() for node in first.nodes().values() if node]
    assert [scene.GetNumberOfNodesByClass(name) for name in ("vtkMRMLScalarVolumeNode", "vtkMRMLColorTableNode")
            ] == counts
    assert np.array_equal(slicer.util.arrayFromVolume(source), array_kji)


def test_enhance_refuses_the_input_as_an_output() -> None:
    scene = slicer.vtkMRMLScene()
    grid = oblique_grid(SHAPE)
    source = add_volume_node(scene, Volume(sample_smooth_function(grid).astype(np.float32), grid), "T1")
    with pytest.raises(ValueError, match="is the input"):
        EnhanceLogic(scene).enhance(source, device="cpu", outputs=EnhanceNodes(difference=source))


def test_add_outputs_shows_an_uncertainty_map_from_given_volumes() -> None:
    scene = slicer.vtkMRMLScene()
    grid = oblique_grid(SHAPE)
    source = add_volume_node(scene, Volume(sample_smooth_function(grid).astype(np.float32), grid), "T2")
    spread = Volume(np.abs(sample_smooth_function(grid, shift=0.5) - 100).astype(np.float32), grid,
                    {"MRISuperRes.role": "uncertainty", "MRISuperRes.notice": "AI-generated, not acquired"})
    nodes = EnhanceLogic(scene).add_outputs(source, {"uncertainty": spread}, (1.0, 1.0, 4.0))
    assert nodes.sr is None and nodes.uncertainty.GetName() == "T2_uncertainty_x1,1,4"
    display = nodes.uncertainty.GetDisplayNode()
    assert display.GetColorNode().GetName() == "Viridis"
    assert display.GetWindowLevelMax() == pytest.approx(np.percentile(spread.array, 99.5), rel=1e-6)
    assert nodes.uncertainty.GetAttribute("MRISuperRes.role") == "uncertainty"
    assert "AI-generated, not acquired" in nodes.uncertainty.GetDescription()


@pytest.mark.parametrize("compress", [True, False])
def test_the_worker_thread_reader_matches_slicers_reader(tmp_path, compress: bool) -> None:
    """Outputs of a background run are read off the GUI thread (numpy / zlib) and handed to the node as they
    are: voxels and IJK->RAS must equal what Slicer's own C++ reader gives, oblique grid included."""
    from helpers import oblique_grid

    from MRISuperResLib.slicer.volumes import load_nrrd, read_file_into_node, set_node_image
    from MRISuperResLib.imaging.volume import Volume
    from MRISuperResLib.imaging.volume_io import write_volume

    array = np.random.default_rng(3).normal(size=(5, 6, 7)).astype(np.float32)
    path = write_volume(Volume(array, oblique_grid(array.shape), {"MRISuperRes.role": "sr",
                                                                   "MRISuperRes.notice": "two\nlines"}),
                        tmp_path / "sr.nrrd", compress=compress)
    scene = slicer.vtkMRMLScene()
    by_slicer = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "slicer")
    read_file_into_node(by_slicer, path)
    loaded = load_nrrd(path)
    assert loaded is not None and loaded.key_values["MRISuperRes.notice"] == "two\nlines"
    by_thread = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "thread")
    set_node_image(by_thread, loaded)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(by_thread), slicer.util.arrayFromVolume(by_slicer))
    matrices = []
    for node in (by_slicer, by_thread):
        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        matrices.append(slicer.util.arrayFromVTKMatrix(matrix))
    np.testing.assert_allclose(matrices[1], matrices[0], atol=1e-9)
    slicer.util.arrayFromVolume(by_thread)[0, 0, 0] = 42.0  # the node owns writable memory
    truncated = tmp_path / "cut.nrrd"
    truncated.write_bytes(path.read_bytes()[:-40])
    with pytest.raises((OSError, __import__("zlib").error)):
        load_nrrd(truncated)


def test_output_nodes_read_by_key_and_slicer_name_and_only_output_maps_are_accepted() -> None:
    nodes = EnhanceNodes({"sr": "a"}, difference="b")
    assert nodes.sr == nodes.srVolumeNode == "a" and nodes.differenceVolumeNode == "b" and nodes.uncertainty is None
    nodes.uncertainty = "c"
    assert nodes.nodes() == {"sr": "a", "baseline": None, "difference": "b", "consistency": None, "uncertainty": "c"}
    with pytest.raises(TypeError, match="not an output map"):
        EnhanceNodes(residual="x")
    with pytest.raises(AttributeError):
        nodes.residualVolumeNode  # noqa: B018
