"""What a training run is made of: the table's rows, the settings, the prepared run and its config (no Qt).

:class:`TrainingPair` is one row of the module's table, :class:`TrainingSettings` the rest of the panel;
:meth:`TrainingSettings.train_config` turns them (with the data files :mod:`.subjects` plans) into the trainer's
own :class:`~...training.config.TrainConfig`, which :func:`write_config` checks with the trainer's strict reader
and writes as ``train.yaml``; :class:`TrainingJob` is the prepared run folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import InputError, MRISuperResError
from ...processing.degradation import KINDS as DEGRADATIONS  # noqa: F401  (forward models of simulated pairs)
from .presets import DEFAULT_PRESET, Preset

if TYPE_CHECKING:
    from ...training.config import TrainConfig

#: Subfolder of the output folder holding one folder per training run.
RUNS_FOLDER = "runs"

#: The generated training config, in the run folder.
CONFIG_FILE = "train.yaml"

#: The training process's standard output and error, in the run folder (appended to on resume).
PROCESS_LOG = "process.log"

#: Model names: a letter or digit, then letters, digits, ``.``, ``_`` or ``-`` (they become file names).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


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
class DataLists:
    """The data section's file lists, as :func:`.subjects.plan_data` lays them out.

    Attributes:
        train: high-resolution volumes to simulate low-resolution inputs from.
        validation: held-out high-resolution volumes.
        pairs: real pairs ``{"high": path, "low": path, "register": bool}``.
        context: conditioning values by the high-resolution file's name.
    """

    train: list[str] = field(default_factory=list)
    validation: list[str] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    context: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class TrainingSettings:
    """What to train, and where the model goes.

    Attributes:
        name: the model's name (also its file name): letters, digits, ``.``, ``_``, ``-``; not a shipped name.
        output_folder: where ``<name>.safetensors`` (and its card) appear; runs go in ``runs/<name>/`` inside.
        preset: a key of :data:`~.presets.PRESETS` (family, size and training defaults).
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

    def train_config(self, preset: Preset, model_config: dict[str, Any], scale: tuple[int, int, int],
                     patch: tuple[int, ...], data: DataLists, run_folder: Path, subjects: int,
                     real_pairs: int) -> TrainConfig:
        """The trainer's config of this run (not yet checked: :func:`write_config` does).

        Args:
            preset: the preset named by :attr:`preset` (its batch size and learning rate fill unset ones).
            model_config: the family's constructor arguments (see :func:`.prepare.model_config`).
            scale: whole per-axis factors ``(i, j, k)``; patch: low-resolution patch size in voxels.
            data: the data files; run_folder: the run's folder (the trainer's ``output_dir``).
            subjects, real_pairs: how many subjects, and real pairs trained on (for the default description).
        """
        from ...training.config import DataSection, LossSection, ModelSection, OptimSection, RunSection, TrainConfig

        description = self.description or (
            f"{preset.family} x{','.join(map(str, scale))} trained in 3D Slicer on {subjects} subjects "
            f"({real_pairs} real pairs, {subjects - real_pairs} simulated or validation)")
        context = {"variables": self.context_variables, "subjects": data.context} if self.context_variables else None
        return TrainConfig(
            name=self.name, output_dir=str(run_folder), seed=int(self.seed), description=description,
            model=ModelSection(family=preset.family, config=model_config),
            data=DataSection(
                train=data.train, validation=data.validation, pairs=data.pairs, scale=list(scale),
                degradation={"kind": self.degradation, "noise": [0.0, float(self.noise)]}, patch_size=list(patch),
                batch_size=int(self.batch_size or preset.batch_size),
                validation_crop=list(self.validation_crop) if self.validation_crop else None, context=context),
            loss=LossSection(l1=float(self.l1), perceptual=float(self.perceptual),
                             perceptual_weights=str(self.perceptual_weights) if self.perceptual_weights else None,
                             adversarial=float(self.adversarial)),
            optim=OptimSection(lr=float(self.learning_rate or preset.learning_rate)),
            run=RunSection(steps=int(self.steps), validate_every=int(self.validate_every),
                           checkpoint_every=int(self.checkpoint_every), log_every=int(self.log_every),
                           early_stop_patience=0, device=self.device, threads=self.threads),
            base_dir=run_folder)


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


def parse_training_scale(scale: Any) -> tuple[int, int, int]:
    """Whole per-axis factors ``(i, j, k)`` from ``2``, ``"1,1,4"`` or ``(1, 1, 4)``.

    Raises:
        InputError: not one or three numbers >= 1 (the message of :func:`~...imaging.geometry.parse_scale`), or not
            whole factors.
    """
    from ...imaging.geometry import parse_scale
    from ...training.data import integer_scale

    try:
        parsed = parse_scale(scale)
    except MRISuperResError as error:  # parse_scale's own class: this module refuses bad input as InputError
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


def check_train_config(config: TrainConfig, run_folder: Path) -> dict[str, Any]:
    """``config`` as the file :func:`write_config` writes, after the trainer's own strict check of it (its data
    files need not exist yet).

    Raises:
        InputError: the trainer would refuse the config (the message names the setting).
    """
    from ...training.config import ConfigError, config_from_dict

    values = config.to_dict()
    try:
        config_from_dict(values, run_folder)
    except ConfigError as error:
        raise InputError(f"the training settings are not valid: {error}") from None
    return values


def write_config(values: dict[str, Any], run_folder: Path) -> None:
    """Write checked config values (:func:`check_train_config`) as ``run_folder/train.yaml``, atomically.

    Raises:
        OSError: the file cannot be written.
    """
    import yaml

    path = run_folder / CONFIG_FILE
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text("# Written by the MRISuperResTraining module; run it with\n"
                         f"#   mrisuperres train --config {path}\n" + yaml.safe_dump(values, sort_keys=False))
    os.replace(temporary, path)
