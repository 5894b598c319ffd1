"""The parts of a training run, built from its :class:`~.config.TrainConfig`: network, optimiser, learning-rate
schedule, reconstruction loss, critic, and the validation inputs and conditioning of the loaded subjects.

The :class:`~.loop.Trainer` calls these in a fixed order after seeding torch with ``config.seed``; the order is
part of a run's reproducibility (each builder that initialises weights draws from torch's generator).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import models
from ..engine.conditioning import ContextSpec, subject_contexts
from ..processing.degradation import DegradationSpec
from .adversarial import CriticTrainer
from .config import ConfigError, DataSection, OptimSection, TrainConfig
from .data import Subject
from .distributed import DistributedContext
from .losses import ReconstructionLoss
from .point_sampling import PointSampler

#: Schedules stepped after every optimiser step (``"plateau"`` is stepped with each validation score instead).
PER_STEP_SCHEDULES = ("step", "exponential", "cosine")


def model_config(config: TrainConfig, scale: Sequence[int], context_spec: ContextSpec | None) -> dict[str, Any]:
    """The network's keyword arguments: ``model.config``, plus the data's integer ``scale`` when the family takes
    one and the config gives none, plus the context size when the run is conditioned (seed 002 conditioning).

    Raises:
        ValueError: ``model.family`` is not a registered family.
    """
    result = dict(config.model.config)
    if "scale" in models.family_spec(config.model.family).config_keys:
        result.setdefault("scale", list(scale))
    if context_spec is not None:  # the network's context follows the variables
        result.update(context_dim=context_spec.dim, slice_position_index=context_spec.slice_position_index)
    return result


def build_network(family: str, config: dict[str, Any], device: torch.device) -> nn.Module:
    """An untrained network of ``family`` on ``device``.

    Raises:
        ConfigError: the config does not fit the family (unknown or invalid keyword arguments).
    """
    try:
        return models.create(family, **config).to(device)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model.config does not fit family {family}: {error}") from None


def initialise_from(network: nn.Module, path: Path, config: TrainConfig, network_config: dict[str, Any],
                    log: Callable[[str], Any]) -> None:
    """Load the weights of the model file ``path`` into ``network`` (``model.init_from``).

    The file must hold the same family and config; with ``model.init_partial`` only the same family, and every
    tensor of matching name and shape is copied (the others keep their fresh initialisation); with
    ``model.init_grow`` a smaller ``edsr3d`` is grown into ``network`` keeping its function.

    Raises:
        ConfigError: the file's family or config does not match, (partial) no tensor matches, or (grow) the
            network is not a wider or deeper version of the file's.
    """
    from ..engine.checkpoint import load_model_file

    start = load_model_file(path)
    family, start_config = start.metadata.family, start.metadata.config
    if config.model.init_grow:
        from ..models.edsr3d import grow_state_dict

        if family != "edsr3d":
            raise ConfigError(f"model.init_grow grows an edsr3d model into a wider or deeper edsr3d; {path.name} is a "
                              f"{family}")
        try:
            network.load_state_dict(grow_state_dict(network, start.network.state_dict(), start_config))
        except ValueError as error:
            raise ConfigError(f"model.init_grow from {path.name}: {error}") from None
        log(f"grown from {path.name} ({start_config.get('channels')} channels x {start_config.get('blocks')} "
            f"blocks to {network_config.get('channels')} x {network_config.get('blocks')}), same output at the start")
        return
    if config.model.init_partial:
        if family != config.model.family:
            raise ConfigError(f"model.init_from {path} is a {family}; with init_partial it must still be a "
                              f"{config.model.family}")
        own = network.state_dict()
        matching = {name: tensor for name, tensor in start.network.state_dict().items()
                    if name in own and own[name].shape == tensor.shape}
        if not matching:
            raise ConfigError(f"model.init_from {path} shares no tensor of matching name and shape with this "
                              "model; start from a model of the same family and channels")
        network.load_state_dict(matching, strict=False)
        log(f"initialised {len(matching)} of {len(own)} tensors from {path.name}; "
            f"{len(own) - len(matching)} start fresh")
        return
    if family != config.model.family or start_config != network_config:
        raise ConfigError(f"model.init_from {path} is a {family} with config {start_config}; it must match "
                          "model.family and model.config (or set model.init_partial: true)")
    network.load_state_dict(start.network.state_dict())


def build_optimizer(network: nn.Module, optim: OptimSection) -> torch.optim.Optimizer:
    """Adam or AdamW (``optim.name``) over the network's parameters."""
    optimizer_class = torch.optim.AdamW if optim.name == "adamw" else torch.optim.Adam
    return optimizer_class(network.parameters(), lr=optim.lr, betas=tuple(optim.betas),
                           weight_decay=optim.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimSection, steps: int):  # type: ignore[no-untyped-def]
    """The learning-rate schedule ``optim.schedule`` (``None`` for a constant rate).

    ``plateau`` lowers the rate by ``factor`` when validation PSNR stops rising for ``patience`` validations;
    ``step``, ``exponential`` and ``cosine`` (annealed over the run's ``steps``) step after every optimiser step.
    """
    if optim.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=optim.factor, patience=optim.patience, min_lr=optim.min_lr)
    if optim.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=optim.step_size, gamma=optim.factor)
    if optim.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=optim.factor)
    if optim.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps), eta_min=optim.min_lr)
    return None


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The multiplier of the scheduled learning rate at optimiser step ``step`` (0-based) under a linear warmup
    over ``warmup_steps`` steps (``optim.warmup_steps``): ``(step + 1) / warmup_steps`` until it reaches 1."""
    return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)


def build_loss(config: TrainConfig, device: torch.device) -> ReconstructionLoss:
    """The weighted reconstruction loss of the ``loss`` section (perceptual weights resolved beside the config)."""
    loss = config.loss
    return ReconstructionLoss(
        l1=loss.l1, mse=loss.mse, ssim=loss.ssim, gradient=loss.gradient, fft=loss.fft, perceptual=loss.perceptual,
        perceptual_weights=config.resolve(loss.perceptual_weights) if loss.perceptual_weights else None,
    ).to(device)


def build_critic(config: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None,
                 context: DistributedContext) -> CriticTrainer | None:
    """The WGAN-GP critic (``model.critic``) when ``loss.adversarial`` > 0, else ``None``."""
    if config.loss.adversarial <= 0:
        return None
    return CriticTrainer(config.model.critic, config.loss.critic_lr, device, amp_dtype, context)


def validation_arrays(subject: Subject, crop: Sequence[int] | None,
                      scale: Sequence[int]) -> tuple[np.ndarray, ...]:
    """``(low, baseline, target, mask, excluded)`` of a validation subject as float32 / bool arrays, cut to the
    central ``crop`` (coarse voxels per axis; the fine arrays to ``crop * scale``) when one is given."""
    low = subject.low.astype(np.float32)  # type: ignore[union-attr]
    baseline = subject.baseline.astype(np.float32)  # type: ignore[union-attr]
    target = subject.target.astype(np.float32)  # type: ignore[union-attr]
    mask = subject.mask_high
    excluded = subject.excluded_high if subject.excluded_high is not None else np.zeros(mask.shape, bool)
    if crop:
        starts = [max(0, (n - c) // 2) for n, c in zip(low.shape, crop)]
        low_region = tuple(slice(s, s + c) for s, c in zip(starts, crop))
        high_region = tuple(slice(s * f, (s + c) * f) for s, c, f in zip(starts, crop, scale))
        low, baseline, target, mask = low[low_region], baseline[high_region], target[high_region], mask[high_region]
        excluded = excluded[high_region]
    return low, baseline, target, mask, excluded


def contexts(context_spec: ContextSpec | None, data: DataSection,
             subjects: Sequence[Subject]) -> list[np.ndarray] | None:
    """The conditioning vector of each subject (``data.context.subjects``), or ``None`` for an unconditioned run."""
    if context_spec is None:
        return None
    values = (data.context or {}).get("subjects") or {}
    return subject_contexts(context_spec, values, [s.name for s in subjects])


def point_sampler(data: DataSection, subjects: Sequence[Subject], scale: Sequence[int],
                  spec: DegradationSpec) -> PointSampler | None:
    """The arbitrary-scale point sampler (seed 004) when ``data.scale_range`` or ``data.sample_coordinates`` is set."""
    if data.scale_range is None and data.sample_coordinates is None:
        return None
    scale_range = data.scale_range or [scale[0], scale[0]]
    return PointSampler(subjects, tuple(data.patch_size), scale_range, data.sample_coordinates, spec,
                        data.foreground_fraction)
