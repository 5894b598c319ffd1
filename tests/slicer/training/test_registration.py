"""Registering real pairs for training (MRISuperResLib.slicer.training.registration): SimpleITK in process and in a
background process, BRAINSFit's transform convention, and pairs of different anatomy refused with the metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from helpers import brain_scene, low_resolution_copy, snapshot, tiny_settings  # noqa: E402

from MRISuperResLib.errors import InputError  # noqa: E402
from MRISuperResLib.imaging.volume import Volume  # noqa: E402
from MRISuperResLib.imaging.volume_io import read_volume  # noqa: E402
from MRISuperResLib.processing.registration import MATCH_THRESHOLD, register  # noqa: E402
from MRISuperResLib.slicer.training import TrainingLogic, TrainingPair  # noqa: E402
from MRISuperResLib.slicer.volumes import add_volume_node, volume_from_node  # noqa: E402

# ------------------------------------------------------------------------------------------- registration
def test_the_ixi002_pair_registers_and_shows_over_the_high_res(shared_data: Path) -> None:
    import SimpleITK as sitk

    from MRISuperResLib.imaging.volume_io import from_sitk, to_sitk

    def coarsen(volume: Volume, factors: tuple[int, int, int]) -> Volume:
        # About 3.7 mm, as in test_registration: seconds instead of a minute.
        return from_sitk(sitk.BinShrink(to_sitk(volume, volume.array.astype(np.float32)), list(factors)))

    scene = slicer.vtkMRMLScene()
    t1 = add_volume_node(scene, coarsen(read_volume(shared_data / "pairs" / "IXI002_T1.nii.gz"), (3, 4, 4)), "T1")
    t2 = add_volume_node(scene, coarsen(read_volume(shared_data / "pairs" / "IXI002_T2.nii.gz"), (4, 4, 3)), "T2")
    composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    before = snapshot(t1), snapshot(t2)

    outcome = TrainingLogic(scene).register_pair(TrainingPair(t1, t2), scale=2)

    assert outcome.metric < 2 * MATCH_THRESHOLD, outcome.metric
    assert set(outcome.stage_metrics) == {"rigid", "affine"}
    assert outcome.stage_metrics["affine"] <= outcome.stage_metrics["rigid"] + 1e-3
    # T1 and T2 have the same voxel size: a contrast pair, not a resolution pair at scale 2.
    assert outcome.warnings and "not the training scale 2, 2, 2" in outcome.warnings[0]
    registered = outcome.node
    assert registered.GetName() == "T2_registered" and registered.GetImageData().GetDimensions() == \
        t2.GetImageData().GetDimensions()
    assert float(registered.GetAttribute("MRISuperRes.mattes_mi")) == pytest.approx(outcome.metric, abs=1e-4)
    assert composite.GetBackgroundVolumeID() == t1.GetID() and composite.GetForegroundVolumeID() == registered.GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(0.5)
    assert (snapshot(t1), snapshot(t2)) == before


def test_a_brainsfit_transform_is_read_in_slicer_convention(small_real_volume: Volume) -> None:
    """BRAINSFit leaves a transform node whose "to parent" maps moving RAS points to fixed ones; read back, it must
    score like the engine's own registration of the same pair."""
    scene = slicer.vtkMRMLScene()
    high = add_volume_node(scene, small_real_volume, "high")
    low = add_volume_node(scene, low_resolution_copy(small_real_volume), "low")
    engine = register(volume_from_node(high), volume_from_node(low))

    def brainsfit(fixed_node, moving_node, transform_node) -> None:
        from MRISuperResLib.processing.registration import affine_matrix
        from MRISuperResLib.imaging.volume import LPS_TO_RAS

        fixed_to_moving_ras = LPS_TO_RAS @ affine_matrix(engine.transform) @ LPS_TO_RAS
        transform_node.SetMatrixTransformFromParent(slicer.util.vtkMatrixFromArray(fixed_to_moving_ras))
        assert (fixed_node, moving_node) == (high, low)

    logic = TrainingLogic(scene, brainsfit=brainsfit)
    outcome = logic.register_pair(TrainingPair(high, low), method="brainsfit")
    assert outcome.method == "brainsfit" and outcome.metric == pytest.approx(engine.metric, abs=1e-6)
    assert scene.GetFirstNodeByClass("vtkMRMLLinearTransformNode") is None  # the temporary node is gone
    with pytest.raises(InputError, match="desktop Slicer"):
        TrainingLogic(scene).register_pair(TrainingPair(high, low), method="brainsfit")


def test_a_pair_of_different_anatomy_is_refused_with_the_metric(small_real_volume: Volume, tmp_path: Path) -> None:
    scene, nodes = brain_scene(small_real_volume, 2)
    noise = small_real_volume.with_array(np.random.default_rng(0).uniform(0, 500, small_real_volume.shape)
                                         .astype(np.float32))
    noise_node = add_volume_node(scene, noise, "noise")
    before = snapshot(nodes[0]), snapshot(noise_node)
    logic = TrainingLogic(scene)
    metric = r"the registration metric \(Mattes mutual information\) is -?0\.0\d\d, above -0\.100"
    with pytest.raises(InputError, match=f"noise does not match brain0: {metric}; the scans do not show the same"):
        logic.register_pair(TrainingPair(nodes[0], noise_node), iterations=30)
    assert scene.GetNodesByName("noise_registered").GetNumberOfItems() == 0
    # Not registered beforehand: the training process registers the pair, refuses it and fails with the metric.
    pairs = [TrainingPair(nodes[0], noise_node), TrainingPair(nodes[1])]
    logic.prepare(pairs, tiny_settings(tmp_path / "models"))
    logic.start()
    status = logic.wait(timeout=300)
    assert status.state == "failed" and "final Mattes mutual information" in status.message, status.message
    assert "do not overlap anatomically" in status.message
    assert (snapshot(nodes[0]), snapshot(noise_node)) == before


def test_register_selected_pair_runs_in_the_background(small_real_volume: Volume, tmp_path: Path) -> None:
    """The panel's "Register selected pair" (SimpleITK): a child process registers, Slicer only polls; the outcome
    is what register_pair gives, and Start then uses it."""
    import time

    from MRISuperResLib.slicer.training import RegistrationRun

    scene, nodes = brain_scene(small_real_volume, 2)
    low = add_volume_node(scene, low_resolution_copy(small_real_volume), "brain0_thick")
    before = snapshot(nodes[0]), snapshot(low)
    logic = TrainingLogic(scene)
    run = RegistrationRun(logic, TrainingPair(nodes[0], low), 2, temp_root=tmp_path).start()
    deadline = time.monotonic() + 300
    while (outcome := run.poll()) is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert outcome.metric < MATCH_THRESHOLD and set(outcome.stage_metrics) == {"rigid", "affine"}
    assert logic.registrations[(nodes[0].GetID(), low.GetID())] is outcome
    assert outcome.node.GetName() == "brain0_thick_registered" and outcome.node.GetAttribute("MRISuperRes.role") == \
        "registered"
    assert outcome.node.GetImageData().GetDimensions() == low.GetImageData().GetDimensions()
    in_process = logic.register_pair(TrainingPair(nodes[0], low))  # the same algorithm, here on the GUI thread
    assert abs(in_process.metric - outcome.metric) < 0.02
    assert list(tmp_path.iterdir()) == [] and (snapshot(nodes[0]), snapshot(low)) == before

    noise = add_volume_node(scene, small_real_volume.with_array(
        np.random.default_rng(0).uniform(0, 500, small_real_volume.shape).astype(np.float32)), "noise")
    run = RegistrationRun(logic, TrainingPair(nodes[1], noise), 2, temp_root=tmp_path).start()
    with pytest.raises(InputError, match="noise was not registered onto brain1: registration failed: final Mattes"):
        while run.poll() is None:
            time.sleep(0.1)
    assert scene.GetNodesByName("noise_registered").GetNumberOfItems() == 0 and list(tmp_path.iterdir()) == []
