"""The result of an adaptation (:mod:`.adapt`): its report, the adapted model with its provenance (from which
model, on which input, with which settings and held-back losses), the provenance line, and the adapted model file.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ModelError
from ..imaging.geometry import Scale, format_scale
from ..imaging.volume import Volume
from ..processing.degradation import DegradationSpec
from .adapt_settings import AdaptSettings
from .checkpoint import LoadedModel, save_model, weights_checksum


@dataclass
class AdaptationReport:
    """What one adaptation did.

    Attributes:
        steps: optimisation steps taken.
        seconds: wall-clock seconds in all (bootstrap pass and evaluations included).
        bootstrap_seconds: seconds of the bootstrap pass (0 with ``sampling="raw"``).
        best_step: step whose weights (their moving average, unless ``ema`` is 0) were kept: the latest whose
            held-back loss was within ``holdback_tolerance`` of the lowest (0: the starting weights were kept).
        held_back_before: held-back L1 loss of the starting model (normalised intensity units).
        held_back_after: held-back L1 loss of the returned model (never above ``held_back_before``).
        history: ``(step, held-back loss)`` at each evaluation.
        settings: the settings used (JSON-ready).
        input_sha256: hash recorded in the adapted model (of the input file, or of its voxels).
        arithmetic: the arithmetic of the fine-tuning steps: ``"bfloat16"`` or ``"float16"`` (autocast; the
            weights, optimiser state and loss stay float32) or ``"float32"`` (:func:`~.adapt.fine_tuning_dtype`).
    """

    steps: int
    seconds: float
    bootstrap_seconds: float
    best_step: int
    held_back_before: float
    held_back_after: float
    history: list[tuple[int, float]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    input_sha256: str = ""
    arithmetic: str = "float32"

    @property
    def improvement(self) -> float:
        """Relative decrease of the held-back loss (0.05 = 5 % lower)."""
        return 1.0 - self.held_back_after / self.held_back_before if self.held_back_before > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["improvement"] = self.improvement
        return data


def voxel_sha256(volume: Volume) -> str:
    """SHA-256 of a volume's voxels (shape, dtype, C-order bytes): identifies an input that has no file."""
    array = np.ascontiguousarray(volume.array)
    digest = hashlib.sha256(f"{array.shape}|{array.dtype}|".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def adapted_model(model: LoadedModel, network: torch.nn.Module, record: AdaptationReport, scale: Scale,
                  spec: DegradationSpec, settings: AdaptSettings, source_name: str) -> LoadedModel:
    """A new :class:`~.checkpoint.LoadedModel` of the adapted ``network`` (on the CPU, evaluation mode) with the
    starting ``model``'s metadata, renamed ``<name>-adapted``, its shipping marks dropped, and ``adapted``: the
    provenance of ``record`` (the slice profile ``spec`` applied in-plane, the ``scale``, the input's name and hash).
    """
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    metadata = copy.deepcopy(model.metadata)
    metadata.name = f"{model.name}-adapted"
    metadata.description = f"{model.metadata.description or model.name}; adapted to one input ({source_name})"
    metadata.weights_sha256 = weights_checksum(state)
    metadata.adapted = {
        "from": model.name,
        "from_version": str(model.metadata.version or ""),
        "from_sha256": model.file_sha256,
        "input": source_name,
        "input_sha256": record.input_sha256,
        "input_sha256_of": "file" if settings.source_sha256 else "voxels",
        "scale": format_scale(scale),
        "slice_profile": spec.to_dict(),
        "steps": record.steps,
        "best_step": record.best_step,
        "arithmetic": record.arithmetic,
        "seconds": round(record.seconds, 1),
        "held_back_l1_before": record.held_back_before,
        "held_back_l1_after": record.held_back_after,
        "settings": record.settings,
    }
    metadata.shipped = False
    metadata.extra.pop("default_for", None)
    metadata.extra.pop("card", None)
    # Not saved (save_adapted_model drops it): marks outputs of this run as made for this very input.
    metadata.adapted["this_run"] = True
    return LoadedModel(network, metadata, model.path, weights_checksum(state))


def adaptation_note(model: LoadedModel) -> str | None:
    """One line for provenance when ``model`` was adapted to its input, else ``None``."""
    adapted = model.metadata.adapted
    if not adapted:
        return None
    return (f"adapted to this input: fine-tuned from {adapted.get('from')} on input SHA-256 "
            f"{str(adapted.get('input_sha256', ''))[:16]}... ({adapted.get('steps')} steps, held-back L1 "
            f"{float(adapted.get('held_back_l1_before', 0)):.5f} -> "
            f"{float(adapted.get('held_back_l1_after', 0)):.5f})")


def save_adapted_model(model: LoadedModel, path: str | Any) -> Any:
    """Save an adapted model (from :func:`adapt_model`) as a normal ``.safetensors`` model file, atomically.

    Its metadata keeps the starting model's (normalisation, forward model, calibration, background masking) with
    ``name`` ``<name>-adapted`` and ``adapted`` (from which model and file SHA-256, on which input and its SHA-256,
    steps, held-back losses, settings).

    Raises:
        ModelError: ``model`` was not adapted.
    """
    metadata = model.metadata
    if metadata.adapted is None:
        raise ModelError(f"model {model.name} was not adapted to an input; nothing to save with --save-adapted")
    standard = {"name", "version", "family", "config", "scales", "min_input_size", "normalization", "degradation",
                "description", "training", "metrics", "license", "created", "engine_version", "parameters",
                "flops_per_output_voxel", "weights_sha256"}
    extra = {k: v for k, v in metadata.to_header().items() if k not in standard}
    extra["adapted"] = {k: v for k, v in metadata.adapted.items() if k != "this_run"}
    return save_model(
        model.network, path, name=str(metadata.name), family=metadata.family,
        config=dict(metadata.config), version=str(metadata.version or "0.1.0"),
        description=metadata.description, normalization=metadata.normalization,
        degradation=metadata.degradation, training=metadata.training, metrics=metadata.metrics,
        license=str(metadata.license or "Apache-2.0"), extra=extra,
    )
