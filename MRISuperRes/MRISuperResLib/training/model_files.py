"""The model files a training run writes: ``best.safetensors`` at every better validation, and at the end the
final ``<name>.safetensors`` (the best weights with full metadata and a calibrated consistency threshold) with
its model card. Both are in the engine's model-file format (:func:`~MRISuperResLib.engine.checkpoint.save_model`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.checkpoint import save_model
from .run_files import BEST_FILE, code_revision
from .validation import calibrate_consistency

if TYPE_CHECKING:
    from torch import nn

    from .loop import Trainer


def model_metadata(trainer: Trainer) -> dict[str, Any]:
    """What the model file says about the run: name, family and config, normalisation, degradation, the subjects,
    scale(s), steps, seed, whole config and code revision, the best validation metrics, and (``extra``) the
    consistency calibration and conditioning variables when there are any."""
    config = trainer.config
    validation = vars(trainer.best) if trainer.best else {}
    return {
        "name": config.name,
        "family": config.model.family,
        "config": trainer.model_config,
        "version": config.version,
        "description": config.description or f"{config.model.family} trained by mrisuperres train",
        "normalization": trainer.normalization.to_dict(),
        "degradation": trainer.spec.to_dict(),
        "training": {
            "train": [s.name for s in trainer.train_subjects],
            "validation": [s.name for s in trainer.validation_subjects],
            "scale": list(trainer.scale),
            "voxel_mm": _voxel_range(trainer),
            "scale_range": config.data.scale_range,
            "sample_coordinates": config.data.sample_coordinates,
            "steps": trainer.step,
            "best_step": trainer.best_step,
            **({"weight_average": {"ema": config.optim.ema, "best_weights": trainer.best_weights}}
               if trainer.weight_average is not None else {}),
            "seed": config.seed,
            "config": config.to_dict(),
            "code_revision": code_revision(),
        },
        "metrics": {"validation": validation},
        "extra": {**({"consistency": trainer.calibration} if trainer.calibration else {}),
                  **({"conditioning": trainer.context_spec.to_metadata()} if trainer.context_spec else {})} or None,
    }


def _voxel_range(trainer: Trainer) -> list[float] | None:
    """``[smallest, largest]`` voxel edge (mm) of the high-resolution training volumes (what enhance compares an
    output's voxels with): the drawn range when ``data.acquisition.voxel_mm`` resampled them."""
    acquisition = trainer.acquisition
    if acquisition is not None and acquisition.voxel_mm is not None:
        return [round(float(v), 4) for v in acquisition.voxel_mm]
    edges = [float(s) for subject in trainer.train_subjects for s in subject.high_grid.spacing]
    return [round(min(edges), 4), round(max(edges), 4)] if edges else None


def save_model_file(trainer: Trainer, path: Path, network: nn.Module | None = None) -> Path:
    """Write ``network`` (default: the trainer's :attr:`~.loop.Trainer.evaluated` network, the weight average with
    ``optim.ema``) with :func:`model_metadata` to ``path``; returns the path written."""
    metadata = model_metadata(trainer)
    return save_model(network if network is not None else trainer.evaluated, path, name=metadata.pop("name"),
                      family=metadata.pop("family"), config=metadata.pop("config"), **metadata)


def finalise(trainer: Trainer) -> Path:
    """The final model: load the best weights into the trainer's network, calibrate the consistency threshold on
    the validation subjects, write ``<name>.safetensors`` and its card; logs the card's verdict when the model is
    worse or barely better than B-spline. Returns the model file's path."""
    from ..engine.checkpoint import load_model_file
    from ..engine.model_zoo import baseline_verdict, write_model_card

    best = load_model_file(trainer.output_dir / BEST_FILE)
    trainer.evaluated.load_state_dict(best.network.state_dict())
    values = ((trainer.config.data.context or {}).get("subjects") or {}) if trainer.context_spec else None
    trainer.calibration = calibrate_consistency(best, trainer.validation_subjects, trainer.scale,
                                                str(trainer.device.device), values)
    path = save_model_file(trainer, trainer.output_dir / f"{trainer.config.name}.safetensors")
    write_model_card(path)  # its card says, too, when the model is worse or barely better than B-spline
    verdict = baseline_verdict(vars(trainer.best)) if trainer.best else None
    if verdict:
        trainer.log(f"{path.name}: {verdict}")
    return path
