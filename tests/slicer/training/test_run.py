"""Training runs of the Slicer training logic (MRISuperResLib.slicer.training.logic, .monitor, .publish): real
background processes (``python -m MRISuperResLib.cli train``) on tiny configurations, a few steps of an 8-channel
EDSR on 4 mm brains, one thread; curves into tables and charts, stop, crash, resume, publishing."""

from __future__ import annotations

import hashlib
import os
import re
import signal
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer")

from helpers import brain_scene, snapshot, tiny_settings  # noqa: E402

from MRISuperResLib.engine import model_zoo  # noqa: E402
from MRISuperResLib.imaging.volume import Volume  # noqa: E402
from MRISuperResLib.slicer import training as slicer_training  # noqa: E402
from MRISuperResLib.slicer.outputs import EnhanceLogic  # noqa: E402
from MRISuperResLib.slicer.training import TrainingLogic, TrainingPair, show_training_layout  # noqa: E402
from MRISuperResLib.training.config import load_config  # noqa: E402


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
