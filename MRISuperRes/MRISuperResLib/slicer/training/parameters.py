"""The Training module's parameter node as the engine's pairs and settings (no Qt).

The parameter node (``MRISuperResTrainingParameterNode`` in ``MRISuperResTraining.py``) is read by attribute:
``pairs`` (each with ``highResVolume``, ``lowResVolume``, ``validation``), ``useDataFolder``, ``dataFolder``,
``modelName``, ``outputFolder``, ``preset``, ``scale``, ``degradation``, ``noise``, ``patchSize``, ``batchSize``,
``steps``, ``validateEvery``, ``learningRate``, ``l1Weight``, ``perceptualWeight``, ``perceptualWeightsFile``,
``adversarialWeight``, ``validationFraction`` and ``device``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .job import TrainingPair, TrainingSettings, parse_patch_size
from .subjects import subjects_from_folder


def is_set(path: Any) -> bool:
    """An unset path parameter reads back as ``Path("") == Path(".")``."""
    return str(path) not in ("", ".")


def pairs_from_parameters(parameters: Any) -> list[TrainingPair]:
    """The table's pairs, then one pair per volume file of the data folder when it is used.

    Raises:
        InputError: the data folder does not exist or holds no volume files
            (:func:`~.subjects.subjects_from_folder`).
    """
    pairs = [TrainingPair(p.highResVolume, p.lowResVolume, p.validation) for p in parameters.pairs]
    if parameters.useDataFolder and is_set(parameters.dataFolder):
        pairs += subjects_from_folder(parameters.dataFolder)
    return pairs


def settings_from_parameters(parameters: Any) -> TrainingSettings:
    """The run's :class:`~.job.TrainingSettings`: the model name stripped of surrounding blanks, an unset
    perceptual-weights file as ``None``.

    Raises:
        InputError: a patch size that is not one or three whole numbers >= 4 (:func:`~.job.parse_patch_size`).
    """
    return TrainingSettings(
        name=parameters.modelName.strip(),
        output_folder=Path(parameters.outputFolder),
        preset=parameters.preset,
        scale=parameters.scale,
        degradation=parameters.degradation,
        noise=parameters.noise,
        patch_size=parse_patch_size(parameters.patchSize),
        batch_size=parameters.batchSize,
        steps=parameters.steps,
        validate_every=parameters.validateEvery,
        l1=parameters.l1Weight,
        perceptual=parameters.perceptualWeight,
        perceptual_weights=parameters.perceptualWeightsFile if is_set(parameters.perceptualWeightsFile) else None,
        adversarial=parameters.adversarialWeight,
        learning_rate=parameters.learningRate,
        validation_fraction=parameters.validationFraction,
        device=parameters.device,
    )
