"""The classical baseline: resampling onto the fine grid (MRISuperResLib.processing.interpolation)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from helpers import oblique_grid, sample_smooth_function

from MRISuperResLib.imaging.geometry import upsampled_grid
from MRISuperResLib.processing.interpolation import bspline_upsample_volume, resample_to_grid
from MRISuperResLib.imaging.volume import Grid, Volume

#: Coarse voxels along each border left out of accuracy checks (B-spline mirror boundary conditions).
BORDER = 3


def interior(array: np.ndarray, scale: tuple[float, float, float]) -> np.ndarray:
    margins = [int(BORDER * s) for s in scale]
    return array[tuple(slice(m, n - m) for m, n in zip(margins, array.shape))]


@pytest.fixture(scope="module")
def coarse() -> Volume:
    grid = oblique_grid((16, 14, 12), spacing=(2.0, 2.5, 3.0))
    return Volume(sample_smooth_function(grid).astype(np.float32), grid)


def bspline_through_simpleitk(volume: Volume, grid: Grid) -> Volume:
    return resample_to_grid(volume, grid, "bspline")


@pytest.mark.parametrize("bspline_upsampler", [bspline_through_simpleitk, bspline_upsample_volume])
@pytest.mark.parametrize("scale", [(2.0, 2.0, 2.0), (1.0, 1.0, 4.0), (3.0, 3.0, 3.0), (1.5, 1.5, 1.5)])
def test_bspline_matches_the_function_at_fine_centres_better_than_linear(
    coarse: Volume, scale, bspline_upsampler: Callable[[Volume, Grid], Volume]
) -> None:
    fine = upsampled_grid(coarse.grid, scale)
    truth = sample_smooth_function(fine)
    bspline = bspline_upsampler(coarse, fine)
    assert bspline.grid is fine
    linear = resample_to_grid(coarse, fine, "linear")
    bspline_error = np.max(np.abs(interior(bspline.array - truth, scale)))
    linear_error = np.max(np.abs(interior(linear.array - truth, scale)))
    assert bspline_error < 0.25 * linear_error
    assert bspline_error < 0.5  # on a function of range ~120


@pytest.mark.parametrize("interpolator", ["bspline", "linear", "nearest"])
def test_resampled_volume_is_float32_on_the_requested_grid_with_metadata(coarse: Volume, interpolator: str) -> None:
    fine = upsampled_grid(coarse.grid, (2.0, 2.0, 2.0))
    tagged = Volume(coarse.array, coarse.grid, {"note": "kept"})
    result = resample_to_grid(tagged, fine, interpolator)
    assert result.grid is fine
    assert result.array.dtype == np.float32
    assert result.metadata == {"note": "kept"}


@pytest.mark.parametrize("interpolator", ["bspline", "linear", "nearest"])
def test_no_border_voxel_is_zero(coarse: Volume, interpolator: str) -> None:
    fine = upsampled_grid(coarse.grid, (3.0, 3.0, 3.0))
    result = resample_to_grid(coarse, fine, interpolator).array
    assert coarse.array.min() > 30.0
    faces = [result[0], result[-1], result[:, 0], result[:, -1], result[:, :, 0], result[:, :, -1]]
    assert min(float(face.min()) for face in faces) > 0.5 * float(coarse.array.min())


def test_nearest_on_the_same_grid_returns_the_input(coarse: Volume) -> None:
    result = resample_to_grid(coarse, coarse.grid, "nearest")
    np.testing.assert_array_equal(result.array, coarse.array)


def test_linear_resampling_is_exact_for_a_linear_function_in_the_interior() -> None:
    grid = oblique_grid((10, 9, 8), spacing=(1.5, 2.0, 2.5))
    indices = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in grid.shape), indexing="ij"), axis=-1)

    def linear(points: np.ndarray) -> np.ndarray:
        return 3.0 + points @ np.array([0.5, -0.25, 0.75])

    coarse = Volume(linear(grid.physical_points(indices)).astype(np.float32), grid)
    fine = upsampled_grid(grid, (2.0, 2.0, 2.0))
    fine_indices = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in fine.shape), indexing="ij"), axis=-1)
    result = resample_to_grid(coarse, fine, "linear").array
    truth = linear(fine.physical_points(fine_indices))
    np.testing.assert_allclose(result[1:-1, 1:-1, 1:-1], truth[1:-1, 1:-1, 1:-1], rtol=0, atol=1e-3)
