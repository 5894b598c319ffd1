"""Augmentations applied identically to both members of a training pair.

Patch-level (:func:`augment_batch`): random flips and 90-degree rotations (rotations only in planes whose two axes
share the scale factor and the patch size, so the pair stays aligned), intensity scale and shift (linear, so they
commute with the B-spline skip), and extra noise on the low-resolution input.

Volume-level (:func:`gmm_contrast`): the Gaussian-mixture contrast augmentation of seed 002 section 1.3.1 (after
Meyer et al.): fit three Gaussians (CSF, grey and white matter) to the foreground intensities, perturb their
means and standard deviations, and move every voxel so that its distance to its class mean, in class standard
deviations, is kept. Responsibilities are soft, which avoids the artefact the thesis reports between classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..bspline import bspline_upsample


@dataclass(frozen=True)
class PatchBatch:
    """Aligned training patches, shape ``(batch, 1, ...)``: ``low`` on the coarse grid; ``baseline`` (B-spline
    of ``low``) and ``high`` (target) on the fine grid; all in normalised units. For a conditioned model,
    ``context`` ``(batch, dim)`` holds each patch's subject context and ``slice_positions`` ``(batch, slices)`` the
    position in its whole volume of every fine slice along the network's slice axis (:mod:`..conditioning`)."""

    low: torch.Tensor
    baseline: torch.Tensor
    high: torch.Tensor
    context: torch.Tensor | None = None
    slice_positions: torch.Tensor | None = None


def allowed_rotation_planes(scale: Sequence[float], patch: Sequence[int]) -> list[tuple[int, int]]:
    """Axis pairs ``(a, b)`` in which a 90-degree rotation keeps a low/high pair aligned."""
    return [(a, b) for a in range(3) for b in range(a + 1, 3) if scale[a] == scale[b] and patch[a] == patch[b]]


def augment_batch(
    batch: PatchBatch,
    rng: np.random.Generator,
    *,
    scale: Sequence[int],
    flips: bool = True,
    rot90: bool = True,
    intensity_scale: Sequence[float] = (1.0, 1.0),
    intensity_shift: Sequence[float] = (0.0, 0.0),
    noise: Sequence[float] = (0.0, 0.0),
    slice_axis: int | None = None,
) -> PatchBatch:
    """Apply one random draw per sample to its three aligned patches.

    With ``batch.slice_positions`` (along ``slice_axis``), a flip of that axis reverses the positions too and no
    rotation moves that axis, so every slice keeps its own position.
    """
    lows, baselines, highs, positions = [], [], [], []
    planes = allowed_rotation_planes(scale, batch.low.shape[2:]) if rot90 else []
    if batch.slice_positions is not None:
        planes = [plane for plane in planes if slice_axis not in plane]
    for index, (low, baseline, high) in enumerate(zip(batch.low, batch.baseline, batch.high)):
        position = batch.slice_positions[index] if batch.slice_positions is not None else None
        if flips:
            axes = [a + 1 for a in range(3) if rng.random() < 0.5]
            if axes:
                low, baseline, high = (t.flip(axes) for t in (low, baseline, high))
                if position is not None and slice_axis is not None and slice_axis + 1 in axes:
                    position = position.flip(0)
        positions.append(position)
        if planes:
            a, b = planes[int(rng.integers(len(planes)))]
            turns = int(rng.integers(4))
            if turns:
                low, baseline, high = (torch.rot90(t, turns, (a + 1, b + 1)) for t in (low, baseline, high))
        gain = float(rng.uniform(*intensity_scale))
        offset = float(rng.uniform(*intensity_shift))
        low, baseline, high = (t * gain + offset for t in (low, baseline, high))
        sigma = float(rng.uniform(*noise)) if noise[1] > 0 else 0.0
        if sigma > 0:
            generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
            extra = torch.randn(low.shape, generator=generator) * sigma
            low = low + extra
            # B-spline is linear: the skip of the noisy input is the old skip plus the noise's own upsampling.
            baseline = baseline + bspline_upsample(extra[None], scale)[0]
        lows.append(low.contiguous())
        baselines.append(baseline.contiguous())
        highs.append(high.contiguous())
    return PatchBatch(torch.stack(lows), torch.stack(baselines), torch.stack(highs), batch.context,
                      torch.stack(positions) if batch.slice_positions is not None else None)  # type: ignore[arg-type]


def fit_gaussian_mixture(
    values: np.ndarray, components: int = 3, iterations: int = 60, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1D Gaussian mixture by expectation-maximisation: ``(weights, means, stds)`` sorted by mean.

    Initialised at evenly spaced quantiles; a subsample of at most 200 000 values is used.
    """
    rng = rng or np.random.default_rng(0)
    sample = values if values.size <= 200_000 else rng.choice(values, 200_000, replace=False)
    sample = sample.astype(np.float64)
    means = np.quantile(sample, (np.arange(components) + 0.5) / components)
    stds = np.full(components, sample.std() / components + 1e-6)
    weights = np.full(components, 1.0 / components)
    for _ in range(iterations):
        resp = _responsibilities(sample, weights, means, stds)
        total = resp.sum(axis=0) + 1e-12
        weights = total / sample.size
        means = (resp * sample[:, None]).sum(axis=0) / total
        stds = np.sqrt((resp * (sample[:, None] - means) ** 2).sum(axis=0) / total) + 1e-6
    order = np.argsort(means)
    return weights[order], means[order], stds[order]


def _responsibilities(values: np.ndarray, weights: np.ndarray, means: np.ndarray, stds: np.ndarray) -> np.ndarray:
    log_p = -0.5 * ((values[:, None] - means) / stds) ** 2 - np.log(stds) + np.log(weights + 1e-12)
    log_p -= log_p.max(axis=1, keepdims=True)
    p = np.exp(log_p)
    return p / p.sum(axis=1, keepdims=True)


def gmm_contrast(
    array: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    mean_shift: float = 0.05,
    std_scale: float = 0.15,
) -> np.ndarray:
    """Gaussian-mixture contrast augmentation of a normalised volume (values outside ``mask`` kept).

    Each class mean moves by up to ``mean_shift`` (normalised units) and each standard deviation scales by up
    to ``1 +- std_scale``; voxel ``v`` of class ``k`` maps to ``mu'_k + (v - mu_k) / sigma_k * sigma'_k``,
    blended over classes by their responsibilities.
    """
    weights, means, stds = fit_gaussian_mixture(array[mask], rng=rng)
    new_means = means + rng.uniform(-mean_shift, mean_shift, size=means.shape)
    new_stds = stds * rng.uniform(1 - std_scale, 1 + std_scale, size=stds.shape)
    values = array[mask].astype(np.float64)
    resp = _responsibilities(values, weights, means, stds)
    moved = new_means + (values[:, None] - means) / stds * new_stds
    result = array.astype(np.float32).copy()
    result[mask] = (resp * moved).sum(axis=1).astype(np.float32)
    return result
