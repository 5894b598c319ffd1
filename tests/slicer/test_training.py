"""The training module's logic (MRISuperResLib.slicer.training) on real MRML nodes from the slicer-core wheel, and a
static check of the Qt module MRISuperResTraining (widget names, parameter names, CMake lists).

Training runs are real background processes (``python -m MRISuperResLib.cli train``) on tiny configurations:
a few steps of an 8-channel EDSR on 4 mm brains, one thread.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import signal
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from helpers import ROOT, rotation_matrix

from MRISuperResLib.engine import model_zoo
from MRISuperResLib.slicer import training as slicer_training  # noqa: E402
from MRISuperResLib.processing.degradation import box_downsample  # noqa: E402
from MRISuperResLib.errors import InputError, OutputError  # noqa: E402
from MRISuperResLib.imaging.geometry import resampled_grid  # noqa: E402
from MRISuperResLib.slicer.outputs import EnhanceLogic  # noqa: E402
from MRISuperResLib.slicer.training import (  # noqa: E402
    PRESETS,
    TrainingLogic,
    TrainingPair,
    TrainingSettings,
    format_duration,
    last_error_line,
    parse_patch_size,
    read_log,
    show_training_layout,
)
from MRISuperResLib.slicer.volumes import add_volume_node, grid_from_node, volume_from_node  # noqa: E402
from MRISuperResLib.training.config import load_config  # noqa: E402
from MRISuperResLib.processing.registration import MATCH_THRESHOLD, register  # noqa: E402
from MRISuperResLib.imaging.volume import Grid, Volume  # noqa: E402
from MRISuperResLib.imaging.volume_io import read_volume  # noqa: E402

MODULE = ROOT / "MRISuperResTraining"

#: The network of every test run: 8 channels, one block (a few thousand parameters).
TINY_NETWORK = {"channels": 8, "blocks": 1, "upsample_features": 2, "global_skip": "baseline"}


@pytest.fixture(autouse=True)
def private_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Registered model folders go to a private settings folder, not the user's."""
    monkeypatch.setenv(model_zoo.CONFIG_DIR_VARIABLE, str(tmp_path / "settings"))
    monkeypatch.delenv(model_zoo.MODEL_PATH_VARIABLE, raising=False)
    return tmp_path / "settings"


def tiny_settings(output: Path, name: str = "tiny", **overrides) -> TrainingSettings:
    values = dict(name=name, output_folder=output, model_config=dict(TINY_NETWORK), patch_size=(8, 8, 8),
                  batch_size=2, steps=6, validate_every=3, log_every=1, checkpoint_every=1, threads=1,
                  device="cpu", validation_crop=(12, 12, 12))
    values.update(overrides)
    return TrainingSettings(**values)


def brain_scene(volume: Volume, count: int = 3):
    """A scene with ``count`` brain "subjects" (the 4 mm MNI152 at different intensity scales), as nodes."""
    scene = slicer.vtkMRMLScene()
    nodes = [add_volume_node(scene, volume.with_array(volume.array * gain), f"brain{index}")
             for index, gain in enumerate((1.0, 0.8, 1.2, 0.9)[:count])]
    return scene, nodes


def low_resolution_copy(volume: Volume, degrees: float = 4.0) -> Volume:
    """``volume`` block-averaged to twice its voxel size, then rotated and shifted (a real pair's misalignment)."""
    shape = tuple(n // 2 for n in volume.shape)
    usable = tuple(n * 2 for n in shape)
    coarse = box_downsample(volume.array[: usable[0], : usable[1], : usable[2]].astype(np.float32), shape)
    grid = resampled_grid(Grid(usable, volume.spacing, volume.grid.origin, volume.grid.direction), shape)
    rotation = rotation_matrix((1.0, 0.5, -0.3), np.deg2rad(degrees))
    return Volume(coarse, Grid(shape, grid.spacing, tuple(np.asarray(grid.origin) + (3.0, -2.0, 2.5)),
                               rotation @ grid.direction))


def snapshot(node) -> tuple:
    """Everything of a node the training logic must leave alone."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    attributes = {name: node.GetAttribute(name) for name in node.GetAttributeNames() or ()}
    return (node.GetMTime(), node.GetImageData().GetMTime(), slicer.util.arrayFromVolume(node).copy().tobytes(),
            slicer.util.arrayFromVTKMatrix(matrix).tobytes(), attributes, node.GetTransformNodeID(), node.GetName())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ settings
def test_presets_name_a_family_and_small_ones_build(single_thread) -> None:
    from MRISuperResLib import models

    assert slicer_training.DEFAULT_PRESET in PRESETS
    for name, preset in PRESETS.items():
        assert name.startswith(preset.family) and preset.family in models.FAMILIES
        assert preset.size in ("small", "seed") and preset.description()
        config = preset.model_config((2, 2, 2))
        if preset.size == "small":
            assert models.parameter_count(models.create(preset.family, **config)) > 0


def test_small_helpers_read_logs_and_format_times(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("step,time_s,loss,val_psnr\n2,1.0,0.5,\n4,2.0,0.25,30.5\n")
    assert read_log(log) == [{"step": 2.0, "time_s": 1.0, "loss": 0.5},
                             {"step": 4.0, "time_s": 2.0, "loss": 0.25, "val_psnr": 30.5}]
    assert read_log(tmp_path / "absent.csv") == []
    process_log = tmp_path / "process.log"
    process_log.write_text("step 3: validation\nmrisuperres: error: first\nTraceback\nmrisuperres: error: last one\n")
    assert last_error_line(process_log) == "mrisuperres: error: last one"
    process_log.write_text("Killed\n\n")
    assert last_error_line(process_log) == "Killed"
    assert [format_duration(s) for s in (None, 12.4, 245, 3725)] == ["-", "12 s", "4 min 05 s", "1 h 02 min"]
    assert parse_patch_size("24") == (24, 24, 24) and parse_patch_size(" 32, 32,12") == (32, 32, 12)
    for bad in ("", "24,24", "3", "a,b,c"):
        with pytest.raises(InputError, match="one or three whole numbers >= 4"):
            parse_patch_size(bad)


# ------------------------------------------------------------------------------------------- pairs to files
def test_pairs_become_files_and_a_config_and_the_nodes_are_unchanged(small_real_volume: Volume,
                                                                    tmp_path: Path) -> None:
    scene, nodes = brain_scene(small_real_volume, 3)
    low = add_volume_node(scene, low_resolution_copy(small_real_volume), "brain3_thick")
    paired = add_volume_node(scene, small_real_volume.with_array(small_real_volume.array * 0.9), "brain3")
    before = {node.GetID(): snapshot(node) for node in (*nodes, low, paired)}
    logic = TrainingLogic(scene)
    pairs = [TrainingPair(nodes[0]), TrainingPair(paired, low=low), TrainingPair(nodes[1]),
             TrainingPair(nodes[2], validation=True)]
    outcome = logic.register_pair(pairs[1])  # "Register selected pair" before Start

    job = logic.prepare(pairs, tiny_settings(tmp_path / "models", name="files-x2"))

    assert job.run_folder == tmp_path / "models" / "runs" / "files-x2" and job.config_path.is_file()
    assert job.train_subjects == ["brain0", "brain3", "brain1"] and job.validation_subjects == ["brain2"]
    config = load_config(job.config_path)
    assert config.name == "files-x2" and config.model.family == "edsr3d"
    assert config.model.config["scale"] == [2, 2, 2] and config.model.config["channels"] == 8
    assert [Path(p).name for p in config.data.train] == ["01_brain0_high.nrrd", "03_brain1_high.nrrd"]
    assert [Path(p).name for p in config.data.validation] == ["04_brain2_high.nrrd"]
    assert config.data.pairs == [{"high": str(job.run_folder / "data" / "02_brain3_high.nrrd"),
                                  "low": str(job.run_folder / "data" / "02_brain3_low.nrrd"),
                                  "register": False}]
    # Each written volume is its node's voxels and geometry.
    written = read_volume(config.data.train[0])
    np.testing.assert_array_equal(written.array, volume_from_node(nodes[0]).array)
    np.testing.assert_allclose(written.grid.ijk_to_lps(), grid_from_node(nodes[0]).ijk_to_lps(), atol=1e-5)
    # The real pair's low-resolution member, registered before Start, was written in the high-resolution frame.
    assert logic.registrations[(paired.GetID(), low.GetID())] is outcome
    assert outcome.metric < 2 * MATCH_THRESHOLD and outcome.method == "simpleitk"
    aligned = read_volume(config.data.pairs[0]["low"])
    assert aligned.shape == low.GetImageData().GetDimensions()
    assert outcome.node.GetName() == "brain3_thick_registered"
    assert outcome.node.GetAttribute("MRISuperRes.role") == "registered"
    # The output folder is now a user model folder; nothing the user loaded changed.
    assert model_zoo.registered_model_folders() == [(tmp_path / "models").resolve()]
    assert {node.GetID(): snapshot(node) for node in (*nodes, low, paired)} == before
    assert logic.poll().state == "prepared"
    # A pair not registered beforehand (or changed since) is registered by the training process, not by Start.
    low.Modified()
    again = TrainingLogic(scene)
    again.registrations = dict(logic.registrations)
    job = again.prepare(pairs, tiny_settings(tmp_path / "models2", name="files-x2b"))
    pair = load_config(job.config_path).data.pairs[0]
    assert pair["register"] is True
    np.testing.assert_array_equal(read_volume(pair["low"]).array, volume_from_node(low).array)


def test_a_folder_of_files_gives_simulated_and_real_pairs(small_real_volume: Volume, tmp_path: Path) -> None:
    from MRISuperResLib.imaging.volume_io import write_volume

    folder = tmp_path / "scans"
    (folder / "low").mkdir(parents=True)
    for index in range(3):
        write_volume(small_real_volume, folder / f"subject{index}.nii.gz")
    write_volume(low_resolution_copy(small_real_volume), folder / "low" / "subject1.nii.gz")
    (folder / "notes.txt").write_text("not a volume")
    pairs = slicer_training.subjects_from_folder(folder)
    assert [p.high.name for p in pairs] == ["subject0.nii.gz", "subject1.nii.gz", "subject2.nii.gz"]
    assert [p.low for p in pairs] == [None, (folder / "low" / "subject1.nii.gz").resolve(), None]

    job = TrainingLogic(slicer.vtkMRMLScene()).prepare(pairs, tiny_settings(tmp_path / "models"))
    config = load_config(job.config_path)
    # Files are used in place (the training process registers file pairs itself).
    assert config.data.train == [str(pairs[0].high)] and config.data.validation == [str(pairs[2].high)]
    assert config.data.pairs == [{"high": str(pairs[1].high), "low": str(pairs[1].low), "register": True}]
    assert not (job.run_folder / "data").exists() or not any((job.run_folder / "data").iterdir())
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no volume files"):
        slicer_training.subjects_from_folder(tmp_path / "empty")


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

    from MRISuperResLib.slicer.registration import RegistrationRun

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


# ---------------------------------------------------------------------------------------------- bad input
def test_too_few_subjects_for_a_validation_split_are_refused(small_real_volume: Volume, tmp_path: Path) -> None:
    scene, nodes = brain_scene(small_real_volume, 2)
    logic = TrainingLogic(scene)
    with pytest.raises(InputError, match="at least 2 subjects .* got 1"):
        logic.prepare([TrainingPair(nodes[0])], tiny_settings(tmp_path))
    with pytest.raises(InputError, match="every subject is marked for validation"):
        logic.prepare([TrainingPair(n, validation=True) for n in nodes], tiny_settings(tmp_path))
    with pytest.raises(InputError, match="pairs 1 and 2 use the same high-resolution volume"):
        logic.prepare([TrainingPair(nodes[0]), TrainingPair(nodes[0])], tiny_settings(tmp_path))
    assert not (tmp_path / "runs").exists()


def test_a_removed_or_missing_high_res_volume_is_refused(small_real_volume: Volume, tmp_path: Path) -> None:
    scene, nodes = brain_scene(small_real_volume, 3)
    logic = TrainingLogic(scene)
    scene.RemoveNode(nodes[1])
    with pytest.raises(InputError, match=r"pair 2: the high-resolution volume brain1 is no longer in the scene"):
        logic.prepare([TrainingPair(n) for n in nodes], tiny_settings(tmp_path))
    with pytest.raises(InputError, match="pair 1: no high-resolution volume"):
        logic.prepare([TrainingPair(None, low=nodes[0]), TrainingPair(nodes[2])], tiny_settings(tmp_path))
    with pytest.raises(InputError, match="pair 2: the high-resolution volume file .*missing.nii.gz does not exist"):
        logic.prepare([TrainingPair(nodes[0]), TrainingPair(tmp_path / "missing.nii.gz")], tiny_settings(tmp_path))
    assert not (tmp_path / "runs").exists()


def test_a_full_disk_is_refused_before_anything_is_written(small_real_volume: Volume, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    scene, nodes = brain_scene(small_real_volume, 3)
    monkeypatch.setattr(slicer_training, "disk_free_bytes", lambda folder: 20 * 2**20)
    with pytest.raises(OutputError, match=r"not enough free disk space .* needs about \d+ MB, 20 MB are free"):
        TrainingLogic(scene).prepare([TrainingPair(n) for n in nodes], tiny_settings(tmp_path / "models"))
    assert not (tmp_path / "models").exists()


def test_names_and_settings_are_checked(small_real_volume: Volume, tmp_path: Path) -> None:
    scene, nodes = brain_scene(small_real_volume, 2)
    logic = TrainingLogic(scene)
    pairs = [TrainingPair(n) for n in nodes]
    for name in ("default", model_zoo.shipped_models()[0].name):
        with pytest.raises(InputError, match="taken by a shipped model"):
            logic.prepare(pairs, tiny_settings(tmp_path, name=name))
    with pytest.raises(InputError, match="must start with a letter or digit"):
        logic.prepare(pairs, tiny_settings(tmp_path, name="my model/x2"))
    (tmp_path / "mine.safetensors").write_bytes(b"")
    with pytest.raises(OutputError, match="a model named mine already exists"):
        logic.prepare(pairs, tiny_settings(tmp_path, name="mine"))
    with pytest.raises(InputError, match="smaller than the patch size"):
        logic.prepare(pairs, tiny_settings(tmp_path, patch_size=(40, 40, 40)))
    with pytest.raises(InputError, match="whole factors"):
        logic.prepare(pairs, tiny_settings(tmp_path, scale="1.5"))
    with pytest.raises(InputError, match="perceptual loss needs a local .safetensors file"):
        logic.prepare(pairs, tiny_settings(tmp_path, perceptual=0.1))
    with pytest.raises(InputError, match="settings are not valid: .*degradation"):
        logic.prepare(pairs, tiny_settings(tmp_path, degradation="sinc"))
    assert not (tmp_path / "runs" / "tiny").exists()


# ------------------------------------------------------------------------------------------------ training
def test_training_runs_in_the_background_stops_dies_resumes_and_publishes_a_usable_model(
    small_real_volume: Volume, tmp_path: Path, single_thread
) -> None:
    scene, nodes = brain_scene(small_real_volume, 3)
    before = [snapshot(node) for node in nodes]
    logic = TrainingLogic(scene)
    job = logic.prepare([TrainingPair(n) for n in nodes],
                        tiny_settings(tmp_path / "models", name="tiny-run", steps=30, validate_every=5))
    logic.start()
    assert logic.poll().state == "running"

    # Stop after the first validation: the state is saved, the best checkpoint kept and published.
    status = _poll_until(logic, lambda s: s.best_psnr is not None or not s.running)
    assert status.state == "running" and status.best_step == 5, status
    assert status.model_updated or logic.poll().model_path == job.model_path
    stopped = logic.stop(wait=120)
    assert stopped.state == "stopped" and stopped.returncode == 130 and stopped.can_resume, stopped
    assert "resume to continue" in stopped.message and 5 <= stopped.step < 30
    best = job.run_folder / "best.safetensors"
    assert best.is_file() and sha256(job.model_path) == sha256(best)
    listed = {entry.name: entry for entry in model_zoo.list_models()}
    assert listed["tiny-run"].source == "user" and listed["tiny-run"].card_path == job.model_path.with_suffix(".md")

    # The curves are in the scene: a loss table, a validation table, two charts plotting them.
    nodes_ = logic.nodes
    assert nodes_ is not None
    steps = slicer.util.arrayFromTableColumn(nodes_.loss_table, "step")
    assert steps[0] == 1 and steps[-1] == stopped.step
    assert list(slicer.util.arrayFromTableColumn(nodes_.validation_table, "step"))[0] == 5
    assert nodes_.loss_chart.GetNumberOfPlotSeriesNodes() == 1 and nodes_.psnr_chart.GetNumberOfPlotSeriesNodes() == 2
    psnr_series = nodes_.series["val_psnr"]
    assert psnr_series.GetTableNodeID() == nodes_.validation_table.GetID()
    assert psnr_series.GetYColumnName() == "val_psnr"

    # A process that dies mid-run is noticed, and the run resumes from its last saved step.
    logic.resume()
    stopped_at = stopped.step
    _poll_until(logic, lambda s: s.step >= stopped_at + 2 or not s.running)
    os.killpg(logic.pid, signal.SIGKILL)  # what the out-of-memory killer does
    crashed = _poll_until(logic, lambda s: not s.running)
    assert crashed.state == "failed" and crashed.can_resume, crashed
    assert crashed.message.startswith("the training process was killed (signal 9, SIGKILL)")

    logic.resume()
    finished = logic.wait(timeout=300)
    assert finished.state == "finished" and finished.returncode == 0 and finished.step == 30, finished
    assert finished.eta_s == 0.0 and finished.progress == 1.0
    assert sha256(job.model_path) == sha256(job.run_folder / "tiny-run.safetensors")
    assert slicer.util.arrayFromTableColumn(logic.nodes.loss_table, "step")[-1] == 30
    assert list(slicer.util.arrayFromTableColumn(logic.nodes.validation_table, "step")) == [5, 10, 15, 20, 25, 30]

    # The trained model enhances by name through the Enhance module's logic.
    sr = EnhanceLogic(scene).enhance(nodes[0], model="tiny-run", scale=2, device="cpu").sr
    assert sr.GetImageData().GetDimensions() == tuple(2 * n for n in nodes[0].GetImageData().GetDimensions())
    assert sr.GetAttribute("MRISuperRes.model") == "tiny-run"
    assert "validation PSNR" in model_zoo.resolve_model("tiny-run", (2.0, 2.0, 2.0)).card()
    # A later session adopts the finished run; nothing the user loaded changed.
    assert TrainingLogic(scene).open_run(job.run_folder).name == "tiny-run"
    reopened = TrainingLogic(scene)
    reopened.open_run(job.run_folder)
    assert reopened.poll().state == "finished"
    assert [snapshot(node) for node in nodes] == before


def test_a_training_process_that_fails_reports_its_last_error_line(small_real_volume: Volume,
                                                                  tmp_path: Path) -> None:
    scene, nodes = brain_scene(small_real_volume, 3)
    logic = TrainingLogic(scene)
    job = logic.prepare([TrainingPair(n) for n in nodes], tiny_settings(tmp_path / "models"))
    validation_file = Path(load_config(job.config_path).data.validation[0])
    validation_file.unlink()
    logic.start()
    status = logic.wait(timeout=300)
    assert status.state == "failed" and status.returncode == 1 and status.can_resume, status
    assert re.search(r"exit status 1\): mrisuperres: error: training volume .*03_brain2_high.nrrd does not exist",
                     status.message), status.message
    assert status.model_path is None and not job.model_path.exists()


def test_the_training_layout_puts_the_charts_in_its_plot_views(small_real_volume: Volume, tmp_path: Path) -> None:
    scene, nodes = brain_scene(small_real_volume, 2)
    logic = TrainingLogic(scene)
    logic.prepare([TrainingPair(n) for n in nodes], tiny_settings(tmp_path))
    charts = logic.ensure_nodes()
    assert not show_training_layout(scene, charts)  # a bare scene has no layout node
    layout = scene.AddNode(slicer.vtkMRMLLayoutNode())
    views = {}
    for tag in (slicer_training.LOSS_VIEW_TAG, slicer_training.PSNR_VIEW_TAG):
        view = slicer.vtkMRMLPlotViewNode()
        view.SetSingletonTag(tag)
        views[tag] = scene.AddNode(view)
    assert show_training_layout(scene, charts)
    assert layout.GetViewArrangement() == slicer_training.TRAINING_LAYOUT_ID
    assert views[slicer_training.LOSS_VIEW_TAG].GetPlotChartNodeID() == charts.loss_chart.GetID()
    assert views[slicer_training.PSNR_VIEW_TAG].GetPlotChartNodeID() == charts.psnr_chart.GetID()


def _poll_until(logic: TrainingLogic, condition, timeout: float = 300.0):
    import time

    deadline = time.monotonic() + timeout
    status = logic.poll()
    while not condition(status) and time.monotonic() < deadline:
        time.sleep(0.2)
        status = logic.poll()
    return status


# ------------------------------------------------------------------------------------------ the Qt module
def _module_tree() -> ast.Module:
    return ast.parse((MODULE / "MRISuperResTraining.py").read_text())


def _ui_widgets() -> dict[str, ElementTree.Element]:
    tree = ElementTree.parse(MODULE / "Resources" / "UI" / "MRISuperResTraining.ui")
    return {widget.get("name"): widget for widget in tree.iter("widget")}


def test_every_widget_the_module_uses_exists_in_its_ui_file() -> None:
    used = {node.attr for node in ast.walk(_module_tree()) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
            and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}
    widgets = _ui_widgets()
    assert used and not used - set(widgets), f"not in the .ui file: {sorted(used - set(widgets))}"


def test_parameter_names_in_the_ui_file_are_parameters_of_the_parameter_node() -> None:
    wrappers = [node for node in ast.walk(_module_tree()) if isinstance(node, ast.ClassDef)
                and any(isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list)]
    assert len(wrappers) == 1
    parameters = {item.target.id for item in wrappers[0].body if isinstance(item, ast.AnnAssign)}
    bound = {}
    for name, widget in _ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.findtext("string")
    assert bound and set(bound.values()) <= parameters, sorted(set(bound.values()) - parameters)
    assert len(set(bound.values())) == len(bound), "one parameter bound to two widgets"


def test_the_module_keeps_engine_imports_inside_functions_and_cmake_lists_its_files() -> None:
    tree = _module_tree()
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    for node in top_level:
        module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
        assert not (module or "").startswith("MRISuperResLib"), "import MRISuperResLib inside functions"
    cmake = (MODULE / "CMakeLists.txt").read_text()
    for name in ("${MODULE_NAME}.py", "Resources/UI/${MODULE_NAME}.ui", "Resources/Icons/${MODULE_NAME}.png"):
        assert name in cmake
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"MRISuperResTraining", "MRISuperResTrainingWidget", "MRISuperResTrainingLogic",
            "MRISuperResTrainingTest"} <= classes
    assert "MRISuperResLib.slicer.training" in (MODULE / "MRISuperResTraining.py").read_text()
