"""Box slice profile: the average over each coarse voxel, the partial-volume model of thick 2D slices.

With a ``gap`` between slices the profile covers only the central ``1 - gap`` of the coarse spacing (ECLARE,
SMORE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .base import SliceProfile, degrade_axes


@dataclass(frozen=True)
class BoxProfile(SliceProfile):
    """Rectangular slice profile ``[centre - w/2, centre + w/2]``, ``w = 1 - gap`` coarse voxels.

    Attributes:
        gap: gap between slices as a fraction of the coarse spacing, in ``[0, 1)``; 0 for contiguous slices.
    """

    name = "box"
    gap: float = 0.0

    def weights(self, size_in: int, size_out: int) -> np.ndarray:
        """Exact overlap of each fine voxel with the profile, rows normalised to 1."""
        centres, lower, upper = self.coarse_centres(size_in, size_out)
        half = 0.5 * (size_in / size_out) * (1.0 - self.gap)
        weights = np.clip(np.minimum(centres + half, upper) - np.maximum(centres - half, lower), 0.0, None)
        return weights / weights.sum(axis=1, keepdims=True)


def box_downsample(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Average over each coarse voxel's footprint with exact area weights (any size ratio); float32 of ``shape``."""
    return degrade_axes(array, shape, (BoxProfile(),) * 3)
