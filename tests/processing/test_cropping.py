"""Cropping to the foreground (processing.cropping): exact geometry, the size multiple, the border and errors."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import oblique_grid, sample_smooth_function

from MRISuperResLib.errors import InputError
from MRISuperResLib.imaging.volume import Grid, Volume
from MRISuperResLib.processing.cropping import crop_to_foreground, uncrop


def test_crop_keeps_exact_geometry_and_respects_the_multiple():
    grid = oblique_grid((50, 44, 30))
    volume = Volume(sample_smooth_function(grid).astype(np.float32), grid)
    mask = np.zeros(grid.shape, bool)
    mask[12:31, 9:20, 7:18] = True
    cropped, region = crop_to_foreground(volume, mask, margin_mm=5.0, multiple=(4, 4, 2))
    assert all(n % m == 0 for n, m in zip(cropped.shape, (4, 4, 2)))
    assert cropped.grid.same_geometry(Grid(cropped.shape, grid.spacing, cropped.grid.origin, grid.direction))
    # Margin: 5 mm is 3, 2 and 2 voxels at spacing (2, 2.5, 3); the box plus margin is inside the crop.
    for s, lo, hi, pad in zip(region, (12, 9, 7), (31, 20, 18), (3, 2, 2)):
        assert s.start <= lo - pad and s.stop >= hi + pad
    # Same physical point, same value: voxel (0, 0, 0) of the crop is voxel (i0, j0, k0) of the original.
    start = np.array([s.start for s in region], dtype=np.float64)
    assert np.allclose(cropped.grid.origin, grid.physical_points(start))
    index = np.array([[0.0, 0.0, 0.0], [5.0, 3.0, 2.0], [n - 1.0 for n in cropped.shape]])
    assert np.allclose(cropped.grid.physical_points(index), grid.physical_points(index + start))
    assert np.array_equal(cropped.array, volume.array[region])
    assert np.allclose(cropped.array, sample_smooth_function(cropped.grid), atol=1e-3)
    # uncrop pads back onto the original grid.
    restored = uncrop(cropped, grid, region)
    assert restored.grid.same_geometry(grid) and np.array_equal(restored.array[region], volume.array[region])
    outside = np.ones(grid.shape, bool)
    outside[region] = False
    assert outside.any() and not restored.array[outside].any()


def test_crop_near_the_border_and_errors():
    grid = Grid((21, 20, 9), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    volume = Volume(np.ones(grid.shape, np.float32), grid)
    mask = np.zeros(grid.shape, bool)
    mask[0:3, 15:20, :] = True
    cropped, region = crop_to_foreground(volume, mask, margin_mm=2.0, multiple=4)
    assert region[0] == slice(0, 8) and region[1] == slice(12, 20)  # grown inwards, kept inside
    assert region[2] == slice(0, 8)  # the largest multiple of 4 that fits in 9 slices
    assert cropped.shape == (8, 8, 8)
    with pytest.raises(InputError, match="mask is empty"):
        crop_to_foreground(volume, np.zeros(grid.shape, bool))
    with pytest.raises(InputError, match="fewer than the multiple"):
        crop_to_foreground(volume, mask, multiple=(1, 1, 10))
