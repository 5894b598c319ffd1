"""Enhance in a background process: the CLI's progress lines and :mod:`MRISuperResLib.slicer.enhance_process` with a real
slicer-core scene and a real child process running the shipped default model on the CPU.

Requirement under test (issue 6, item 2): Slicer never freezes; the input goes to the child through a file
written by an MRML storage node, progress comes back as lines, Cancel kills the whole process tree and leaves the
scene as it was, a failure reports the child's one-line error and adds nothing, the input node is never modified,
and a blocking mode serves scripts and tests.

Each child run pays the engine's import (torch, MONAI: seconds), so the successful run is shared by the tests
that inspect it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from helpers import manifest_default, oblique_grid, sample_smooth_function

from MRISuperResLib.cli import app as cli
from MRISuperResLib.engine import progress
from MRISuperResLib.errors import CancelledError, InputError, MRISuperResError
from MRISuperResLib.imaging.geometry import upsampled_grid
from MRISuperResLib.slicer.enhance_process import EnhanceProcess, EnhanceStatus, ProcessState, child_environment, child_error
from MRISuperResLib.imaging.volume import Volume
from MRISuperResLib.imaging.volume_io import write_volume

try:
    import slicer
    import vtk

    from MRISuperResLib.slicer.outputs import EnhanceLogic, EnhanceNodes
    from MRISuperResLib.slicer.volumes import volume_from_node
except ImportError:  # without the slicer-core wheel only the CLI and pure helper tests run
    slicer = None

needs_slicer = pytest.mark.skipif(slicer is None, reason="needs the slicer-core wheel")
posix_only = pytest.mark.skipif(os.name == "nt", reason="checks the process group with os.killpg")

#: Input shape (i, j, k) of the successful background run: small, so the run is mostly the engine's start.
SHAPE = (16, 16, 12)

#: A run of many tiles, so that it is still computing when the cancel test stops it.
SLOW_SHAPE = (32, 32, 24)
SLOW_TILE = 8

#: Safety net for a stuck child; never reached by a working run (not a speed requirement).
STUCK_S = 600.0


# ---------------------------------------------------------------------------------- CLI progress lines


@pytest.fixture()
def _restore_sigterm():
    """``cli.main`` installs a SIGTERM handler; keep the test process's own handler afterwards."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_progress_lines_round_trip() -> None:
    line = progress.format_progress_line(0.42, "super-resolving: tile 3/8")
    assert line == "MRISUPERRES_PROGRESS 0.4200 super-resolving: tile 3/8"
    assert progress.parse_progress_line(line + "\n") == (0.42, "super-resolving: tile 3/8")
    assert progress.parse_progress_line(progress.format_progress_line(1.7, "two\nlines")) == (1.0, "two lines")
    assert progress.parse_progress_line(progress.format_progress_line(-0.1, "")) == (0.0, "")


@pytest.mark.parametrize("line", ["", "{", '  "model": "x",', "MRISUPERRES_PROGRESS", "MRISUPERRES_PROGRESS x stage",
                                  "MRISUPERRES_PROGRESS nan stage", "MRISUPERRES_PROGRESS 1.5 stage",
                                  "mrisuperres: error: MRISUPERRES_PROGRESS 0.5 x", "MRISUPERRES_PROGRESSION 0.5 x"])
def test_other_lines_are_not_progress(line: str) -> None:
    assert progress.parse_progress_line(line) is None


def write_smooth_input(path: Path, shape: tuple[int, int, int] = (12, 14, 10)) -> Path:
    grid = oblique_grid(shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_volume(Volume(sample_smooth_function(grid).astype(np.float32), grid), path)


def split_stdout(stdout: str) -> tuple[list[tuple[float, str]], list[str]]:
    """``--progress-lines`` updates and the other stdout lines."""
    updates, others = [], []
    for line in stdout.splitlines():
        update = progress.parse_progress_line(line)
        updates.append(update) if update is not None else others.append(line)
    return updates, others


@pytest.mark.usefixtures("_restore_sigterm")
def test_enhance_progress_lines_with_json(tmp_path: Path, tiny_model: Path, capsys) -> None:
    source = write_smooth_input(tmp_path / "t1.nii.gz")
    # As the panel's background run does: the scale given, so stderr holds nothing but errors and warnings.
    code = cli.main(["enhance", str(source), str(tmp_path / "sr.nrrd"), "--model", str(tiny_model), "--scale", "2",
                     "--threads", "1", "--device", "cpu", "--tile", "6", "--progress-lines", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    updates, others = split_stdout(out)
    fractions = [fraction for fraction, _ in updates]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert updates[0][1] == "loading the engine" and updates[-1][1] == "done"
    assert any(stage.startswith("super-resolving: tile 2/") for _, stage in updates)
    assert json.loads("\n".join(others))["output_shape"] == [24, 28, 20]
    assert "%|" not in err and err == ""


@pytest.mark.usefixtures("_restore_sigterm")
def test_batch_progress_lines_cover_the_whole_batch(tmp_path: Path, tiny_model: Path, capsys) -> None:
    for name in ("a", "b"):
        write_smooth_input(tmp_path / "in" / f"{name}.nrrd")
    code = cli.main(["enhance", str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(tiny_model),
                     "--threads", "1", "--device", "cpu", "--progress-lines", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    updates, others = split_stdout(out)
    fractions = [fraction for fraction, _ in updates]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert (0.5, "a.nrrd: done") in updates and (1.0, "b.nrrd: done") in updates
    assert len(others) == 2 and all(" -> " in line for line in others)


# ------------------------------------------------------------------------------- the background process


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def node_ids(scene) -> list[str]:
    return [scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes())]


class LoadedScene:
    """A scene holding one volume loaded the way Slicer loads a file (so it has its own storage node and is not
    modified since read), and a snapshot of everything about it that a run must not change."""

    def __init__(self, folder: Path, shape: tuple[int, int, int], name: str = "T1") -> None:
        path = write_smooth_input(folder / f"{name}.nrrd", shape)
        self.scene = slicer.vtkMRMLScene()
        volumes_logic = slicer.vtkSlicerVolumesLogic()
        volumes_logic.SetMRMLScene(self.scene)
        self.input = volumes_logic.AddArchetypeScalarVolume(str(path), name, 0, None)
        self.logic = EnhanceLogic(self.scene)
        self.before = self.snapshot()
        assert not self.before["modified_since_read"] and self.before["file_name"] == str(path)

    def snapshot(self) -> dict:
        storage = self.input.GetStorageNode()
        return {
            "array": slicer.util.arrayFromVolume(self.input).copy(),
            "ijk_to_ras": ijk_to_ras(self.input),
            "mtime": self.input.GetMTime(),
            "image_mtime": self.input.GetImageData().GetMTime(),
            "modified_since_read": self.input.GetModifiedSinceRead(),
            "storage_id": storage.GetID(),
            "file_name": storage.GetFileName(),
            "storage_nodes": self.scene.GetNumberOfNodesByClass("vtkMRMLStorageNode"),
            "node_ids": node_ids(self.scene),
        }

    def assert_input_unchanged(self) -> None:
        now = self.snapshot()
        assert np.array_equal(now.pop("array"), self.before["array"])
        assert np.array_equal(now.pop("ijk_to_ras"), self.before["ijk_to_ras"])
        assert now.pop("node_ids")[: len(self.before["node_ids"])] == self.before["node_ids"]
        assert now == {key: value for key, value in self.before.items() if key in now}

    def assert_scene_unchanged(self) -> None:
        self.assert_input_unchanged()
        assert node_ids(self.scene) == self.before["node_ids"]


def poll_until(process: EnhanceProcess, condition: Callable[[EnhanceStatus], bool]) -> list[EnhanceStatus]:
    """Poll every 20 ms until ``condition`` holds or the run ends; every status seen, in order."""
    statuses = []
    deadline = time.monotonic() + STUCK_S
    while True:
        statuses.append(process.poll())
        if condition(statuses[-1]) or statuses[-1].done:
            return statuses
        assert time.monotonic() < deadline, f"the run is stuck: {statuses[-1]}"
        time.sleep(0.02)


def assert_process_tree_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


@dataclass
class FinishedRun:
    loaded: LoadedScene
    process: EnhanceProcess
    statuses: list[EnhanceStatus]
    folder_during_run: Path
    nodes: EnhanceNodes
    temp_root: Path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    """One background run, polled as the module's widget does, with the flip-ensemble uncertainty map."""
    root = tmp_path_factory.mktemp("background")
    loaded = LoadedScene(root / "data", SHAPE)
    temp_root = root / "temp"
    temp_root.mkdir()
    process = EnhanceProcess(loaded.logic, loaded.input, "default", 2, "cpu", threads=1, uncertainty=True,
                             temp_root=temp_root)
    process.start()
    folder = process.temp_folder
    assert folder is not None and (folder / "input.nrrd").is_file()
    statuses = poll_until(process, lambda status: False)
    nodes = process.finish()
    return FinishedRun(loaded, process, statuses, folder, nodes, temp_root)


@needs_slicer
def test_background_run_adds_outputs_on_the_input_grid(finished_run: FinishedRun) -> None:
    nodes, loaded = finished_run.nodes, finished_run.loaded
    assert [node.GetName() for node in (nodes.sr, nodes.baseline, nodes.difference, nodes.consistency,
                                        nodes.uncertainty)] == [
        "T1_SR_x2", "T1_baseline_x2", "T1_difference_x2", "T1_consistency_x2", "T1_uncertainty_x2"]
    fine = upsampled_grid(volume_from_node(loaded.input).grid, (2.0, 2.0, 2.0))
    for node in (nodes.sr, nodes.baseline, nodes.difference, nodes.uncertainty):
        np.testing.assert_allclose(ijk_to_ras(node), fine.ijk_to_ras(), rtol=0, atol=1e-9)
        assert volume_from_node(node).shape == fine.shape
    np.testing.assert_allclose(ijk_to_ras(nodes.consistency), ijk_to_ras(loaded.input), rtol=0, atol=1e-9)
    assert nodes.sr.GetDisplayNode() is not None
    assert nodes.difference.GetDisplayNode().GetColorNode().GetName() == "DivergingBlueRed"


@needs_slicer
def test_background_run_gives_the_in_process_result(finished_run: FinishedRun, single_thread) -> None:
    loaded = finished_run.loaded
    scene = slicer.vtkMRMLScene()
    copy = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T1")
    copy.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras(loaded.input)))
    slicer.util.updateVolumeFromArray(copy, slicer.util.arrayFromVolume(loaded.input))
    in_process = EnhanceLogic(scene).enhance(copy, "default", 2, "cpu", uncertainty=True)
    for role in ("sr", "baseline", "difference", "consistency", "uncertainty"):
        background = slicer.util.arrayFromVolume(getattr(finished_run.nodes, role))
        expected = slicer.util.arrayFromVolume(getattr(in_process, role))
        np.testing.assert_allclose(background, expected, rtol=1e-5, atol=1e-4, err_msg=role)


@needs_slicer
def test_progress_rises_to_one_while_the_caller_polls(finished_run: FinishedRun) -> None:
    statuses = finished_run.statuses
    fractions = [status.fraction for status in statuses]
    assert fractions == sorted(fractions) and fractions[0] < 0.5 and fractions[-1] == 1.0
    assert [status.state for status in statuses[:-1]] == [ProcessState.RUNNING] * (len(statuses) - 1)
    assert statuses[-1].state is ProcessState.FINISHED and statuses[-1].done and statuses[-1].error == ""
    stages = [status.stage for status in statuses]
    assert "loading the engine" in stages and "done" == stages[-1]
    assert any(stage.startswith("super-resolving") and "(flip " in stage for stage in stages)
    elapsed = [status.elapsed_s for status in statuses]
    assert elapsed == sorted(elapsed) and elapsed[-1] > 0


@needs_slicer
def test_provenance_and_summary_come_back_from_the_child(finished_run: FinishedRun) -> None:
    nodes = finished_run.nodes
    summary = nodes.summary
    assert summary["input"] == "T1" and summary["model"] == manifest_default((2.0, 2.0, 2.0))
    assert summary["device"].startswith("cpu") and summary["scale"] == "2"
    assert summary["output_shape"] == [2 * n for n in SHAPE]
    assert summary["wall_time_s"] >= summary["timings_s"]["total"] > 0
    assert "outputs" not in summary and nodes.warnings == summary["warnings"]
    for node, role in [(nodes.sr, "super-resolved"), (nodes.baseline, "baseline"), (nodes.difference, "difference"),
                       (nodes.consistency, "consistency"), (nodes.uncertainty, "uncertainty")]:
        assert node.GetAttribute("MRISuperRes.role") == role
        assert node.GetAttribute("MRISuperRes.source") == "T1"
        assert node.GetAttribute("MRISuperRes.model") == manifest_default((2.0, 2.0, 2.0))
        assert "not acquired" in node.GetDescription()
        assert not [name for name in node.GetAttributeNames() if not name.startswith("MRISuperRes.")]
    assert float(nodes.sr.GetAttribute("MRISuperRes.consistency_nrmse")) == pytest.approx(
        summary["consistency_nrmse"], rel=1e-5)


@needs_slicer
@posix_only
def test_a_finished_run_leaves_the_input_no_files_and_no_process(finished_run: FinishedRun) -> None:
    finished_run.loaded.assert_input_unchanged()
    assert finished_run.process.temp_folder is None and not finished_run.folder_during_run.exists()
    assert list(finished_run.temp_root.iterdir()) == []
    assert_process_tree_gone(finished_run.process.pid)
    assert finished_run.process.finish() is finished_run.nodes
    assert finished_run.process.cancel().state is ProcessState.FINISHED


@needs_slicer
def test_a_bad_model_fails_with_the_child_error_and_adds_nothing(tmp_path: Path) -> None:
    loaded = LoadedScene(tmp_path / "data", SHAPE)
    process = EnhanceProcess(loaded.logic, loaded.input, "no-such-model", 2, "cpu", threads=1, temp_root=tmp_path)
    with pytest.raises(MRISuperResError) as raised:
        process.run_blocking()
    message = str(raised.value)
    assert message.startswith("unknown model 'no-such-model'") and "\n" not in message
    status = process.poll()
    assert status.state is ProcessState.FAILED and status.error == message and status.done
    loaded.assert_scene_unchanged()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]
    with pytest.raises(MRISuperResError, match="unknown model"):
        process.finish()


@needs_slicer
@posix_only
def test_cancel_right_after_start_kills_the_child_and_adds_nothing(tmp_path: Path) -> None:
    loaded = LoadedScene(tmp_path / "data", SHAPE)
    process = EnhanceProcess(loaded.logic, loaded.input, device="cpu", threads=1, temp_root=tmp_path)
    process.start()
    status = process.cancel()
    assert status.state is ProcessState.CANCELLED and status.done
    assert_process_tree_gone(process.pid)
    assert process.poll().state is ProcessState.CANCELLED
    loaded.assert_scene_unchanged()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]
    with pytest.raises(CancelledError):
        process.finish()


@needs_slicer
@posix_only
def test_cancel_while_computing_kills_the_child_and_adds_nothing(tmp_path: Path) -> None:
    loaded = LoadedScene(tmp_path / "data", SLOW_SHAPE)
    process = EnhanceProcess(loaded.logic, loaded.input, device="cpu", threads=1, tile=SLOW_TILE, temp_root=tmp_path)
    process.start()
    statuses = poll_until(process, lambda status: status.stage.startswith("super-resolving"))
    assert statuses[-1].state is ProcessState.RUNNING and 0 < statuses[-1].fraction < 0.9, statuses[-1]
    status = process.cancel()
    assert status.state is ProcessState.CANCELLED and status.fraction == statuses[-1].fraction
    assert_process_tree_gone(process.pid)
    loaded.assert_scene_unchanged()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]


@needs_slicer
def test_start_refuses_bad_nodes_before_launching_anything(tmp_path: Path) -> None:
    loaded = LoadedScene(tmp_path / "data", SHAPE)
    reuse_input = EnhanceProcess(loaded.logic, loaded.input, outputs=EnhanceNodes(difference=loaded.input),
                                 temp_root=tmp_path)
    with pytest.raises(ValueError, match="is the input"):
        reuse_input.start()
    empty = loaded.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="no voxels"):
        EnhanceProcess(loaded.logic, empty, temp_root=tmp_path).start()
    other_scene = LoadedScene(tmp_path / "other", SHAPE, "T2")
    with pytest.raises(ValueError, match="not in this logic's scene"):
        EnhanceProcess(loaded.logic, other_scene.input, temp_root=tmp_path).start()
    assert reuse_input.pid is None and reuse_input.poll().state is ProcessState.IDLE
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "other"]
    loaded.assert_input_unchanged()


@needs_slicer
def test_command_and_environment_for_the_child(tmp_path: Path, monkeypatch) -> None:
    loaded = LoadedScene(tmp_path / "data", SHAPE)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.safetensors").write_bytes(b"")
    process = EnhanceProcess(loaded.logic, loaded.input, "mine.safetensors", "1,1,4", "cuda:1", tile=32, overlap=0.25,
                             mask_background=True, python="/opt/Slicer/bin/PythonSlicer")
    command = process.command()

    def value(flag: str, line: list[str] = command) -> str:
        return line[line.index(flag) + 1]

    assert command[:4] == ["/opt/Slicer/bin/PythonSlicer", "-m", "MRISuperResLib.cli", "enhance"]
    assert value("--model") == str(tmp_path / "mine.safetensors")
    assert [value(flag) for flag in ("--scale", "--device", "--tile", "--overlap")] == ["1,1,4", "cuda:1", "32", "0.25"]
    assert {"--json", "--progress-lines", "--no-sidecar", "--mask-background"} <= set(command)
    assert "--uncertainty" not in command and "--threads" not in command
    assert value("--model", EnhanceProcess(loaded.logic, loaded.input, "default").command()) == "default"

    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    env = child_environment({"CUDA_VISIBLE_DEVICES": "1"})
    library_parent = Path(__file__).resolve().parents[2] / "MRISuperRes"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(library_parent), "/somewhere/else"]
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["PYTHONIOENCODING"] == "utf-8"
    with pytest.raises(TypeError, match="name or file path"):
        EnhanceProcess(loaded.logic, loaded.input, object())


def test_child_error_is_the_last_error_line() -> None:
    stderr = ["mrisuperres: warning: something", "mrisuperres: error: input x does not exist; check the path"]
    assert child_error(stderr, 1) == "input x does not exist; check the path"
    assert child_error(["Traceback (most recent call last):", "ImportError: no torch", ""], 1) == \
        "ImportError: no torch"
    assert child_error([], 3) == "the engine process stopped with exit status 3"
    assert "signal 9" in child_error([], -9)


def test_the_command_comes_from_the_options_and_the_output_table() -> None:
    from MRISuperResLib.engine.options import EnhanceOptions

    options = EnhanceOptions(device="cpu", tile=16, flip_ensemble=True)
    command = EnhanceProcess(None, None, "default", 2, options=options, maps=["uncertainty"], python="py").command()
    files = {flag: Path(command[command.index(flag) + 1]).name
             for flag in ("--baseline", "--difference", "--consistency", "--uncertainty")}
    assert files == {"--baseline": "baseline.nrrd", "--difference": "difference.nrrd",
                     "--consistency": "consistency.nrrd", "--uncertainty": "uncertainty.nrrd"}
    assert Path(command[5]).name == "sr.nrrd" and "--flip-ensemble" in command
    assert command[command.index("--tile") + 1] == "16" and command[command.index("--device") + 1] == "cpu"
    # Keyword arguments named like an option or an optional map do the same; the device argument wins.
    same = EnhanceProcess(None, None, "default", 2, "cpu", tile=16, flip_ensemble=True, uncertainty=True,
                          python="py").command()
    assert same == command
    with pytest.raises(TypeError, match="not an enhance option nor an optional output map"):
        EnhanceProcess(None, None, tiles=8)


@needs_slicer
def test_adapt_to_this_scan_runs_in_the_background_and_says_so_on_every_output(tmp_path: Path) -> None:
    # The panel's "Adapt to this scan" checkbox: the child fine-tunes the thick-slice model first, then enhances.
    loaded = LoadedScene(tmp_path / "data", (40, 40, 10))
    process = EnhanceProcess(loaded.logic, loaded.input, "default", (1, 1, 4), "cpu", threads=1, adapt_seconds=6.0,
                             temp_root=tmp_path)
    assert process.command()[-2:] == ["--adapt", "6.0"]
    process.start()
    statuses = poll_until(process, lambda status: False)
    nodes = process.finish()
    assert any(status.stage.startswith("adapting") for status in statuses), {s.stage for s in statuses}
    adaptation = nodes.summary["adaptation"]
    # Steps depend on the machine's speed; the budget and the never-worse rule do not.
    assert adaptation["settings"]["seconds"] == 6.0
    assert adaptation["held_back_after"] <= adaptation["held_back_before"]
    assert "adapted to this input" in nodes.sr.GetAttribute("MRISuperRes.adaptation")
    assert nodes.baseline.GetAttribute("MRISuperRes.adaptation") is None  # B-spline is not the network's
    loaded.assert_input_unchanged()


def test_adapting_needs_a_positive_budget_and_thick_slices() -> None:
    from MRISuperResLib.slicer.panel import adapt_problem

    with pytest.raises(ValueError, match="positive"):
        EnhanceProcess(None, None, "default", (1, 1, 4), adapt_seconds=0)
    assert adapt_problem((1.0, 1.0, 4.0)) is None and adapt_problem((3.0, 1.0, 1.0)) is None
    for scale in [(2.0, 2.0, 2.0), (1.0, 2.0, 4.0), (1.0, 1.0, 1.0)]:
        assert "thick slices along one axis" in adapt_problem(scale)
