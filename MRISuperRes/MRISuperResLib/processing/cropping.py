"""Cropping a volume to its foreground, keeping exact geometry, and putting it back.

:func:`crop_to_foreground` removes the empty background around a mask, with sizes rounded to a multiple per axis so
that a scale factor divides them; :func:`uncrop` pads back. Training crops its volumes this way before sampling
patches. Arrays are indexed ``[i, j, k]``; geometry is LPS mm (see :mod:`MRISuperResLib.imaging.volume`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from ..imaging.volume import Grid, Volume
from .masks import check_mask

Slices = tuple[slice, slice, slice]


def crop_to_foreground(
    volume: Volume,
    mask: np.ndarray,
    margin_mm: float = 5.0,
    multiple: int | Sequence[int] = (1, 1, 1),
) -> tuple[Volume, Slices]:
    """Crop ``volume`` to the bounding box of ``mask`` plus a margin, keeping exact geometry.

    Voxel ``(0, 0, 0)`` of the crop is at the physical point of voxel ``(i0, j0, k0)`` of the original, so the
    crop overlays it exactly (same spacing and direction; the origin moves along the index axes).

    Args:
        volume: the volume to crop (not modified).
        mask: boolean array on the volume's grid; its bounding box is kept.
        margin_mm: background kept around the box on every side (mm; rounded up to whole voxels).
        multiple: the crop's size along each axis ``i, j, k`` is a multiple of this (e.g. the scale factor, so
            that the low-resolution grid divides it). The box grows about its centre, shifted to stay inside the
            volume; when the volume itself is too small, the largest multiple that fits is used.

    Returns:
        The cropped volume and the index slices ``(si, sj, sk)`` into the original (apply them to masks or the
        paired volume on the same grid; :func:`uncrop` reverses the crop).

    Raises:
        InputError: the mask is empty, or an axis is shorter than its multiple.
    """
    mask = check_mask(mask, volume)
    if not mask.any():
        raise InputError("the foreground mask is empty; nothing to crop to (check the threshold or the mask)")
    multiples = [int(multiple)] * 3 if np.isscalar(multiple) else [int(m) for m in multiple]  # type: ignore[arg-type]
    if len(multiples) != 3 or min(multiples) < 1:
        raise ValueError(f"multiple must be one or three positive integers, got {multiple!r}")
    slices = []
    for axis, (n, spacing, m) in enumerate(zip(volume.shape, volume.spacing, multiples)):
        if n < m:
            raise InputError(f"the volume has {n} voxels along axis {'ijk'[axis]}, fewer than the multiple {m}")
        occupied = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        pad = int(np.ceil(margin_mm / spacing - 1e-9))
        start, stop = max(0, occupied[0] - pad), min(n, occupied[-1] + 1 + pad)
        size = min(-(-(stop - start) // m) * m, n // m * m)
        start = min(max(0, (start + stop - size) // 2), n - size)
        slices.append(slice(int(start), int(start + size)))
    region = tuple(slices)
    offset = np.array([s.start for s in region], dtype=np.float64)
    grid = Grid(tuple(s.stop - s.start for s in region), volume.spacing,
                tuple(volume.grid.physical_points(offset)), volume.grid.direction)
    return volume.with_grid(np.ascontiguousarray(volume.array[region]), grid), region  # type: ignore[index]


def uncrop(cropped: Volume, grid: Grid, slices: Slices, fill: float = 0.0) -> Volume:
    """Put ``cropped`` (from :func:`crop_to_foreground`) back into the full ``grid``, ``fill`` elsewhere."""
    array = np.full(grid.shape, fill, dtype=cropped.array.dtype)
    array[slices] = cropped.array
    return cropped.with_grid(array, grid)
