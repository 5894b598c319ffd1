"""Train a model on volume nodes of a scene: the MRML side of the MRISuperResTraining module (no Qt).

Public entry::

    from MRISuperResLib.slicer.training import TrainingLogic, TrainingPair, TrainingSettings

    logic = TrainingLogic(scene)
    pairs = [TrainingPair(t1_node), TrainingPair(t1b_node, low=t2_thick_node), TrainingPair(t1c_node)]
    logic.register_pair(pairs[1])             # optional: shows the aligned low-res over the high-res, metric
    job = logic.prepare(pairs, TrainingSettings(name="my-x2", output_folder=folder, steps=2000))
    logic.start(job)                          # background process; returns at once
    status = logic.poll()                     # call every second or so (the widget's QTimer does)
    logic.stop() / logic.resume()             # the state is saved on stop; resume continues exactly
    status = logic.wait()                     # blocking mode for scripts and tests

What happens:

* **Pairs to files.** :meth:`TrainingLogic.prepare` writes every pair's volumes as uncompressed NRRD through
  Slicer's C++ writer into ``<output_folder>/runs/<name>/data/`` (the user's nodes are only read; a fraction of a
  second per volume on the GUI thread), and a training config ``train.yaml`` beside them. A row with a
  low-resolution node is a *real pair*: the low-resolution scan is registered onto the high-resolution one
  (SimpleITK rigid + affine by Mattes mutual information) by the training process, in the background; a pair
  aligned beforehand with :meth:`TrainingLogic.register_pair` (SimpleITK, or BRAINSFit when the desktop module
  hands one in) is written aligned, on its own voxel grid placed in the high-resolution frame.
  A row without one is *simulated*: the trainer degrades the high-resolution scan itself (k-space truncation,
  box or Gaussian slice profile, with noise). Validation subjects are validated on inputs simulated from their
  high-resolution volume (the trainer's validation), so a real pair held out for validation contributes its
  high-resolution scan only.
* **Training.** :meth:`TrainingLogic.start` runs ``mrisuperres train --config train.yaml`` through the modules'
  background-process runner (:class:`~.slicer_runner.BackgroundProcess`: own process group, no console window;
  its output in ``process.log``); Slicer is never blocked. Stop asks the trainer itself (not Slicer's
  ``PythonSlicer`` launcher in between) to stop: it saves its state after the current step and keeps
  ``best.safetensors``, and the run counts as running until that trainer is gone; resume passes ``--resume``.
* **Progress.** :meth:`TrainingLogic.poll` reads the trainer's ``log.csv`` as it grows into two table nodes
  (loss; validation PSNR of the model and of the B-spline baseline) plotted by plot series in two plot chart
  nodes, and reports step, ETA and the best validation PSNR (:class:`TrainingStatus`).
* **Publishing.** Each time the best checkpoint improves, and when training ends, the model is copied to
  ``<output_folder>/<name>.safetensors`` with a Markdown card, and ``output_folder`` is registered as a user
  model folder (:func:`~.model_zoo.register_model_folder`): the model is then listed by
  :func:`~.model_zoo.list_models` and enhances by name (``EnhanceLogic(scene).enhance(node, model=name)``).

Problems are refused before anything is written, each with an :class:`~.errors.MRISuperResError` that says what
to do: fewer than two subjects (one to train on, one to validate), a removed node, too little free disk space.
A training process that dies is noticed by :meth:`TrainingLogic.poll` (state ``"failed"`` with its last error
line, e.g. a real pair whose registration metric says the scans do not show the same anatomy) and can be
resumed.

Nothing here uses ``slicer.mrmlScene``, ``slicer.app`` or Qt.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import slicer
import vtk

from ..engine import model_zoo
from ..errors import InputError, MRISuperResError, OutputError
from ..imaging.provenance import KEY_PREFIX
from .outputs import copy_display, place_beside
from .runner import LIBRARY_PARENT, BackgroundProcess, default_python  # noqa: F401  (re-exported)
from .volumes import add_volume_node, update_node_from_volume, volume_from_node
from ..imaging.volume import LPS_TO_RAS, Volume

#: Subfolder of the output folder holding one folder per training run.
RUNS_FOLDER = "runs"

#: The generated training config, in the run folder.
CONFIG_FILE = "train.yaml"

#: The training process's standard output and error, in the run folder (appended to on resume).
PROCESS_LOG = "process.log"

#: Model names: a letter or digit, then letters, digits, ``.``, ``_`` or ``-`` (they become file names).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

#: Free space kept beyond the estimated size of a run, so that the disk is never filled to the last byte.
FREE_SPACE_MARGIN = 100 * 2**20

#: Copies of the weights a run keeps on disk at once: network, two Adam moments (state.pt), its temporary copy
#: while written, best, final and published models.
WEIGHT_COPIES = 7

#: Exit status of an interrupted ``mrisuperres`` command (state saved).
EXIT_INTERRUPTED = 130

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


# ------------------------------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class Preset:
    """A model family in one size, with training settings that suit it.

    Attributes:
        family: a registry family (``MRISuperResLib.models.FAMILIES``).
        size: ``"small"`` (fast enough for the CPU) or ``"seed"`` (the configuration of the user's documents,
            for a GPU).
        patch_size: low-resolution patch size ``(i, j, k)`` in voxels.
        batch_size: patches per step.
        learning_rate: Adam's initial learning rate.
    """

    family: str
    size: str
    patch_size: tuple[int, int, int]
    batch_size: int
    learning_rate: float

    def model_config(self, scale: Sequence[int]) -> dict[str, Any]:
        """The family's constructor arguments in this size at ``scale``."""
        from .. import models

        builder = models.small_config if self.size == "small" else models.seed_config
        return builder(self.family, list(scale))

    def description(self) -> str:
        from .. import models

        kind = "small, for the CPU" if self.size == "small" else "the source document's size, for a GPU"
        return f"{models.family_spec(self.family).description} - {kind}"


#: The presets offered in the module, by name; ``edsr3d-small`` is the default.
PRESETS: dict[str, Preset] = {
    "edsr3d-small": Preset("edsr3d", "small", (24, 24, 24), 4, 3e-4),
    "edsr3d-seed": Preset("edsr3d", "seed", (32, 32, 32), 8, 1e-4),
    "srdensenet-small": Preset("srdensenet", "small", (24, 24, 24), 4, 5e-4),
    "srdensenet-seed": Preset("srdensenet", "seed", (32, 32, 32), 8, 1e-4),
    "unet25d-small": Preset("unet25d", "small", (24, 24, 24), 2, 2e-4),
    "unet25d-seed": Preset("unet25d", "seed", (32, 32, 32), 4, 1e-4),
    "arssr-small": Preset("arssr", "small", (16, 16, 16), 2, 1e-4),
    "arssr-seed": Preset("arssr", "seed", (20, 20, 20), 8, 1e-4),
}
DEFAULT_PRESET = "edsr3d-small"

#: Forward models offered for simulated pairs (``DegradationSpec.kind``).
DEGRADATIONS = ("kspace", "box", "gaussian")


# --------------------------------------------------------------------------------------------- data types
@dataclass
class TrainingPair:
    """One row of the training table.

    Attributes:
        high: the high-resolution scan (the target): a scalar volume node of the logic's scene, or a volume file.
        low: the low-resolution scan of the same subject (node or file), or ``None`` to simulate it from ``high``.
        validation: hold this subject out for validation (when no row is marked, the last rows are held out).
        context: the subject's conditioning values (``{"age": 63, "sex": "F"}``) for a model conditioned on
            :attr:`TrainingSettings.context_variables` (seed 002); ``None`` for an unconditioned model.
    """

    high: Any
    low: Any = None
    validation: bool = False
    context: dict[str, Any] | None = None


@dataclass
class TrainingSettings:
    """What to train, and where the model goes.

    Attributes:
        name: the model's name (also its file name): letters, digits, ``.``, ``_``, ``-``; not a shipped name.
        output_folder: where ``<name>.safetensors`` (and its card) appear; runs go in ``runs/<name>/`` inside.
        preset: a key of :data:`PRESETS` (family, size and training defaults).
        model_config: the family's constructor arguments, replacing the preset's (its ``scale`` is set to
            ``scale`` for fixed-scale families).
        scale: whole per-axis factors ``(i, j, k)``, or one factor, or text (``"2"``, ``"1,1,4"``).
        degradation: forward model of simulated pairs: ``"kspace"``, ``"box"`` or ``"gaussian"``.
        noise: largest k-space noise of simulated inputs (standard deviation, fraction of the 99th percentile).
        patch_size: low-resolution patch size (voxels, ``i, j, k``); ``None``: the preset's.
        batch_size: patches per step; ``None``: the preset's.
        steps: optimisation steps in total.
        validate_every: steps between validations (validation PSNR curve, best checkpoint).
        l1, perceptual, adversarial: loss weights (0 disables a term).
        perceptual_weights: local ``.safetensors`` VGG16 weights, needed when ``perceptual > 0``.
        learning_rate: Adam's initial learning rate; ``None``: the preset's.
        validation_fraction: share of subjects held out when no row is marked for validation (at least one).
        validation_crop: validate on a central low-resolution crop of this size (``None``: whole volumes).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        threads: CPU threads of the training process (``None``: torch's default).
        seed: seed of every random choice of the run.
        log_every: steps between log rows.
        checkpoint_every: steps between resumable saves, which are also when ``log.csv`` (the curves) grows.
        description: one line stored in the model (default: says what it was trained on).
        context_variables: conditioning variables of a cross-attention model, as the training config's
            ``data.context.variables`` (``{"age": {"kind": "numeric", "offset": 50, "scale": 20}, "sex": {"kind":
            "categorical", "categories": ["F", "M"]}, "slice_position": {}}``); every pair then gives its values in
            :attr:`TrainingPair.context`. ``None``: no conditioning.
    """

    name: str = "my-model"
    output_folder: Path = field(default_factory=lambda: Path.home() / "MRISuperRes" / "models")
    preset: str = DEFAULT_PRESET
    model_config: dict[str, Any] | None = None
    scale: Any = 2
    degradation: str = "kspace"
    noise: float = 0.02
    patch_size: Sequence[int] | None = None
    batch_size: int | None = None
    steps: int = 2000
    validate_every: int = 200
    l1: float = 1.0
    perceptual: float = 0.0
    perceptual_weights: Path | None = None
    adversarial: float = 0.0
    learning_rate: float | None = None
    validation_fraction: float = 0.2
    validation_crop: Sequence[int] | None = (48, 48, 48)
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 50
    description: str = ""
    context_variables: dict[str, Any] | None = None


@dataclass
class RegistrationOutcome:
    """A real pair aligned for training.

    Attributes:
        metric: final Mattes mutual information (negative; more negative is better; above
            ``registration.MATCH_THRESHOLD`` the scans do not show the same anatomy).
        stage_metrics: the metric after each stage (``rigid``, ``affine``; empty for BRAINSFit).
        transform: SimpleITK transform mapping high-resolution LPS points to low-resolution ones (ITK convention).
        aligned: the low-resolution scan on its own voxel grid placed in the high-resolution frame (what is written
            for training).
        node: the scalar volume node showing ``aligned`` (named ``<low>_registered``).
        method: ``"simpleitk"`` or ``"brainsfit"``.
        warnings: notes for the user (e.g. the voxel-size ratio does not match the training scale).
        source_mtimes: modification times of the high- and low-resolution nodes when registered (a later change
            of either makes :meth:`TrainingLogic.prepare` register again).
    """

    metric: float
    stage_metrics: dict[str, float]
    transform: Any
    aligned: Volume
    node: Any
    method: str
    warnings: list[str] = field(default_factory=list)
    source_mtimes: tuple[int, int] = (0, 0)


@dataclass
class TrainingJob:
    """A prepared run: its files, and what it will publish.

    Attributes:
        name: the model's name.
        output_folder: where the model is published.
        run_folder: the run's files (``train.yaml``, ``data/``, ``process.log`` and the trainer's outputs).
        total_steps: ``run.steps`` of the config.
        train_subjects, validation_subjects: labels of the subjects in each set.
        warnings: notes for the user found while preparing.
    """

    name: str
    output_folder: Path
    run_folder: Path
    total_steps: int
    train_subjects: list[str] = field(default_factory=list)
    validation_subjects: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.run_folder / CONFIG_FILE

    @property
    def model_path(self) -> Path:
        """Where the model is published (listed by the model zoo)."""
        return self.output_folder / f"{self.name}.safetensors"

    @property
    def log_path(self) -> Path:
        return self.run_folder / PROCESS_LOG


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


#: Runs a BRAINSFit registration (desktop Slicer): ``(fixed_node, moving_node, transform_node)``; fills
#: ``transform_node`` with the transform that aligns the moving volume with the fixed one (its "to parent"
#: transform maps moving RAS points to fixed RAS points), or raises.
BrainsFitRunner = Callable[[Any, Any, Any], None]


# ------------------------------------------------------------------------------------------------ helpers
def disk_free_bytes(folder: Path) -> int:
    """Free bytes on the file system holding ``folder`` (or its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def parse_training_scale(scale: Any) -> tuple[int, int, int]:
    """Whole per-axis factors ``(i, j, k)`` from ``2``, ``"1,1,4"`` or ``(1, 1, 4)``.

    Raises:
        InputError: not whole factors >= 1.
    """
    from ..imaging.geometry import parse_scale
    from ..training.data import integer_scale

    try:
        parsed = parse_scale(scale)
    except ValueError as error:
        raise InputError(str(error)) from None
    return integer_scale(parsed)


def parse_patch_size(text: str | Sequence[int]) -> tuple[int, int, int]:
    """Patch size ``(i, j, k)`` in voxels from ``"24"``, ``"24,24,12"`` or a sequence.

    Raises:
        InputError: not one or three whole numbers >= 4.
    """
    values = [v for v in text.replace(" ", "").split(",") if v] if isinstance(text, str) else list(text)
    try:
        sizes = [int(v) for v in values]
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        sizes *= 3
    if len(sizes) != 3 or min(sizes) < 4:
        raise InputError(f"patch size {text!r} must be one or three whole numbers >= 4 (i, j, k), e.g. 24 or 32,32,12")
    return sizes[0], sizes[1], sizes[2]


def mutual_information(fixed: Volume, moving: Volume, transform: Any, bins: int = 50) -> float:
    """Mattes mutual information of ``moving`` seen through ``transform`` (fixed -> moving LPS) over every voxel
    of ``fixed``: the value :func:`~.training.registration.register` reports as its final metric (negative;
    more negative is a better match), for transforms found by other tools (BRAINSFit)."""
    import SimpleITK as sitk

    from ..processing.registration import WORK_UNITS
    from ..imaging.volume_io import to_sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetNumberOfWorkUnits(WORK_UNITS)
    method.SetInitialTransform(transform, inPlace=False)
    try:
        return float(method.MetricEvaluate(to_sitk(fixed, fixed.array.astype(np.float32)),
                                           to_sitk(moving, moving.array.astype(np.float32))))
    except RuntimeError:
        raise InputError("registration failed: the aligned volumes do not overlap; check the transform") from None


def transform_from_node_matrix(from_parent_ras: np.ndarray) -> Any:
    """SimpleITK affine transform (fixed -> moving LPS) from a linear transform node's "from parent" RAS matrix
    (the node aligning the moving volume with the fixed one, as BRAINSFit writes it)."""
    import SimpleITK as sitk

    lps = LPS_TO_RAS @ np.asarray(from_parent_ras, dtype=np.float64) @ LPS_TO_RAS
    return sitk.AffineTransform(tuple(lps[:3, :3].ravel()), tuple(lps[:3, 3]))


def subjects_from_folder(folder: str | os.PathLike) -> list[TrainingPair]:
    """One :class:`TrainingPair` per volume file in ``folder`` (sorted by name).

    A file with a partner of the same name in ``folder/low/`` forms a real pair (registered by the training
    process); the others are simulated.

    Raises:
        InputError: the folder does not exist or holds no volume files.
    """
    from ..imaging.volume_io import volume_extension

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"training folder {folder} does not exist; choose a folder of volume files")
    files = sorted(p for p in folder.iterdir() if p.is_file() and volume_extension(p) and not p.name.startswith("."))
    if not files:
        raise InputError(f"training folder {folder} holds no volume files (.nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd)")
    pairs = []
    for path in files:
        low = folder / "low" / path.name
        pairs.append(TrainingPair(path.resolve(), low.resolve() if low.is_file() else None))
    return pairs


def show_overlay(scene: Any, background: Any, foreground: Any, opacity: float = 0.5) -> None:
    """Show ``foreground`` over ``background`` in every slice view of ``scene`` (slice composite nodes), the
    foreground at ``opacity`` (0..1)."""
    for composite in _nodes_of_class(scene, "vtkMRMLSliceCompositeNode"):
        composite.SetBackgroundVolumeID(background.GetID() if background is not None else None)
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(float(opacity))


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


def last_error_line(path: Path, limit: int = 65536) -> str:
    """The last ``mrisuperres: error`` line of a process log, else its last non-empty line (``""`` if none)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - limit))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("mrisuperres: error")]
    return (errors or lines or [""])[-1]


def _nodes_of_class(scene: Any, class_name: str) -> list[Any]:
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))]


def _safe_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:40] or "volume"


# ----------------------------------------------------------------------------------------------- the logic
@dataclass
class _Subject:
    """A pair checked and resolved: what to write and where it goes."""

    row: int
    label: str
    high: Any
    low: Any
    validation: bool
    shape: tuple[int, int, int]
    voxel_bytes: int
    context: dict[str, Any] | None = None


class TrainingLogic:
    """Train super-resolution models on the volumes of one scene, in a background process.

    Args:
        scene: the ``vtkMRMLScene`` holding the pairs' nodes; it receives the registered volumes, the log tables
            and the charts.
        python: the interpreter running ``-m MRISuperResLib.cli train`` (default: :func:`default_python`).
        brainsfit: runs BRAINSFit (the desktop module passes one wrapping ``slicer.cli.runSync``); without it,
            ``method="brainsfit"`` is refused.

    One logic runs one training process at a time (:attr:`job`).
    """

    def __init__(self, scene: Any, python: str | None = None, brainsfit: BrainsFitRunner | None = None) -> None:
        self.scene = scene
        self.python = python or default_python()
        self.brainsfit = brainsfit
        self.registrations: dict[tuple[str, str], RegistrationOutcome] = {}
        self.job: TrainingJob | None = None
        self.nodes: TrainingNodes | None = None
        self._process: BackgroundProcess | None = None
        self._published: dict[Path, int] = {}
        self._log_mtime: int | None = None
        self._last_status = TrainingStatus("idle")

    # ---------------------------------------------------------------------------------------- registration
    def register_pair(self, pair: TrainingPair, scale: Any = 2, method: str = "simpleitk",
                      **options: Any) -> RegistrationOutcome:
        """Align a real pair's low-resolution node with its high-resolution node, and show the result.

        Adds (or updates) a node ``<low>_registered``: the low-resolution voxels placed in the high-resolution
        frame, beside the low-resolution node in the subject hierarchy; shows it over the high-resolution node in
        every slice view (foreground opacity 0.5). The pair's nodes are only read. Blocks (seconds to a minute).

        Args:
            pair: a row with a high- and a low-resolution node.
            scale: the training scale, to warn when the pair's voxel sizes do not match it.
            method: ``"simpleitk"`` (rigid then affine, Mattes mutual information) or ``"brainsfit"``.
            options: passed to :func:`~.training.registration.register` (``iterations``, ``seed`` ...).

        Raises:
            InputError: missing nodes, BRAINSFit unavailable, or a metric above the threshold: the two scans do
                not show the same anatomy (the message gives the metric); nothing is added then.
        """
        from ..processing.registration import MATCH_THRESHOLD, moving_grid_in_fixed_frame, register, resample_into

        if pair.low is None:
            raise InputError("this pair has no low-resolution volume to register: it is simulated from the "
                             "high-resolution volume")
        if isinstance(pair.high, (str, os.PathLike)) or isinstance(pair.low, (str, os.PathLike)):
            raise InputError("pairs of files are registered by the training process itself; register_pair aligns "
                             "volume nodes")
        high_node = self._check_node(pair.high, "high-resolution", None)
        low_node = self._check_node(pair.low, "low-resolution", None)
        fixed, moving = volume_from_node(high_node), volume_from_node(low_node)
        if method == "simpleitk":
            result = register(fixed, moving, threshold=None, **options)
            transform, metric, stages = result.transform, result.metric, dict(result.stage_metrics)
        elif method == "brainsfit":
            transform = self._brainsfit_transform(high_node, low_node)
            metric, stages = mutual_information(fixed, moving, transform), {}
        else:
            raise ValueError(f"method must be 'simpleitk' or 'brainsfit', got {method!r}")
        if not metric < MATCH_THRESHOLD:
            raise InputError(
                f"{low_node.GetName()} does not match {high_node.GetName()}: the registration metric (Mattes mutual "
                f"information) is {metric:.3f}, above {MATCH_THRESHOLD:.3f}; the scans do not show the same anatomy. "
                "Pair scans of the same subject and region, or simulate the low-resolution input instead")
        aligned = resample_into(moving, transform, moving_grid_in_fixed_frame(moving.grid, transform))
        attributes = {"role": "registered", "fixed": high_node.GetName(), "moving": low_node.GetName(),
                      "method": method, "mattes_mi": f"{metric:.4f}"}
        node = self._registered_node(low_node, aligned, attributes)
        show_overlay(self.scene, high_node, node, 0.5)
        outcome = RegistrationOutcome(metric, stages, transform, aligned, node, method,
                                      self._scale_warnings(fixed, moving, parse_training_scale(scale)),
                                      (high_node.GetMTime(), low_node.GetMTime()))
        self.registrations[(high_node.GetID(), low_node.GetID())] = outcome
        return outcome

    def _brainsfit_transform(self, high_node: Any, low_node: Any) -> Any:
        if self.brainsfit is None:
            raise InputError("BRAINSFit registration needs desktop Slicer with the BRAINSFit module; use SimpleITK")
        transform_node = self.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "MRISuperRes BRAINSFit")
        try:
            try:
                self.brainsfit(high_node, low_node, transform_node)
            except Exception as error:  # a CLI failure: report its text, whatever its type
                raise InputError(f"BRAINSFit failed: {error}; try SimpleITK registration") from None
            matrix = vtk.vtkMatrix4x4()
            transform_node.GetMatrixTransformFromParent(matrix)
            return transform_from_node_matrix(slicer.util.arrayFromVTKMatrix(matrix))
        finally:
            self.scene.RemoveNode(transform_node)

    def adopt_registration(self, high_node: Any, low_node: Any, aligned_path: Path, summary: dict[str, Any],
                           scale: tuple[int, int, int], source_mtimes: tuple[int, int]) -> RegistrationOutcome:
        """Take in a registration computed by ``mrisuperres register --grid moving --json`` (a background run, see
        :mod:`.slicer_registration`): the aligned file becomes ``<low>_registered`` over the high-resolution node,
        and the outcome is kept for :meth:`prepare` as :meth:`register_pair`'s is."""
        import SimpleITK as sitk

        from .volumes import grid_from_node

        metric = float(summary["metric"])
        attributes = {"role": "registered", "fixed": high_node.GetName(), "moving": low_node.GetName(),
                      "method": "simpleitk", "mattes_mi": f"{metric:.4f}"}
        node = self._registered_node(low_node, Path(aligned_path), attributes)
        show_overlay(self.scene, high_node, node, 0.5)
        lps = np.asarray(summary["fixed_to_moving_lps"], dtype=np.float64)
        transform = sitk.AffineTransform(tuple(lps[:3, :3].ravel()), tuple(lps[:3, 3]))
        outcome = RegistrationOutcome(metric, {k: float(v) for k, v in summary.get("stage_metrics", {}).items()},
                                      transform, volume_from_node(node), node, "simpleitk",
                                      self._scale_warnings(grid_from_node(high_node), grid_from_node(low_node), scale),
                                      source_mtimes)
        self.registrations[(high_node.GetID(), low_node.GetID())] = outcome
        return outcome

    def _registered_node(self, low_node: Any, aligned: Volume | Path, attributes: dict[str, str]) -> Any:
        from .volumes import read_file_into_node

        name = f"{low_node.GetName()}_registered"
        existing = [node for node in _nodes_of_class(self.scene, "vtkMRMLScalarVolumeNode")
                    if node.GetName() == name and node.GetAttribute(f"{KEY_PREFIX}role") == "registered"]
        fill = (lambda target: read_file_into_node(target, aligned)) if isinstance(aligned, Path) else \
            (lambda target: update_node_from_volume(target, aligned))
        if existing:
            node = existing[0]
            fill(node)
        elif isinstance(aligned, Path):
            node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
            fill(node)
            node.CreateDefaultDisplayNodes()
            place_beside(low_node, node)
        else:
            node = add_volume_node(self.scene, aligned, name)
            place_beside(low_node, node)
        copy_display(low_node.GetDisplayNode(), node.GetDisplayNode())
        for key, value in attributes.items():
            node.SetAttribute(f"{KEY_PREFIX}{key}", value)
        return node

    @staticmethod
    def _scale_warnings(fixed: Any, moving: Any, scale: tuple[int, int, int]) -> list[str]:
        # Compare sorted voxel sizes: the two scans may be stored with their axes in different orders.
        ratio = np.sort(moving.spacing) / np.sort(fixed.spacing)
        if np.allclose(np.sort(ratio), np.sort(np.asarray(scale, dtype=float)), rtol=0.25):
            return []
        return [f"the voxel sizes of this pair differ by {', '.join(f'{r:.2g}' for r in ratio)}x, not the training "
                f"scale {', '.join(map(str, scale))}: the model learns the pair's real resolution gap"]

    # --------------------------------------------------------------------------------------------- prepare
    def prepare(self, pairs: Sequence[TrainingPair], settings: TrainingSettings) -> TrainingJob:
        """Check the pairs and settings, write the data and ``train.yaml`` into a new run folder; start nothing.

        Real pairs not yet registered with :meth:`register_pair` are registered here (SimpleITK).

        Raises:
            InputError: a row without a high-resolution volume, a removed node, fewer than two subjects, a pair
                that does not register, bad settings.
            OutputError: the name is taken, or the disk lacks space for the run.
        """
        if self.running:
            raise InputError("a training run is in progress; stop it before preparing another")
        scale = parse_training_scale(settings.scale)
        preset = self._preset(settings.preset)
        self._check_name(settings.name)
        output_folder = Path(settings.output_folder).expanduser().absolute()
        run_folder = output_folder / RUNS_FOLDER / settings.name
        self._check_targets(settings.name, output_folder, run_folder)
        subjects = self._subjects(pairs)
        self._split(subjects, settings.validation_fraction)
        model_config = self._model_config(preset, settings, scale)
        patch = tuple(int(p) for p in (settings.patch_size or preset.patch_size))
        self._check_sizes(subjects, scale, patch)
        weights = settings.perceptual_weights
        if settings.perceptual > 0 and not (weights and Path(weights).is_file()):
            raise InputError("the perceptual loss needs a local .safetensors file of VGG16 weights; choose the file "
                             "or set its weight to 0")
        data_folder = run_folder / "data"
        # Pairs registered with register_pair (and unchanged since) are written aligned; the training process
        # registers the others itself, in the background.
        registrations = {s.row: outcome for s in subjects if (outcome := self._existing_registration(s)) is not None}
        values, writes = self._plan_data(subjects, data_folder, set(registrations))
        config = self._config(settings, preset, model_config, scale, patch, values, subjects, run_folder)
        self._check_config(config, run_folder)
        needed = self._bytes_needed(subjects, preset.family, model_config)
        free = disk_free_bytes(output_folder)
        if free < needed + FREE_SPACE_MARGIN:
            raise OutputError(
                f"not enough free disk space for this training run in {output_folder}: it needs about "
                f"{(needed + FREE_SPACE_MARGIN) / 2**20:.0f} MB, {free / 2**20:.0f} MB are free; free some space or "
                "choose another output folder")
        try:
            data_folder.mkdir(parents=True, exist_ok=True)
            self._write_data(writes, registrations)
            self._write_config(config, run_folder)
        except OSError as error:
            shutil.rmtree(run_folder, ignore_errors=True)  # it held nothing before (_check_targets)
            raise OutputError(f"cannot write the training run to {run_folder}: {error.strerror or error}") from None
        except MRISuperResError:
            shutil.rmtree(run_folder, ignore_errors=True)
            raise
        model_zoo.register_model_folder(output_folder)
        job = TrainingJob(settings.name, output_folder, run_folder, settings.steps,
                          [s.label for s in subjects if not s.validation], [s.label for s in subjects if s.validation],
                          [w for outcome in registrations.values() for w in outcome.warnings])
        self._adopt(job)
        return job

    @staticmethod
    def _preset(name: str) -> Preset:
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return PRESETS[name]

    @staticmethod
    def _check_name(name: str) -> None:
        if not NAME_PATTERN.match(name or "") or name.endswith(".safetensors"):
            raise InputError(f"model name {name!r} must start with a letter or digit and use only letters, digits, "
                             "'.', '_' or '-' (64 characters at most)")
        if name == model_zoo.DEFAULT_MODEL or name in {e.name for e in model_zoo.shipped_models()}:
            raise InputError(f"model name {name!r} is taken by a shipped model; choose another name")

    @staticmethod
    def _check_targets(name: str, output_folder: Path, run_folder: Path) -> None:
        model = output_folder / f"{name}.safetensors"
        if model.exists():
            raise OutputError(f"a model named {name} already exists in {output_folder}; choose another name")
        if run_folder.exists() and any(run_folder.iterdir()):
            raise OutputError(f"a training run named {name} already exists in {run_folder}; resume it "
                              "(TrainingLogic.open_run) or choose another name")
        if output_folder.exists() and not os.access(output_folder, os.W_OK):
            raise OutputError(f"output folder {output_folder} is not writable; choose another folder")

    def _subjects(self, pairs: Sequence[TrainingPair]) -> list[_Subject]:
        subjects: list[_Subject] = []
        seen: dict[str, int] = {}
        for row, pair in enumerate(pairs, start=1):
            high = self._check_node(pair.high, "high-resolution", row)
            low = self._check_node(pair.low, "low-resolution", row) if pair.low is not None else None
            if low is not None and _identity(low) == _identity(high):
                raise InputError(f"pair {row}: the same volume is both high- and low-resolution; choose the "
                                 "low-resolution scan or leave it empty to simulate one")
            key = _identity(high)
            if key in seen:
                raise InputError(f"pairs {seen[key]} and {row} use the same high-resolution volume; each subject "
                                 "once, or it would be both trained and validated on")
            seen[key] = row
            if isinstance(high, Path):
                # Files are used where they are: nothing is written for them.
                shape, voxel_bytes, label = _file_shape(high), 0, high.name
            else:
                image = high.GetImageData()
                shape = tuple(int(n) for n in image.GetDimensions())
                voxel_bytes = int(image.GetScalarSize())
                label = high.GetName()
            subjects.append(_Subject(row, label, high, low, bool(pair.validation), shape, voxel_bytes,
                                     dict(pair.context) if pair.context else None))
        return subjects

    def _check_node(self, item: Any, role: str, row: int | None) -> Any:
        where = f"pair {row}: " if row is not None else ""
        if item is None:
            raise InputError(f"{where}no {role} volume; select one or remove the row")
        if isinstance(item, (str, os.PathLike)):
            path = Path(item).expanduser()
            if not path.is_file():
                raise InputError(f"{where}the {role} volume file {path} does not exist")
            return path.resolve()
        if item.GetScene() is not self.scene or not self.scene.IsNodePresent(item):
            raise InputError(f"{where}the {role} volume {item.GetName()} is no longer in the scene (removed?); select "
                             "another volume or remove the row")
        if not item.IsA("vtkMRMLScalarVolumeNode") or item.IsA("vtkMRMLLabelMapVolumeNode") or \
                item.IsA("vtkMRMLVectorVolumeNode"):
            raise InputError(f"{where}the {role} volume {item.GetName()} is not a scalar MRI volume")
        image = item.GetImageData()
        if image is None or image.GetNumberOfPoints() == 0:
            raise InputError(f"{where}the {role} volume {item.GetName()} has no voxels; load its data")
        return item

    @staticmethod
    def _split(subjects: list[_Subject], fraction: float) -> None:
        if len(subjects) < 2:
            raise InputError(f"training needs at least 2 subjects (one to train on, one held out for validation); "
                             f"got {len(subjects)}: add pairs or simulated volumes")
        if not 0.0 < fraction < 1.0:
            raise InputError(f"the validation fraction must be between 0 and 1, got {fraction}")
        if not any(s.validation for s in subjects):
            count = min(len(subjects) - 1, max(1, round(fraction * len(subjects))))
            for subject in subjects[-count:]:
                subject.validation = True
        if all(s.validation for s in subjects):
            raise InputError("every subject is marked for validation; leave at least one to train on")

    @staticmethod
    def _model_config(preset: Preset, settings: TrainingSettings, scale: tuple[int, int, int]) -> dict[str, Any]:
        from .. import models

        config = dict(settings.model_config) if settings.model_config is not None else preset.model_config(scale)
        if models.supported_scales(preset.family, {**config, "scale": list(scale)}) is not None:
            config["scale"] = list(scale)
        if settings.context_variables:  # the context's length follows from the variables (as the trainer sets it)
            from ..engine.conditioning import ContextSpec

            try:
                spec = ContextSpec.from_config(settings.context_variables)
            except ValueError as error:
                raise InputError(f"the conditioning variables are not valid: {error}") from None
            config.update(context_dim=spec.dim, slice_position_index=spec.slice_position_index)
        return config

    @staticmethod
    def _check_sizes(subjects: list[_Subject], scale: tuple[int, int, int], patch: tuple[int, ...]) -> None:
        if len(patch) != 3:
            raise InputError(f"the patch size needs three sizes (i, j, k), got {list(patch)}")
        for subject in subjects:
            low = tuple(n // s for n, s in zip(subject.shape, scale))
            if not subject.validation and any(p > n for p, n in zip(patch, low)):
                raise InputError(f"pair {subject.row} ({subject.label}, {' x '.join(map(str, low))} voxels at scale "
                                 f"{', '.join(map(str, scale))}) is smaller than the patch size {list(patch)}; choose "
                                 "a smaller patch size")

    @staticmethod
    def _bytes_needed(subjects: list[_Subject], family: str, model_config: dict[str, Any]) -> int:
        import torch

        from .. import models

        data = sum(int(np.prod(s.shape)) * (s.voxel_bytes + (4 if s.low is not None else 0)) for s in subjects
                   if not isinstance(s.high, Path))
        with torch.device("meta"):
            parameters = models.parameter_count(models.create(family, **model_config))
        return data + WEIGHT_COPIES * 4 * parameters + 16 * 2**20

    def _existing_registration(self, subject: _Subject) -> RegistrationOutcome | None:
        """The pair's registration from :meth:`register_pair` while its nodes are unchanged since, else ``None``."""
        if subject.low is None or isinstance(subject.high, Path) or isinstance(subject.low, Path):
            return None
        outcome = self.registrations.get((subject.high.GetID(), subject.low.GetID()))
        if outcome is None or outcome.source_mtimes != (subject.high.GetMTime(), subject.low.GetMTime()):
            return None
        return outcome

    @staticmethod
    def _plan_data(subjects: list[_Subject], folder: Path,
                   registered: set[int]) -> tuple[dict[str, list[Any]], list[tuple[_Subject, str, Path]]]:
        """The config's data lists, and the files to write: ``(subject, "high" or "low", path)``.

        Files are used in place. A node is written as uncompressed NRRD (Slicer's C++ writer: a fraction of a
        second, no Python copy). A pair whose row is in ``registered`` is written aligned (``register: false``);
        the training process registers every other pair itself (``register: true``), so Slicer never waits for
        a registration when Start is clicked.
        """
        values: dict[str, list[Any]] = {"train": [], "validation": [], "pairs": []}
        writes: list[tuple[_Subject, str, Path]] = []

        def target(subject: _Subject, role: str) -> Path:
            item = subject.high if role == "high" else subject.low
            if isinstance(item, Path):
                return item
            path = folder / f"{subject.row:02d}_{_safe_label(subject.label)}_{role}.nrrd"
            writes.append((subject, role, path))
            return path

        values["context"] = {}  # type: ignore[assignment]  # conditioning values by the high volume's file name
        for subject in subjects:
            high = str(target(subject, "high"))
            if subject.context:
                values["context"][Path(high).name] = subject.context  # type: ignore[call-overload]
            if subject.validation:
                values["validation"].append(high)
            elif subject.low is None:
                values["train"].append(high)
            else:
                values["pairs"].append({"high": high, "low": str(target(subject, "low")),
                                        "register": subject.row not in registered})
        return values, writes

    def _write_data(self, writes: list[tuple[_Subject, str, Path]],
                    registrations: dict[int, RegistrationOutcome]) -> None:
        from .enhance_process import write_volume_node
        from ..imaging.volume_io import write_volume

        for subject, role, path in writes:
            node = subject.high if role == "high" else subject.low
            registration = registrations.get(subject.row) if role == "low" else None
            if registration is None:
                write_volume_node(node, path)
            elif self.scene.IsNodePresent(registration.node):
                write_volume_node(registration.node, path)  # the aligned volume the user saw
            else:
                write_volume(registration.aligned, path, description=f"{node.GetName()} registered"[:79],
                             compress=False)

    @staticmethod
    def _config(settings: TrainingSettings, preset: Preset, model_config: dict[str, Any],
                scale: tuple[int, int, int], patch: tuple[int, ...], data: dict[str, list[Any]],
                subjects: list[_Subject], run_folder: Path) -> dict[str, Any]:
        real = sum(1 for s in subjects if s.low is not None and not s.validation)
        description = settings.description or (
            f"{preset.family} x{','.join(map(str, scale))} trained in 3D Slicer on {len(subjects)} subjects "
            f"({real} real pairs, {len(subjects) - real} simulated or validation)")
        return {
            "name": settings.name,
            "output_dir": str(run_folder),
            "seed": int(settings.seed),
            "description": description,
            "model": {"family": preset.family, "config": model_config},
            "data": {
                "train": data["train"],
                "validation": data["validation"],
                "pairs": data["pairs"],
                "scale": list(scale),
                "degradation": {"kind": settings.degradation, "noise": [0.0, float(settings.noise)]},
                "patch_size": list(patch),
                "batch_size": int(settings.batch_size or preset.batch_size),
                "validation_crop": list(settings.validation_crop) if settings.validation_crop else None,
                **({"context": {"variables": settings.context_variables, "subjects": data["context"]}}
                   if settings.context_variables else {}),
            },
            "loss": {"l1": float(settings.l1), "perceptual": float(settings.perceptual),
                     "perceptual_weights": str(settings.perceptual_weights) if settings.perceptual_weights else None,
                     "adversarial": float(settings.adversarial)},
            "optim": {"lr": float(settings.learning_rate or preset.learning_rate)},
            "run": {"steps": int(settings.steps), "validate_every": int(settings.validate_every),
                    "checkpoint_every": int(settings.checkpoint_every), "log_every": int(settings.log_every),
                    "early_stop_patience": 0, "device": settings.device, "threads": settings.threads},
        }

    @staticmethod
    def _check_config(values: dict[str, Any], run_folder: Path) -> None:
        """The trainer's own strict check of the config (its data files need not exist yet)."""
        from ..training.config import ConfigError, config_from_dict

        try:
            config_from_dict(values, run_folder)
        except ConfigError as error:
            raise InputError(f"the training settings are not valid: {error}") from None

    @staticmethod
    def _write_config(values: dict[str, Any], run_folder: Path) -> None:
        import yaml

        path = run_folder / CONFIG_FILE
        temporary = path.with_name(f".{path.name}.partial")
        temporary.write_text("# Written by the MRISuperResTraining module; run it with\n"
                             f"#   mrisuperres train --config {path}\n" + yaml.safe_dump(values, sort_keys=False))
        os.replace(temporary, path)

    def open_run(self, run_folder: str | os.PathLike) -> TrainingJob:
        """Adopt a run prepared earlier (e.g. before Slicer was restarted), to watch, publish or resume it."""
        from ..training.config import ConfigError, load_config

        run_folder = Path(run_folder).expanduser().absolute()
        try:
            config = load_config(run_folder / CONFIG_FILE)
        except ConfigError as error:
            raise InputError(f"{run_folder} is not a training run of this module: {error}") from None
        if self.running:
            raise InputError("a training run is in progress; stop it before opening another")
        output_folder = run_folder.parent.parent if run_folder.parent.name == RUNS_FOLDER else run_folder
        job = TrainingJob(config.name, output_folder, run_folder, config.run.steps)
        self._adopt(job)
        if (run_folder / f"{job.name}.safetensors").is_file():
            self._last_status.state = "finished"
        elif (run_folder / "state.pt").is_file():
            self._last_status.state = "stopped"
        return job

    def _adopt(self, job: TrainingJob) -> None:
        self.job = job
        self.nodes = None
        self._published = {}
        self._log_mtime = None
        self._process = None
        self._last_status = TrainingStatus("prepared", total_steps=job.total_steps)

    # ---------------------------------------------------------------------------------------------- process
    @property
    def running(self) -> bool:
        """A training process of this logic is alive: the trainer itself, or Slicer's launcher in front of it."""
        return self._process is not None and self._process.running

    @property
    def status(self) -> TrainingStatus:
        """What the last :meth:`poll` found (no file is read)."""
        return self._last_status

    @property
    def pid(self) -> int | None:
        """Process ID of the process started (also its process group's on POSIX), while it runs."""
        return self._process.pid if self.running else None  # type: ignore[union-attr]

    @property
    def trainer_pid(self) -> int | None:
        """Process ID of the interpreter that trains (behind Slicer's launcher), while it runs."""
        return self._process.worker_pid if self.running else None  # type: ignore[union-attr]

    def start(self, job: TrainingJob | None = None) -> TrainingJob:
        """Start training ``job`` (default: the prepared one) in a background process; returns at once."""
        if job is not None and job is not self.job:
            self._adopt(job)
        if self.job is None:
            raise InputError("nothing to train: prepare a run first")
        if (self.job.run_folder / "state.pt").exists():
            raise InputError(f"{self.job.run_folder} already holds a started run; resume it instead")
        self._launch(resume=False)
        return self.job

    def resume(self) -> TrainingJob:
        """Continue the current job from its saved state (or from the start when it never saved one)."""
        if self.job is None:
            raise InputError("nothing to resume: prepare or open a run first")
        if self.running:
            raise InputError("the training run is still in progress")
        self._launch(resume=(self.job.run_folder / "state.pt").exists())
        return self.job

    def _launch(self, resume: bool) -> None:
        assert self.job is not None
        # The module publishes the model into its own registered folder; the run folder stays unregistered.
        arguments = ["train", "--config", str(self.job.config_path), "--quiet", "--no-register",
                     *(["--resume"] if resume else [])]
        if self._process is not None:
            self._process.close()
        self._process = BackgroundProcess(arguments, self.python, cwd=self.job.run_folder, log=self.job.log_path,
                                          control=self.job.run_folder / "control")
        try:
            self._process.start()
        except OSError as error:
            self._process = None
            raise InputError(f"cannot start the training process {self.python}: {error.strerror or error}") from None
        self._last_status = TrainingStatus("running", step=self._last_status.step, total_steps=self.job.total_steps)
        self.ensure_nodes()

    def stop(self, wait: float = 0.0) -> TrainingStatus:
        """Ask the trainer to stop: it saves its state after the current step (resume continues from there) and
        keeps the best checkpoint. The run stays ``"stopping"`` (and cannot be resumed) until the trainer itself
        is gone. Waits up to ``wait`` seconds for it to end."""
        if self.running:
            assert self._process is not None
            self._process.request_stop()
        if wait > 0:
            return self.wait(timeout=wait)
        return self.poll()

    def kill(self) -> TrainingStatus:
        """End the training process tree at once (it resumes from its last checkpoint); returns once the trainer
        is gone."""
        if self._process is not None and self.running:
            self._process.kill()
        return self.poll()

    def wait(self, timeout: float | None = None, interval: float = 0.5) -> TrainingStatus:
        """Poll until the process ends (or ``timeout`` seconds pass); the blocking mode for scripts and tests."""
        deadline = None if timeout is None else time.monotonic() + timeout
        status = self.poll()
        while self.running and (deadline is None or time.monotonic() < deadline):
            time.sleep(interval)
            status = self.poll()
        return self.poll() if not self.running else status

    # ------------------------------------------------------------------------------------------------- poll
    def poll(self) -> TrainingStatus:
        """Read the run's progress into the scene, publish an improved model, and say where the run stands.

        Cheap when nothing changed (one ``stat`` of ``log.csv``); call it from a timer.
        """
        job = self.job
        if job is None:
            return TrainingStatus("idle")
        status = TrainingStatus(self._last_status.state, total_steps=job.total_steps)
        rows = self._update_curves(job)
        if rows is not None:
            self._fill_progress(status, rows)
        else:
            self._carry_progress(status)
        process = self._process
        if process is not None and process.running:
            status.state = "stopping" if process.stop_requested else "running"
            status.message = f"step {status.step} of {status.total_steps}"
        elif process is not None:
            returncode = process.wait(timeout=0)
            assert returncode is not None
            status.returncode = returncode
            self._finish_state(status, job, returncode)
        try:
            status.model_updated = self._publish(job, final=status.state == "finished")
        except OutputError as error:  # e.g. the output folder's disk filled up: say so, keep training
            status.message = str(error)
        status.model_path = job.model_path if job.model_path.is_file() else None
        self._last_status = status
        return status

    def _finish_state(self, status: TrainingStatus, job: TrainingJob, returncode: int) -> None:
        if returncode == 0:
            status.state = "finished"
            status.message = "training finished" + (
                "" if (job.run_folder / f"{job.name}.safetensors").is_file() else " without a validated model")
        elif returncode == EXIT_INTERRUPTED or (self._process is not None and self._process.stop_requested):
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

    def _update_curves(self, job: TrainingJob) -> list[dict[str, float]] | None:
        """New ``log.csv`` rows into the tables (creating tables and charts on first use); ``None`` when the file
        did not change since the last poll."""
        path = job.run_folder / "log.csv"
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

    def _fill_progress(self, status: TrainingStatus, rows: list[dict[str, float]]) -> None:
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

    def _carry_progress(self, status: TrainingStatus) -> None:
        last = self._last_status
        for name in ("step", "elapsed_s", "eta_s", "loss", "best_psnr", "best_baseline_psnr", "best_step"):
            setattr(status, name, getattr(last, name))

    def ensure_nodes(self) -> TrainingNodes:
        """The run's tables and charts, created in the scene on first use (named after the model)."""
        if self.nodes is not None and all(self.scene.IsNodePresent(n) for n in
                                          (self.nodes.loss_table, self.nodes.validation_table,
                                           self.nodes.loss_chart, self.nodes.psnr_chart)):
            return self.nodes
        assert self.job is not None
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

    # --------------------------------------------------------------------------------------------- publish
    def _publish(self, job: TrainingJob, final: bool) -> bool:
        """Copy the final model (when finished) or a new best checkpoint to the output folder, with its card."""
        source = job.run_folder / (f"{job.name}.safetensors" if final else "best.safetensors")
        if final and not source.is_file():
            source = job.run_folder / "best.safetensors"
        try:
            mtime = source.stat().st_mtime_ns
        except OSError:
            return False
        if self._published.get(source) == mtime:
            return False
        target = job.model_path
        temporary = target.with_name(f".{target.name}.partial")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, temporary)
            os.replace(temporary, target)
            model_zoo.write_model_card(target)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise OutputError(f"cannot publish the model to {target}: {error.strerror or error}") from None
        except MRISuperResError:
            # The trainer replaced the checkpoint while it was copied: the next poll copies the new one.
            temporary.unlink(missing_ok=True)
            return False
        self._published[source] = mtime
        return True

    def cleanup(self) -> None:
        """Stop a running training process (its state is saved; resume later) and close its log."""
        if self.running:
            self.stop(wait=30.0)
            if self.running:
                self.kill()
        if self._process is not None:
            self._process.close()


# ------------------------------------------------------------------------------------------- small helpers
def _identity(item: Any) -> str:
    return str(item) if isinstance(item, Path) else item.GetID()


def _file_shape(path: Path) -> tuple[int, int, int]:
    """Voxels along ``i, j, k`` of a volume file, from its header only."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(f"cannot read volume file {path}; check that it is a 3D volume") from None
    size = (*(int(n) for n in reader.GetSize()), 1, 1)
    return size[0], size[1], size[2]


def _fill_table(table: Any, columns: dict[str, list[float]]) -> None:
    arrays = [np.asarray(values, dtype=np.float64) for values in columns.values()]
    slicer.util.updateTableFromArray(table, arrays, list(columns))
