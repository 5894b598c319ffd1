"""Watch a training run: its ``log.csv`` into tables and charts, and where it stands (no Qt).

:class:`TrainingCurves` reads the trainer's ``log.csv`` as it grows into two table nodes (loss; validation PSNR of
the model and of the B-spline baseline) plotted by plot series in two plot chart nodes; :func:`fill_progress`
turns the rows into step, ETA and best validation PSNR of a :class:`TrainingStatus`, and :func:`set_end_state`
says how a process that ended did (finished, stopped with its state saved, or failed with its last error line).
:func:`show_training_layout` shows the charts beside the Red slice view.
"""

from __future__ import annotations

import csv
import math
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from ...imaging.provenance import KEY_PREFIX
from ..runner import EXIT_INTERRUPTED, last_error_line
from .job import TrainingJob

#: Layout with the Red slice view beside the two training plots (loss above validation PSNR).
TRAINING_LAYOUT_ID = 5601
LOSS_VIEW_TAG = "MRISuperResTrainingLoss"
PSNR_VIEW_TAG = "MRISuperResTrainingPSNR"
TRAINING_LAYOUT_XML = f"""<layout type="horizontal" split="true">
 <item><view class="vtkMRMLSliceNode" singletontag="Red">
  <property name="orientation" action="default">Axial</property>
  <property name="viewlabel" action="default">R</property>
  <property name="viewcolor" action="default">#F34A33</property>
 </view></item>
 <item><layout type="vertical" split="true">
  <item><view class="vtkMRMLPlotViewNode" singletontag="{LOSS_VIEW_TAG}">
   <property name="viewlabel" action="default">L</property>
  </view></item>
  <item><view class="vtkMRMLPlotViewNode" singletontag="{PSNR_VIEW_TAG}">
   <property name="viewlabel" action="default">V</property>
  </view></item>
 </layout></item>
</layout>"""

#: The progress fields a poll that found no new log rows carries over from the previous one.
PROGRESS_FIELDS = ("step", "elapsed_s", "eta_s", "loss", "best_psnr", "best_baseline_psnr", "best_step")


@dataclass
class TrainingStatus:
    """What :meth:`TrainingLogic.poll` found.

    Attributes:
        state: ``"idle"`` (no job), ``"prepared"``, ``"running"``, ``"stopping"``, ``"stopped"``,
            ``"finished"`` or ``"failed"``.
        step, total_steps: optimisation steps done (as last logged) and planned.
        elapsed_s: training time of the steps done in the current process (seconds).
        eta_s: estimated seconds to the last step (``None`` until two log rows of this process exist).
        loss: the last logged training loss.
        best_psnr, best_baseline_psnr, best_step: the best validation PSNR (dB) so far, the B-spline baseline's on
            the same subjects, and its step (``None`` before the first validation).
        model_path: the published model file, once there is one.
        model_updated: this poll published a new version of the model.
        message: one line for the user (the last error line when failed).
        returncode: the training process's exit status once it ended (negative: killed by that signal).
    """

    state: str
    step: int = 0
    total_steps: int = 0
    elapsed_s: float = 0.0
    eta_s: float | None = None
    loss: float | None = None
    best_psnr: float | None = None
    best_baseline_psnr: float | None = None
    best_step: int | None = None
    model_path: Path | None = None
    model_updated: bool = False
    message: str = ""
    returncode: int | None = None

    @property
    def running(self) -> bool:
        return self.state in ("running", "stopping")

    @property
    def can_resume(self) -> bool:
        return self.state in ("stopped", "failed")

    @property
    def progress(self) -> float:
        """Fraction of the steps done, 0..1."""
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0


@dataclass
class TrainingNodes:
    """The scene's view of a run's curves: tables filled from ``log.csv`` and the charts plotting them."""

    loss_table: Any
    validation_table: Any
    loss_chart: Any
    psnr_chart: Any
    series: dict[str, Any] = field(default_factory=dict)


class TrainingCurves:
    """A run's curves in a scene: :meth:`update` reads ``log.csv`` into the tables of :meth:`ensure_nodes`.

    Args:
        scene: the scene receiving the tables and charts (named after the model).
        job: the run whose ``log.csv`` is read.
    """

    def __init__(self, scene: Any, job: TrainingJob) -> None:
        self.scene = scene
        self.job = job
        self.nodes: TrainingNodes | None = None
        self._log_mtime: int | None = None

    def update(self) -> list[dict[str, float]] | None:
        """New ``log.csv`` rows into the tables (creating tables and charts on first use); ``None`` when the file
        did not change since the last call (one ``stat``), or holds no rows."""
        path = self.job.run_folder / "log.csv"
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return None
        if mtime == self._log_mtime:
            return None
        rows = read_log(path)
        if not rows:
            return None
        self._log_mtime = mtime
        nodes = self.ensure_nodes()
        loss = [r for r in rows if "loss" in r]
        validation = [r for r in rows if "val_psnr" in r]
        _fill_table(nodes.loss_table, {"step": [r["step"] for r in loss], "loss": [r["loss"] for r in loss]})
        _fill_table(nodes.validation_table, {
            "step": [r["step"] for r in validation],
            "val_psnr": [r["val_psnr"] for r in validation],
            "baseline_psnr": [r.get("baseline_psnr", math.nan) for r in validation],
            "val_ssim": [r.get("val_ssim", math.nan) for r in validation],
        })
        return rows

    def ensure_nodes(self) -> TrainingNodes:
        """The run's tables and charts, created in the scene on first use (and again when one was removed)."""
        if self.nodes is not None and all(self.scene.IsNodePresent(n) for n in
                                          (self.nodes.loss_table, self.nodes.validation_table,
                                           self.nodes.loss_chart, self.nodes.psnr_chart)):
            return self.nodes
        name = self.job.name
        loss_table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} training loss")
        validation_table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} validation")
        _fill_table(loss_table, {"step": [], "loss": []})
        _fill_table(validation_table, {"step": [], "val_psnr": [], "baseline_psnr": [], "val_ssim": []})
        loss_chart = self._chart(f"{name} loss", "training loss")
        psnr_chart = self._chart(f"{name} validation PSNR", "PSNR (dB)")
        series = {
            "loss": self._series(f"{name} loss", loss_table, "loss", loss_chart, (0.2, 0.4, 0.8), solid=True),
            "val_psnr": self._series(f"{name} validation PSNR", validation_table, "val_psnr", psnr_chart,
                                     (0.85, 0.33, 0.1), solid=True),
            "baseline_psnr": self._series(f"{name} B-spline PSNR", validation_table, "baseline_psnr", psnr_chart,
                                          (0.5, 0.5, 0.5), solid=False),
        }
        for node in (loss_table, validation_table, loss_chart, psnr_chart, *series.values()):
            node.SetAttribute(f"{KEY_PREFIX}trainingRun", str(self.job.run_folder))
        self.nodes = TrainingNodes(loss_table, validation_table, loss_chart, psnr_chart, series)
        return self.nodes

    def _chart(self, title: str, y_title: str) -> Any:
        chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", title)
        chart.SetTitle(title)
        chart.SetXAxisTitle("step")
        chart.SetYAxisTitle(y_title)
        return chart

    def _series(self, name: str, table: Any, column: str, chart: Any, color: tuple[float, float, float],
                solid: bool) -> Any:
        series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name)
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("step")
        series.SetYColumnName(column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone if solid
                              else slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
        series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleSolid if solid
                            else slicer.vtkMRMLPlotSeriesNode.LineStyleDash)
        series.SetColor(*color)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
        return series


def fill_progress(status: TrainingStatus, rows: list[dict[str, float]]) -> None:
    """Step, loss, elapsed time, ETA and best validation PSNR of ``status`` from the log rows (at least one)."""
    last = rows[-1]
    status.step = int(last["step"])
    status.loss = next((r["loss"] for r in reversed(rows) if "loss" in r), None)
    # time_s restarts at 0 in each process (resume): rate from the rows of the current process only.
    session = [rows[-1]]
    for row in reversed(rows[:-1]):
        if row.get("time_s", 0.0) > session[0].get("time_s", 0.0):
            break
        session.insert(0, row)
    status.elapsed_s = float(last.get("time_s", 0.0))
    if len(session) >= 2 and session[-1]["step"] > session[0]["step"]:
        rate = (session[-1]["time_s"] - session[0]["time_s"]) / (session[-1]["step"] - session[0]["step"])
        status.eta_s = max(0.0, (status.total_steps - status.step) * rate)
    validation = [r for r in rows if "val_psnr" in r]
    if validation:
        best = max(validation, key=lambda r: r["val_psnr"])
        status.best_psnr, status.best_step = best["val_psnr"], int(best["step"])
        status.best_baseline_psnr = best.get("baseline_psnr")


def carry_progress(status: TrainingStatus, last: TrainingStatus) -> None:
    """The progress of the previous poll (:data:`PROGRESS_FIELDS`), when the log did not change."""
    for name in PROGRESS_FIELDS:
        setattr(status, name, getattr(last, name))


def set_end_state(status: TrainingStatus, job: TrainingJob, returncode: int, stop_requested: bool) -> None:
    """State and message of a run whose process ended with ``returncode``: finished (status 0), stopped (status
    130, or any end after Stop was asked) or failed (with the signal or exit status and the log's last error line).
    """
    if returncode == 0:
        status.state = "finished"
        status.message = "training finished" + (
            "" if (job.run_folder / f"{job.name}.safetensors").is_file() else " without a validated model")
    elif returncode == EXIT_INTERRUPTED or stop_requested:
        status.state = "stopped"
        status.message = (f"stopped at step {status.step}; the state is saved: resume to continue"
                          if (job.run_folder / "state.pt").exists() else "stopped before the first step")
    else:
        status.state = "failed"
        if returncode < 0:
            name = signal.Signals(-returncode).name if -returncode in signal.Signals._value2member_map_ else "?"
            reason = f"the training process was killed (signal {-returncode}, {name})"
        else:
            reason = f"the training process failed (exit status {returncode})"
        line = last_error_line(job.log_path)
        status.message = f"{reason}: {line}" if line else reason
        status.message += "; resume to continue from the last saved step"


def show_training_layout(scene: Any, nodes: TrainingNodes) -> bool:
    """Switch the scene's layout to :data:`TRAINING_LAYOUT_XML` (Red slice view, loss and PSNR plots) and put
    the charts into its plot views (those that exist: desktop Slicer creates them with the layout).

    Returns:
        ``False`` when the scene has no layout node (a bare scene without an application).
    """
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout is None:
        return False
    if not layout.IsLayoutDescription(TRAINING_LAYOUT_ID):
        layout.AddLayoutDescription(TRAINING_LAYOUT_ID, TRAINING_LAYOUT_XML)
    layout.SetViewArrangement(TRAINING_LAYOUT_ID)
    for tag, chart in ((LOSS_VIEW_TAG, nodes.loss_chart), (PSNR_VIEW_TAG, nodes.psnr_chart)):
        view = scene.GetSingletonNode(tag, "vtkMRMLPlotViewNode")
        if view is not None:
            view.SetPlotChartNodeID(chart.GetID())
    return True


def format_duration(seconds: float | None) -> str:
    """``1 h 02 min``, ``4 min 05 s``, ``12 s``; ``"-"`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def read_log(path: Path) -> list[dict[str, float]]:
    """The trainer's ``log.csv`` rows as numbers (empty cells dropped); ``[]`` when absent or unreadable (the
    trainer replaces it atomically, so a read never sees half a file)."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, csv.Error):
        return []
    parsed = []
    for row in rows:
        values = {}
        for key, text in row.items():
            try:
                values[key] = float(text)
            except (TypeError, ValueError):
                continue
        if "step" in values:
            parsed.append(values)
    return parsed


def _fill_table(table: Any, columns: dict[str, list[float]]) -> None:
    arrays = [np.asarray(values, dtype=np.float64) for values in columns.values()]
    slicer.util.updateTableFromArray(table, arrays, list(columns))
