"""Preprocessing of training volumes (training.preprocess): N4, foreground masks, cropping with exact geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import coefficient_of_variation, oblique_grid, sample_smooth_function, smooth_bias

from MRISuperResLib.errors import InputError
from MRISuperResLib.imaging.geometry import resampled_grid
from MRISuperResLib.processing.preprocess import (
    crop_to_foreground,
    foreground_mask,
    mask_on_grid,
    n4_bias_field,
    n4_correct,
    uncrop,
)
from MRISuperResLib.imaging.volume import Grid, Volume
from MRISuperResLib.imaging.volume_io import read_volume


def synthetic_head(shape=(40, 44, 36), spacing=(2.0, 2.0, 2.5)) -> tuple[Volume, np.ndarray]:
    """An ellipsoid of tissue (SNR 33, Rician noise) with a dark cavity inside and a bright speck outside;
    returns it and the ellipsoid (the mask a head finder should return)."""
    grid = Grid(shape, spacing, (-30.0, 12.0, 5.0))
    axes = [(np.arange(n) - (n - 1) / 2) / (0.4 * n) for n in shape]
    i, j, k = np.meshgrid(*axes, indexing="ij")
    radius = np.sqrt(i**2 + j**2 + k**2)
    rng = np.random.default_rng(0)
    signal = np.where(radius < 1.0, 100.0, 0.0)
    signal[radius < 0.3] = 5.0  # a ventricle-like dark cavity
    array = np.abs(signal + rng.normal(0, 3, shape) + 1j * rng.normal(0, 3, shape))  # magnitude: Rician noise
    array[2:4, 2:4, 2:4] = 150.0  # a bright speck in the background
    return Volume(array.astype(np.float32), grid), radius < 1.0


def test_n4_removes_a_smooth_multiplicative_bias(small_real_volume):
    volume = small_real_volume
    bias = smooth_bias(volume.grid)
    biased = volume.with_array((volume.array * bias).astype(np.float32))
    brain = foreground_mask(volume)
    white_matter = brain & (volume.array > np.percentile(volume.array[brain], 75))

    corrected = n4_correct(biased, shrink=3)
    assert corrected.grid.same_geometry(volume.grid) and corrected.array.dtype == np.float32
    before = coefficient_of_variation(biased.array[white_matter])
    after = coefficient_of_variation(corrected.array[white_matter])
    assert after < before / 3, (before, after)
    assert after < 1.5 * coefficient_of_variation(volume.array[white_matter])

    # The fitted field follows the true one (up to a constant factor) inside the brain.
    inside = brain & (volume.array > 0)
    residual = np.log(biased.array[inside] / corrected.array[inside]) - np.log(bias[inside])
    assert residual.std() < 0.5 * np.log(bias[inside]).std()
    assert np.array_equal(biased.array, (volume.array * bias).astype(np.float32))  # the input is not modified


def test_n4_bias_field_is_smooth_and_positive(small_real_volume):
    field = n4_bias_field(small_real_volume, shrink=4, iterations=(20, 20)).array
    assert field.shape == small_real_volume.shape and field.min() > 0
    assert np.abs(np.diff(np.log(field), axis=0)).max() < 0.05  # under 5 % per 4 mm voxel


def test_n4_refuses_negative_intensities_and_empty_masks(small_real_volume):
    with pytest.raises(InputError, match="non-negative"):
        n4_correct(small_real_volume.with_array(small_real_volume.array - 10.0))
    with pytest.raises(InputError, match="empty mask"):
        n4_correct(small_real_volume, mask=np.zeros(small_real_volume.shape, bool))


def test_foreground_mask_fills_cavities_and_drops_specks():
    volume, ellipsoid = synthetic_head()
    for method in ("percentile", "otsu", 50.0):
        mask = foreground_mask(volume, method)
        assert mask.dtype == bool and mask.shape == volume.shape
        assert (mask == ellipsoid).mean() > 0.99, method
        assert not mask[2:4, 2:4, 2:4].any()
    with pytest.raises(ValueError, match="method"):
        foreground_mask(volume, "median")


def test_foreground_mask_covers_a_real_head_and_not_the_background(shared_data: Path):
    volume = read_volume(shared_data / "thick" / "aniso_4x4x5.nii.gz")  # whole head with skull, 4x4x5 mm
    mask = foreground_mask(volume)
    values = volume.array.astype(np.float64)
    low, high = np.percentile(values, [2, 98])
    tissue = values > low + 0.3 * (high - low)
    assert mask[tissue].mean() > 0.98
    assert values[mask].mean() > 5 * values[~mask].mean()
    border = np.ones(volume.shape, bool)
    border[3:-3, 3:-3, :] = False
    assert mask[border].mean() < 0.05  # the in-plane edges of the field of view are background
    assert 0.1 < mask.mean() < 0.6


def test_mask_on_grid_brings_a_user_mask_onto_another_grid():
    volume, ellipsoid = synthetic_head()
    label = Volume(ellipsoid.astype(np.uint8) * 3, volume.grid)
    finer = resampled_grid(volume.grid, tuple(n * 2 for n in volume.shape))
    on_finer = mask_on_grid(label, finer)
    assert on_finer.shape == finer.shape
    assert np.array_equal(on_finer[::2, ::2, ::2], ellipsoid)  # each fine voxel lies in the coarse one
    elsewhere = Grid((10, 10, 10), (1.0, 1.0, 1.0), (500.0, 500.0, 500.0))
    with pytest.raises(InputError, match="does not overlap"):
        mask_on_grid(label, elsewhere)


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
