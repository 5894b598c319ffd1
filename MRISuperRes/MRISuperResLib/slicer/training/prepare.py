"""Prepare a training run: pairs and settings checked, then the data files and ``train.yaml`` written (no Qt).

:func:`prepare` refuses every problem it can see before anything is written (a bad name, a taken name, too few
subjects, bad settings, too little free disk space), each with an :class:`~...errors.MRISuperResError` that says
what to do; a failure while writing removes the run folder again. It starts nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...engine import model_zoo
from ...errors import InputError, MRISuperResError, OutputError
from .job import (NAME_PATTERN, RUNS_FOLDER, TrainingJob, TrainingPair, TrainingSettings, check_train_config,
                  parse_training_scale, write_config)
from .presets import PRESETS, Preset
from .publish import register_output_folder
from .registration import RegistrationOutcome
from .subjects import (Subject, bytes_needed, check_sizes, collect_subjects, plan_data, split_validation,
                       write_data)

#: Free space kept beyond the estimated size of a run, so that the disk is never filled to the last byte.
FREE_SPACE_MARGIN = 100 * 2**20


def prepare(scene: Any, pairs: Sequence[TrainingPair], settings: TrainingSettings,
            registrations: dict[tuple[str, str], RegistrationOutcome]) -> TrainingJob:
    """Check the pairs and settings, write the data and ``train.yaml`` into a new run folder and register the
    output folder as a user model folder (see :meth:`TrainingLogic.prepare`).

    Args:
        scene: the scene holding the pairs' nodes.
        registrations: outcomes of earlier registrations by ``(high node ID, low node ID)``; a pair's is used
            while both its nodes are unchanged since.

    Raises:
        InputError: a row without a high-resolution volume, a removed node, fewer than two subjects, bad settings.
        OutputError: the name is taken, or the disk lacks space for the run.
    """
    scale = parse_training_scale(settings.scale)
    preset = preset_named(settings.preset)
    check_name(settings.name)
    output_folder = Path(settings.output_folder).expanduser().absolute()
    run_folder = output_folder / RUNS_FOLDER / settings.name
    check_targets(settings.name, output_folder, run_folder)
    subjects = collect_subjects(scene, pairs)
    split_validation(subjects, settings.validation_fraction)
    network = model_config(preset, settings, scale)
    patch = tuple(int(p) for p in (settings.patch_size or preset.patch_size))
    check_sizes(subjects, scale, patch)
    weights = settings.perceptual_weights
    if settings.perceptual > 0 and not (weights and Path(weights).is_file()):
        raise InputError("the perceptual loss needs a local .safetensors file of VGG16 weights; choose the file "
                         "or set its weight to 0")
    data_folder = run_folder / "data"
    # Pairs registered beforehand (and unchanged since) are written aligned; the training process registers the
    # others itself, in the background.
    registered = {s.row: outcome for s in subjects if (outcome := current_registration(registrations, s)) is not None}
    data, writes = plan_data(subjects, data_folder, set(registered))
    real_pairs = sum(1 for s in subjects if s.low is not None and not s.validation)
    config = settings.train_config(preset, network, scale, patch, data, run_folder, len(subjects), real_pairs)
    values = check_train_config(config, run_folder)
    needed = bytes_needed(subjects, preset.family, network)
    free = disk_free_bytes(output_folder)
    if free < needed + FREE_SPACE_MARGIN:
        raise OutputError(
            f"not enough free disk space for this training run in {output_folder}: it needs about "
            f"{(needed + FREE_SPACE_MARGIN) / 2**20:.0f} MB, {free / 2**20:.0f} MB are free; free some space or "
            "choose another output folder")
    try:
        data_folder.mkdir(parents=True, exist_ok=True)
        write_data(scene, writes, registered)
        write_config(values, run_folder)
    except OSError as error:
        shutil.rmtree(run_folder, ignore_errors=True)  # it held nothing before (check_targets)
        raise OutputError(f"cannot write the training run to {run_folder}: {error.strerror or error}") from None
    except MRISuperResError:
        shutil.rmtree(run_folder, ignore_errors=True)
        raise
    register_output_folder(output_folder)
    return TrainingJob(settings.name, output_folder, run_folder, settings.steps,
                       [s.label for s in subjects if not s.validation], [s.label for s in subjects if s.validation],
                       [w for outcome in registered.values() for w in outcome.warnings])


def preset_named(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        InputError: no such preset (the message lists them).
    """
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def check_name(name: str) -> None:
    """Refuse a model name that cannot be a file name or that a shipped model has.

    Raises:
        InputError: the name breaks :data:`~.job.NAME_PATTERN` or is taken by a shipped model.
    """
    if not NAME_PATTERN.match(name or "") or name.endswith(".safetensors"):
        raise InputError(f"model name {name!r} must start with a letter or digit and use only letters, digits, "
                         "'.', '_' or '-' (64 characters at most)")
    if name == model_zoo.DEFAULT_MODEL or name in {e.name for e in model_zoo.shipped_models()}:
        raise InputError(f"model name {name!r} is taken by a shipped model; choose another name")


def check_targets(name: str, output_folder: Path, run_folder: Path) -> None:
    """Refuse to overwrite a model or a run, or to write into a folder that is not writable.

    Raises:
        OutputError: the model or a non-empty run folder exists, or the output folder is not writable.
    """
    model = output_folder / f"{name}.safetensors"
    if model.exists():
        raise OutputError(f"a model named {name} already exists in {output_folder}; choose another name")
    if run_folder.exists() and any(run_folder.iterdir()):
        raise OutputError(f"a training run named {name} already exists in {run_folder}; resume it "
                          "(TrainingLogic.open_run) or choose another name")
    if output_folder.exists() and not os.access(output_folder, os.W_OK):
        raise OutputError(f"output folder {output_folder} is not writable; choose another folder")


def model_config(preset: Preset, settings: TrainingSettings, scale: tuple[int, int, int]) -> dict[str, Any]:
    """The network's constructor arguments: the settings' or the preset's, at ``scale`` for fixed-scale families,
    with the context length of a conditioned model (as the trainer sets it).

    Raises:
        InputError: the conditioning variables are not valid.
    """
    from ... import models

    config = dict(settings.model_config) if settings.model_config is not None else preset.model_config(scale)
    if models.supported_scales(preset.family, {**config, "scale": list(scale)}) is not None:
        config["scale"] = list(scale)
    if settings.context_variables:  # the context's length follows from the variables (as the trainer sets it)
        from ...engine.conditioning import ContextSpec

        try:
            spec = ContextSpec.from_config(settings.context_variables)
        except ValueError as error:
            raise InputError(f"the conditioning variables are not valid: {error}") from None
        config.update(context_dim=spec.dim, slice_position_index=spec.slice_position_index)
    return config


def current_registration(registrations: dict[tuple[str, str], RegistrationOutcome],
                         subject: Subject) -> RegistrationOutcome | None:
    """The subject's earlier registration while its nodes are unchanged since, else ``None``."""
    if subject.low is None or isinstance(subject.high, Path) or isinstance(subject.low, Path):
        return None
    outcome = registrations.get((subject.high.GetID(), subject.low.GetID()))
    if outcome is None or outcome.source_mtimes != (subject.high.GetMTime(), subject.low.GetMTime()):
        return None
    return outcome


def disk_free_bytes(folder: Path) -> int:
    """Free bytes on the file system holding ``folder`` (or its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return shutil.disk_usage(folder).free
