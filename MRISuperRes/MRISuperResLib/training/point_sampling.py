"""Arbitrary-scale training batches as in ArSSR (seed 004; Wu et al. 2021, equation 3).

Each optimisation step draws one scale ``s`` uniformly from ``data.scale_range`` (any real factor, not only whole
ones) and, for each of the ``batch_size`` patches:

1. cuts a high-resolution region of ``round((p + 2m) * s)`` voxels per axis (``p`` = ``data.patch_size``,
   low-resolution voxels; ``m`` = :data:`SIMULATION_MARGIN`) around a foreground-weighted centre (zeros beyond
   the volume), with random flips;
2. simulates its low-resolution acquisition on the cell-centred ``p + 2m``-voxel grid over the same extent
   (:func:`~MRISuperResLib.processing.degradation.simulate`: the run's forward model, noise and bias), so the effective
   scale is ``round((p + 2m) * s) / (p + 2m)``, and keeps the central ``p`` voxels as the network's input. A
   k-space simulation of a small patch wraps around at its faces and rings across the whole patch (the sinc
   decays slowly); whole volumes at inference do not, so the ringing is simulated away from the input;
3. draws ``data.sample_coordinates`` fine voxels at random (the reference's ``K``, 8000) among those whose
   centres lie at least :data:`EDGE_MARGIN` low-resolution voxels inside the input patch, and returns their
   continuous indices on the input patch, their target intensities and the cubic B-spline interpolation of the
   simulated low-resolution region there (ITK's B-spline with mirror boundaries, as the engine's baseline;
   scipy's ``map_coordinates`` order 3).

The network encodes the low-resolution patch once and decodes only the drawn points, as the reference does.
Intensity scale and shift are drawn per patch and applied to input and target alike (linear, so they commute
with the B-spline baseline); extra Gaussian noise goes on the input only. All random numbers come from the
step's generator (:func:`.data.patch_rng`): a resumed run draws the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

from ..processing.degradation import DegradationSpec, simulate
from ..errors import InputError
from ..models.layers import fine_voxel_positions
from .data import Subject
from ..engine.mixed_precision import autocast

if TYPE_CHECKING:
    from .loop import Trainer

#: Low-resolution voxels along each face of a patch where no target point is drawn.
EDGE_MARGIN = 2
#: Low-resolution voxels simulated beyond each face of the input patch and then cut off (see step 2).
SIMULATION_MARGIN = 8


@dataclass(frozen=True)
class PointBatch:
    """One arbitrary-scale training batch, normalised units.

    Attributes:
        low: ``(batch, 1, p_i, p_j, p_k)`` simulated low-resolution patches.
        positions: ``(batch, points, 3)`` continuous ``(i, j, k)`` indices of the drawn fine voxels on the
            low-resolution patch grid (float64).
        baseline: ``(batch, points)`` cubic B-spline interpolation of ``low`` at ``positions``.
        target: ``(batch, points)`` high-resolution intensities at those voxels.
        scale: the effective per-axis scale ``round((p + 2m) * s) / (p + 2m)`` of this batch.
    """

    low: torch.Tensor
    positions: torch.Tensor
    baseline: torch.Tensor
    target: torch.Tensor
    scale: tuple[float, float, float]


def interior_positions(patch: Sequence[int], fine: Sequence[int], margin: int = EDGE_MARGIN,
                       outer: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per axis, the fine voxel indices whose centres lie ``margin`` low voxels inside the patch, and their
    continuous coarse indices (``(q + 0.5) * (p + 2 outer) / n - 0.5``, on a grid of ``p + 2 outer`` voxels
    whose central ``p`` are the patch)."""
    axes = []
    for p, n in zip(patch, fine):
        coarse = fine_voxel_positions(int(p) + 2 * outer, int(n)).numpy()
        keep = np.flatnonzero((coarse >= outer + margin - 0.5) & (coarse <= outer + p - margin - 0.5))
        axes.append((keep, coarse[keep]))
    return axes


def padded_region(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """``array[start : start + size]`` (float32), zeros where the region reaches beyond the array."""
    out = np.zeros(tuple(size), dtype=np.float32)
    source = tuple(slice(max(0, s), min(n, s + z)) for s, z, n in zip(start, size, array.shape))
    target = tuple(slice(r.start - s, r.stop - s) for r, s in zip(source, start))
    out[target] = array[source]
    return out


class PointSampler:
    """Draws :class:`PointBatch` es from training subjects (see the module docstring).

    Args:
        subjects: training subjects (their ``high_source``, ``mask_low`` and grids are used).
        patch: low-resolution patch size ``(p_i, p_j, p_k)``.
        scale_range: ``(low, high)`` isotropic scale drawn uniformly per step (equal values: a fixed scale).
        points: fine voxels drawn per patch; ``None`` or more than the patch's interior holds: all of them.
        spec: forward model, noise and bias of the simulation.
        foreground_fraction: share of patches centred inside the foreground.

    Raises:
        InputError: a patch too small to leave an interior.
    """

    def __init__(self, subjects: Sequence[Subject], patch: Sequence[int], scale_range: Sequence[float],
                 points: int | None, spec: DegradationSpec, foreground_fraction: float) -> None:
        self.subjects = list(subjects)
        self.patch = tuple(int(p) for p in patch)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.points = None if not points else int(points)
        self.spec = spec
        self.foreground_fraction = float(foreground_fraction)
        if min(self.patch) <= 2 * EDGE_MARGIN:
            raise InputError(f"data.patch_size {list(self.patch)} leaves no interior for target points; use at "
                             f"least {2 * EDGE_MARGIN + 2} voxels per axis")
        self._foreground = [np.flatnonzero(s.mask_low) for s in self.subjects]

    def draw_scale(self, rng: np.random.Generator) -> float:
        low, high = self.scale_range
        return low if high == low else float(rng.uniform(low, high))

    def _centre(self, index: int, rng: np.random.Generator) -> tuple[float, float, float]:
        """A centre in fine voxel coordinates: a foreground coarse voxel (integer training grid) or any voxel."""
        subject = self.subjects[index]
        candidates = self._foreground[index]
        if candidates.size and rng.random() < self.foreground_fraction:
            low = np.unravel_index(int(candidates[rng.integers(candidates.size)]), subject.low_grid.shape)
            factors = [h / l for h, l in zip(subject.high_grid.shape, subject.low_grid.shape)]
            return tuple((c + 0.5) * f for c, f in zip(low, factors))  # type: ignore[return-value]
        return tuple(float(rng.uniform(0, n)) for n in subject.high_grid.shape)  # type: ignore[return-value]

    def sample(self, rng: np.random.Generator, batch_size: int, *, flips: bool = True,
               intensity_scale: Sequence[float] = (1.0, 1.0), intensity_shift: Sequence[float] = (0.0, 0.0),
               noise: Sequence[float] = (0.0, 0.0)) -> PointBatch:
        """One batch at one scale drawn for it (see the module docstring)."""
        scale = self.draw_scale(rng)
        outer = tuple(p + 2 * SIMULATION_MARGIN for p in self.patch)
        fine = tuple(round(o * scale) for o in outer)
        axes = interior_positions(self.patch, fine, outer=SIMULATION_MARGIN)
        counts = [len(keep) for keep, _ in axes]
        total = int(np.prod(counts))
        count = total if self.points is None else min(self.points, total)
        lows, positions, baselines, targets = [], [], [], []
        for _ in range(batch_size):
            index = int(rng.integers(len(self.subjects)))
            subject = self.subjects[index]
            centre = self._centre(index, rng)
            start = [round(c - f / 2) for c, f in zip(centre, fine)]
            region = padded_region(subject.high_source, start, fine)
            if flips:
                region = np.flip(region, tuple(a for a in range(3) if rng.random() < 0.5))
            low = simulate(np.ascontiguousarray(region), outer, self.spec, rng)
            gain = float(rng.uniform(*intensity_scale))
            shift = float(rng.uniform(*intensity_shift))
            low = low * gain + shift
            target = region * gain + shift
            if noise[1] > 0:
                low = low + rng.normal(0.0, float(rng.uniform(*noise)), low.shape)
            chosen = rng.choice(total, size=count, replace=False) if count < total else np.arange(total)
            picked = np.unravel_index(np.sort(chosen), counts)
            fine_index = tuple(keep[p] for (keep, _), p in zip(axes, picked))
            coarse = np.stack([c[p] for (_, c), p in zip(axes, picked)], axis=-1)
            inner = tuple(slice(SIMULATION_MARGIN, SIMULATION_MARGIN + p) for p in self.patch)
            lows.append(low[inner].astype(np.float32))
            positions.append(coarse - SIMULATION_MARGIN)
            targets.append(target[fine_index].astype(np.float32))
            baselines.append(ndimage.map_coordinates(low.astype(np.float64), coarse.T, order=3, mode="mirror")
                             .astype(np.float32))
        effective = tuple(f / o for f, o in zip(fine, outer))
        return PointBatch(
            low=torch.from_numpy(np.stack(lows))[:, None],
            positions=torch.from_numpy(np.stack(positions)),
            baseline=torch.from_numpy(np.stack(baselines)),
            target=torch.from_numpy(np.stack(targets)),
            scale=effective,  # type: ignore[arg-type]
        )


def point_step(trainer: Trainer, step: int, rng: np.random.Generator) -> dict[str, float]:
    """One optimisation step of ``trainer`` on a :class:`PointBatch` drawn with ``rng``: the network encodes the
    patches and decodes the drawn points (through its ``forward``, so DDP synchronises the gradients); the loss is
    ``loss.l1 * L1 + loss.mse * MSE`` between decoded (plus baseline, for residual models) and true intensities.
    Returns the loss values and the batch's scale."""
    config, augment = trainer.config, trainer.config.augment
    assert trainer.sampler is not None
    batch = trainer.sampler.sample(rng, config.data.batch_size, flips=augment.flips,
                                   intensity_scale=augment.intensity_scale, intensity_shift=augment.intensity_shift,
                                   noise=augment.noise)
    device = trainer.device.device
    target = batch.target.to(device)
    trainer.trained.train()
    with autocast(device, trainer.amp_dtype):
        prediction = trainer.trained(batch.low.to(device), positions=batch.positions.to(device)).float()
    if trainer.residual:
        prediction = prediction + batch.baseline.to(device)
    terms = {"l1": F.l1_loss(prediction, target), "mse": F.mse_loss(prediction, target)}
    total = config.loss.l1 * terms["l1"] + config.loss.mse * terms["mse"]
    loss = trainer.optimise(total, step)
    values = {name: float(term.detach()) for name, term in terms.items()}
    values.update(loss=loss, scale=batch.scale[0])
    return values
