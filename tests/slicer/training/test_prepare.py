"""Preparing a training run (MRISuperResLib.slicer.training.prepare, .subjects): pairs of real MRML nodes from the
slicer-core wheel, or files, become data files and a config; bad input is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from helpers import brain_scene, low_resolution_copy, snapshot, tiny_settings  # noqa: E402

from MRISuperResLib.engine import model_zoo  # noqa: E402
from MRISuperResLib.errors import InputError, OutputError  # noqa: E402
from MRISuperResLib.imaging.volume import Volume  # noqa: E402
from MRISuperResLib.imaging.volume_io import read_volume  # noqa: E402
from MRISuperResLib.processing.registration import MATCH_THRESHOLD  # noqa: E402
from MRISuperResLib.slicer import training as slicer_training  # noqa: E402
from MRISuperResLib.slicer.training import TrainingLogic, TrainingPair  # noqa: E402
from MRISuperResLib.slicer.training import prepare as preparing  # noqa: E402
from MRISuperResLib.slicer.volumes import add_volume_node, grid_from_node, volume_from_node  # noqa: E402
from MRISuperResLib.training.config import load_config  # noqa: E402

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
    monkeypatch.setattr(preparing, "disk_free_bytes", lambda folder: 20 * 2**20)
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
