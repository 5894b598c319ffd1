"""Align a real training pair's low-resolution scan with its high-resolution scan, and show the result (no Qt).

Three ways, one outcome (:class:`RegistrationOutcome`), kept by the training logic for :func:`.job.prepare`:

* :func:`register_nodes`: SimpleITK rigid then affine by Mattes mutual information (:mod:`...processing.registration`),
  or BRAINSFit when the desktop module hands in a :data:`BrainsFitRunner`; blocks (seconds to a minute).
* :class:`RegistrationRun`: the same SimpleITK registration in a background process, ``mrisuperres register HIGH
  LOW ALIGNED --grid moving --json`` through the modules' runner (:class:`~..runner.BackgroundProcess`), so that
  Slicer never waits for it; :meth:`RegistrationRun.poll` hands the child's files to :func:`adopt_registration`.

Either way the aligned low-resolution voxels land in a node ``<low>_registered`` (on the low-resolution voxel grid,
placed in the high-resolution frame), shown over the high-resolution node in every slice view; the pair's nodes
are only read. A metric above ``registration.MATCH_THRESHOLD`` (the scans do not show the same anatomy) is refused
with an :class:`~...errors.InputError` giving the metric, and nothing is added.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import slicer
import vtk

from ...errors import InputError
from ...imaging.provenance import KEY_PREFIX
from ...imaging.volume import LPS_TO_RAS, Volume
from ..outputs import copy_display, place_beside
from ..runner import BackgroundProcess, child_error
from ..volumes import add_volume_node, update_node_from_volume, volume_from_node
from .job import TrainingPair, parse_training_scale
from .subjects import check_item, nodes_of_class

if TYPE_CHECKING:
    from .logic import TrainingLogic

#: Runs a BRAINSFit registration (desktop Slicer): ``(fixed_node, moving_node, transform_node)``; fills
#: ``transform_node`` with the transform that aligns the moving volume with the fixed one (its "to parent"
#: transform maps moving RAS points to fixed RAS points), or raises.
BrainsFitRunner = Callable[[Any, Any, Any], None]


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
            of either makes :meth:`TrainingLogic.prepare` leave the pair to the training process).
    """

    metric: float
    stage_metrics: dict[str, float]
    transform: Any
    aligned: Volume
    node: Any
    method: str
    warnings: list[str] = field(default_factory=list)
    source_mtimes: tuple[int, int] = (0, 0)


def mutual_information(fixed: Volume, moving: Volume, transform: Any, bins: int = 50) -> float:
    """Mattes mutual information of ``moving`` seen through ``transform`` (fixed -> moving LPS) over every voxel
    of ``fixed``: the value :func:`~...processing.registration.register` reports as its final metric (negative;
    more negative is a better match), for transforms found by other tools (BRAINSFit)."""
    import SimpleITK as sitk

    from ...imaging.volume_io import to_sitk
    from ...processing.registration import WORK_UNITS

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


def show_overlay(scene: Any, background: Any, foreground: Any, opacity: float = 0.5) -> None:
    """Show ``foreground`` over ``background`` in every slice view of ``scene`` (slice composite nodes), the
    foreground at ``opacity`` (0..1)."""
    for composite in nodes_of_class(scene, "vtkMRMLSliceCompositeNode"):
        composite.SetBackgroundVolumeID(background.GetID() if background is not None else None)
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(float(opacity))


def register_nodes(scene: Any, high_node: Any, low_node: Any, scale: tuple[int, int, int], method: str = "simpleitk",
                   brainsfit: BrainsFitRunner | None = None, **options: Any) -> RegistrationOutcome:
    """Align ``low_node`` with ``high_node`` (checked volume nodes of ``scene``), add ``<low>_registered`` and show it
    over the high-resolution node (see :meth:`TrainingLogic.register_pair`).

    Raises:
        InputError: BRAINSFit unavailable or failed, or a metric above the threshold (nothing is added then).
        ValueError: an unknown ``method``.
    """
    from ...processing.registration import MATCH_THRESHOLD, moving_grid_in_fixed_frame, register, resample_into

    fixed, moving = volume_from_node(high_node), volume_from_node(low_node)
    if method == "simpleitk":
        result = register(fixed, moving, threshold=None, **options)
        transform, metric, stages = result.transform, result.metric, dict(result.stage_metrics)
    elif method == "brainsfit":
        transform = _brainsfit_transform(scene, brainsfit, high_node, low_node)
        metric, stages = mutual_information(fixed, moving, transform), {}
    else:
        raise ValueError(f"method must be 'simpleitk' or 'brainsfit', got {method!r}")
    if not metric < MATCH_THRESHOLD:
        raise InputError(
            f"{low_node.GetName()} does not match {high_node.GetName()}: the registration metric (Mattes mutual "
            f"information) is {metric:.3f}, above {MATCH_THRESHOLD:.3f}; the scans do not show the same anatomy. "
            "Pair scans of the same subject and region, or simulate the low-resolution input instead")
    aligned = resample_into(moving, transform, moving_grid_in_fixed_frame(moving.grid, transform))
    node = _registered_node(scene, low_node, aligned, _attributes(high_node, low_node, method, metric))
    show_overlay(scene, high_node, node, 0.5)
    return RegistrationOutcome(metric, stages, transform, aligned, node, method, scale_warnings(fixed, moving, scale),
                               (high_node.GetMTime(), low_node.GetMTime()))


def adopt_registration(scene: Any, high_node: Any, low_node: Any, aligned_path: Path, summary: dict[str, Any],
                       scale: tuple[int, int, int], source_mtimes: tuple[int, int]) -> RegistrationOutcome:
    """Take in a registration computed by ``mrisuperres register --grid moving --json`` (:class:`RegistrationRun`):
    the aligned file becomes ``<low>_registered`` over the high-resolution node."""
    import SimpleITK as sitk

    from ..volumes import grid_from_node

    metric = float(summary["metric"])
    node = _registered_node(scene, low_node, Path(aligned_path), _attributes(high_node, low_node, "simpleitk", metric))
    show_overlay(scene, high_node, node, 0.5)
    lps = np.asarray(summary["fixed_to_moving_lps"], dtype=np.float64)
    transform = sitk.AffineTransform(tuple(lps[:3, :3].ravel()), tuple(lps[:3, 3]))
    return RegistrationOutcome(metric, {k: float(v) for k, v in summary.get("stage_metrics", {}).items()},
                               transform, volume_from_node(node), node, "simpleitk",
                               scale_warnings(grid_from_node(high_node), grid_from_node(low_node), scale),
                               source_mtimes)


def scale_warnings(fixed: Any, moving: Any, scale: tuple[int, int, int]) -> list[str]:
    """A note when the voxel sizes of ``moving`` and ``fixed`` (volumes or grids) differ by other factors than the
    training ``scale``; ``[]`` when they match (within 25 %)."""
    # Compare sorted voxel sizes: the two scans may be stored with their axes in different orders.
    ratio = np.sort(moving.spacing) / np.sort(fixed.spacing)
    if np.allclose(np.sort(ratio), np.sort(np.asarray(scale, dtype=float)), rtol=0.25):
        return []
    return [f"the voxel sizes of this pair differ by {', '.join(f'{r:.2g}' for r in ratio)}x, not the training "
            f"scale {', '.join(map(str, scale))}: the model learns the pair's real resolution gap"]


def _attributes(high_node: Any, low_node: Any, method: str, metric: float) -> dict[str, str]:
    return {"role": "registered", "fixed": high_node.GetName(), "moving": low_node.GetName(), "method": method,
            "mattes_mi": f"{metric:.4f}"}


def _brainsfit_transform(scene: Any, brainsfit: BrainsFitRunner | None, high_node: Any, low_node: Any) -> Any:
    if brainsfit is None:
        raise InputError("BRAINSFit registration needs desktop Slicer with the BRAINSFit module; use SimpleITK")
    transform_node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "MRISuperRes BRAINSFit")
    try:
        try:
            brainsfit(high_node, low_node, transform_node)
        except Exception as error:  # a CLI failure: report its text, whatever its type
            raise InputError(f"BRAINSFit failed: {error}; try SimpleITK registration") from None
        matrix = vtk.vtkMatrix4x4()
        transform_node.GetMatrixTransformFromParent(matrix)
        return transform_from_node_matrix(slicer.util.arrayFromVTKMatrix(matrix))
    finally:
        scene.RemoveNode(transform_node)


def _registered_node(scene: Any, low_node: Any, aligned: Volume | Path, attributes: dict[str, str]) -> Any:
    from ..volumes import read_file_into_node

    name = f"{low_node.GetName()}_registered"
    existing = [node for node in nodes_of_class(scene, "vtkMRMLScalarVolumeNode")
                if node.GetName() == name and node.GetAttribute(f"{KEY_PREFIX}role") == "registered"]
    fill = (lambda target: read_file_into_node(target, aligned)) if isinstance(aligned, Path) else \
        (lambda target: update_node_from_volume(target, aligned))
    if existing:
        node = existing[0]
        fill(node)
    elif isinstance(aligned, Path):
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        fill(node)
        node.CreateDefaultDisplayNodes()
        place_beside(low_node, node)
    else:
        node = add_volume_node(scene, aligned, name)
        place_beside(low_node, node)
    copy_display(low_node.GetDisplayNode(), node.GetDisplayNode())
    for key, value in attributes.items():
        node.SetAttribute(f"{KEY_PREFIX}{key}", value)
    return node


class RegistrationRun:
    """One background registration of a real pair of volume nodes.

    ``RegistrationRun(logic, TrainingPair(high_node, low_node)).start()`` writes both nodes to a private temporary
    folder (MRML storage nodes: Slicer's C++ writer) and runs ``mrisuperres register`` in the background;
    :meth:`poll` never blocks, and once the child is done returns the outcome that
    :meth:`TrainingLogic.register_pair` would have (kept in :attr:`TrainingLogic.registrations`, used when training
    starts). A pair whose metric says the scans do not show the same anatomy fails with the child's one-line
    message (with the metric) and adds nothing.

    Args:
        logic: the scene's training logic; it keeps the outcome (:attr:`TrainingLogic.registrations`).
        pair: a row with a high- and a low-resolution node.
        scale: the training scale, to warn when the pair's voxel sizes do not match it.
        python: the interpreter or launcher (default: the logic's, Slicer's ``PythonSlicer``).
        temp_root: where the temporary folder is made (in Slicer: ``slicer.app.temporaryPath``).

    Raises:
        InputError: the pair has no low-resolution node, or a node is missing, removed or not a scalar volume.
    """

    def __init__(self, logic: TrainingLogic, pair: TrainingPair, scale: Any = 2,
                 python: str | os.PathLike | None = None, temp_root: str | os.PathLike | None = None) -> None:
        if pair.low is None:
            raise InputError("this pair has no low-resolution volume to register: it is simulated from the "
                             "high-resolution volume")
        self.logic = logic
        self.high = check_item(logic.scene, pair.high, "high-resolution", None)
        self.low = check_item(logic.scene, pair.low, "low-resolution", None)
        self.scale = parse_training_scale(scale)
        self.python = python if python is not None else logic.python
        self.temp_root = temp_root
        self.folder: Path | None = None
        self.process: BackgroundProcess | None = None
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._mtimes = (0, 0)

    def start(self) -> RegistrationRun:
        """Write both volumes and start the registration; returns at once."""
        from ..enhance_process import write_volume_node

        self.folder = Path(tempfile.mkdtemp(prefix="MRISuperRes-register-", dir=self.temp_root))
        try:
            write_volume_node(self.high, self.folder / "high.nrrd")
            write_volume_node(self.low, self.folder / "low.nrrd")
            self._mtimes = (self.high.GetMTime(), self.low.GetMTime())
            self.process = BackgroundProcess(
                ["register", "high.nrrd", "low.nrrd", "aligned.nrrd", "--grid", "moving", "--transform",
                 "low_to_high.tfm", "--json"], self.python, cwd=self.folder, control=self.folder / "control")
            self.process.start()
        except BaseException:
            self._remove_folder()
            raise
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def poll(self) -> RegistrationOutcome | None:
        """``None`` while the child registers; then the outcome (node added, overlay shown).

        Raises:
            InputError: the registration failed or the scans do not show the same anatomy (the child's message).
        """
        if self.process is None:
            raise RuntimeError("start() the registration first")
        self._take_lines()
        if self.process.running:
            return None
        self.process.wait()
        self._take_lines()
        try:
            if self.process.returncode != 0:
                raise InputError(f"{self.low.GetName()} was not registered onto {self.high.GetName()}: "
                                 f"{child_error(self._stderr, self.process.returncode or 1)}")
            summary = json.loads("\n".join(self._stdout))
            assert self.folder is not None
            return self.logic.adopt_registration(self.high, self.low, self.folder / "aligned.nrrd", summary,
                                                 self.scale, self._mtimes)
        finally:
            self._remove_folder()

    def cancel(self) -> None:
        """Stop the registration; nothing is added."""
        if self.process is not None and self.process.running:
            self.process.kill()
        self._remove_folder()

    def _take_lines(self) -> None:
        assert self.process is not None
        for stream, line in self.process.lines():
            if line is not None:
                (self._stdout if stream == "stdout" else self._stderr).append(line)

    def _remove_folder(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
