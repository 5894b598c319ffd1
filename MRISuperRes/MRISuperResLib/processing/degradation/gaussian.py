"""Gaussian slice profile: blur then decimation, sampled at the coarse voxel centres (seed 000's first approach;
also a smooth slice profile of thick slices)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .base import SliceProfile, degrade_axes

_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class GaussianProfile(SliceProfile):
    """Gaussian profile ``fwhm * (1 - gap)`` coarse voxels wide at half maximum.

    Attributes:
        fwhm: full width at half maximum in coarse voxels (1.0 = one voxel), positive.
        gap: gap between slices as a fraction of the coarse spacing, in ``[0, 1)`` (narrows the profile).
    """

    name = "gaussian"
    fwhm: float = 1.0
    gap: float = 0.0

    def weights(self, size_in: int, size_out: int) -> np.ndarray:
        """The profile's integral over each fine voxel, rows normalised to 1."""
        from scipy.special import erf

        centres, lower, upper = self.coarse_centres(size_in, size_out)
        sigma = max(self.fwhm * (1.0 - self.gap) * (size_in / size_out) * _FWHM_TO_SIGMA, 1e-6)
        scale = 1.0 / (np.sqrt(2.0) * sigma)
        weights = 0.5 * (erf((upper - centres) * scale) - erf((lower - centres) * scale))
        return weights / weights.sum(axis=1, keepdims=True)


def gaussian_downsample(array: np.ndarray, shape: Sequence[int], fwhm: float) -> np.ndarray:
    """Gaussian profile of ``fwhm`` coarse voxels along each axis that shrinks, sampled at the coarse centres;
    float32 of ``shape``."""
    return degrade_axes(array, shape, (GaussianProfile(fwhm=fwhm),) * 3)
