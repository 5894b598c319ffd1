"""One optimisation step of a fixed-scale run on a batch of patch pairs (the arbitrary-scale runs' step on drawn
points is :func:`.point_sampling.point_step`).

The batch is drawn and augmented with the step's generator (:func:`.data.patch_rng`), so a step is the same
whether the run was resumed or not, and whether its batch was drawn in the step or ahead (:mod:`.prefetch`).
With a critic (``loss.adversarial`` > 0) the critic takes its ``n_critic`` WGAN-GP steps on the generator's
current output first (seed 002), then the generator is updated on the reconstruction loss plus
``loss.adversarial`` times the critic's negated mean score. With ``loss.stability`` > 0 (stability training, Zheng
et al., CVPR 2016) the network is updated on a noisier twin of the batch (:func:`.augment.noisy_twin`, drawn from
the step's own stream :func:`.data.stability_rng`): the reconstruction loss on the twin's output plus ``loss.stability``
times its L1 distance to the output on the batch as drawn, computed without gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..processing.exclusion import fill_from_estimate
from .augment import PatchBatch, augment_batch, noisy_twin
from .data import Subject, patch_rng, sample_patches, stability_rng
from ..engine.mixed_precision import autocast

if TYPE_CHECKING:
    from .loop import Trainer


def predict(trainer: Trainer, network: nn.Module, batch: PatchBatch) -> torch.Tensor:
    """``network``'s output on the batch's inputs, shape ``(batch, 1, *patch)`` on the fine grid (plus the
    baseline for residual networks); conditioned networks get the batch's context and slice positions."""
    device = trainer.device.device
    low = batch.low.to(device)
    if trainer.arbitrary_scale:
        out = network(low, tuple(batch.high.shape[2:]))
    elif batch.context is not None:
        positions = batch.slice_positions.to(low.device) if batch.slice_positions is not None else None
        out = network(low, context=batch.context.to(low.device), slice_positions=positions)
    else:
        out = network(low)
    return out + batch.baseline.to(device) if trainer.residual else out


def draw_batch(trainer: Trainer, subjects: Sequence[Subject], step: int) -> PatchBatch:
    """The augmented batch of patches of ``step`` cut from ``subjects`` (simulated), drawn with the step's
    generator (:func:`.data.patch_rng`): the same batch whether drawn here or ahead by
    :class:`~.prefetch.BatchPrefetcher`."""
    config = trainer.config
    rng = patch_rng(config.seed, step, trainer.context.rank)
    slice_axis = getattr(trainer.network, "slice_axis", None)
    batch = sample_patches(subjects, rng, config.data.patch_size, config.data.batch_size,
                           config.data.foreground_fraction, trainer.train_contexts, slice_axis)
    augment = config.augment
    return augment_batch(batch, rng, scale=trainer.scale, flips=augment.flips, rot90=augment.rot90,
                         intensity_scale=augment.intensity_scale, intensity_shift=augment.intensity_shift,
                         noise=augment.noise, slice_axis=slice_axis)


def patch_step(trainer: Trainer, step: int, batch: PatchBatch | None = None) -> dict[str, float]:
    """One optimisation step of ``trainer`` (and its critic's steps) on the batch of ``step`` (drawn here from
    ``trainer.train_subjects`` unless given); returns the loss terms, the critic's values and the total ``loss``.

    Raises:
        MRISuperResError: the loss is not finite (training diverged).
    """
    config = trainer.config
    if batch is None:
        batch = draw_batch(trainer, trainer.train_subjects, step)
    target = batch.high.to(trainer.device.device)
    values: dict[str, float] = {}
    trainer.trained.train()
    critic = trainer.critic
    if critic is not None:
        with torch.no_grad():
            fake = predict(trainer, trainer.trained, batch).float()
        real = fill_from_estimate(target, fake)  # excluded slices: real equals fake there
        values.update(critic.update(real, fake, config.loss.n_critic, config.loss.gp_weight))
    stability = config.loss.stability
    inputs, anchor = batch, None
    if stability > 0:
        inputs = noisy_twin(batch, stability_rng(config.seed, step, trainer.context.rank),
                            config.loss.stability_noise, trainer.scale)
        if critic is not None:
            anchor = fake  # the critic's input is already the output on the batch as drawn, without gradient
        else:
            with torch.no_grad(), autocast(trainer.device.device, trainer.amp_dtype):
                anchor = predict(trainer, trainer.trained, batch).float()
    with autocast(trainer.device.device, trainer.amp_dtype):
        prediction = predict(trainer, trainer.trained, inputs)
        target = fill_from_estimate(target, prediction.float())  # excluded slices add nothing
        total, terms = trainer.loss(prediction.float(), target)
        if anchor is not None:
            term = F.l1_loss(prediction.float(), anchor)
            total = total + stability * term
            terms["stability"] = float(term.detach())
        if critic is not None:
            adversarial = -critic(prediction.float()).float().mean()
            total = total + config.loss.adversarial * adversarial
            terms["adversarial"] = float(adversarial.detach())
    values.update(terms)
    values["loss"] = trainer.optimise(total, step)
    return values
