"""K-space truncation and Fourier resampling (MRISuperResLib.processing.degradation.kspace)."""

from __future__ import annotations

import numpy as np
import pytest

from MRISuperResLib.processing.degradation import fourier_resample

Shape = tuple[int, int, int]


def cell_centres(size: int) -> np.ndarray:
    """Cell-centred sample positions of ``size`` voxels over the unit period ``[0, 1)``."""
    return (np.arange(size) + 0.5) / size


def band_limited(shape: Shape, frequencies: Shape = (2, 2, 2)) -> np.ndarray:
    """A smooth periodic function of period 1 on each axis with the given highest frequency per axis,
    sampled at the cell centres of ``shape`` (float64)."""
    x, y, z = np.meshgrid(*(cell_centres(n) for n in shape), indexing="ij")
    fx, fy, fz = frequencies
    return (
        np.cos(2 * np.pi * fx * x + 0.3) * (1.0 + 0.5 * np.sin(2 * np.pi * fy * y))
        + 0.3 * np.cos(2 * np.pi * fz * z + 1.0)
        + 0.2 * np.sin(2 * np.pi * (x + y - z))
        + 1.5
    )


@pytest.mark.parametrize(
    ("fine", "coarse", "frequencies"),
    [
        ((24, 24, 24), (12, 12, 12), (5, 4, 3)),  # shrink by 2, even sizes
        ((27, 21, 15), (9, 7, 5), (4, 3, 2)),  # shrink by 3, odd sizes
        ((16, 20, 12), (16, 10, 3), (5, 4, 1)),  # mixed: one axis untouched
        ((12, 10, 9), (30, 25, 27), (5, 4, 4)),  # enlarge (zero-filling)
        ((11, 13, 10), (17, 19, 23), (5, 6, 4)),  # enlarge by non-integer ratios
    ],
)
def test_fourier_resample_samples_band_limited_functions_exactly(fine: Shape, coarse: Shape,
                                                                 frequencies: Shape) -> None:
    result = fourier_resample(band_limited(fine, frequencies), coarse)
    assert result.shape == coarse
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, band_limited(coarse, frequencies), rtol=0, atol=1e-5)


def test_fourier_resample_would_show_a_half_voxel_shift() -> None:
    # Guards the exactness test above: sampling the same function half a coarse voxel off is far from exact.
    coarse = (12, 12, 12)
    result = fourier_resample(band_limited((24, 24, 24), (5, 4, 3)), coarse)
    x, y, z = np.meshgrid(*(np.arange(n) / n for n in coarse), indexing="ij")
    shifted = (
        np.cos(2 * np.pi * 5 * x + 0.3) * (1.0 + 0.5 * np.sin(2 * np.pi * 4 * y))
        + 0.3 * np.cos(2 * np.pi * 3 * z + 1.0)
        + 0.2 * np.sin(2 * np.pi * (x + y - z))
        + 1.5
    )
    assert np.max(np.abs(result - shifted)) > 0.1


def test_shrinking_then_zero_filling_reproduces_a_band_limited_volume() -> None:
    fine = band_limited((24, 26, 18), (5, 6, 4))
    round_trip = fourier_resample(fourier_resample(fine, (12, 13, 9)), fine.shape)
    np.testing.assert_allclose(round_trip, fine, rtol=0, atol=1e-5)


def test_zero_filling_then_shrinking_reproduces_a_random_odd_sized_volume() -> None:
    coarse = np.random.default_rng(3).normal(size=(11, 9, 7))
    fine = fourier_resample(coarse, (22, 27, 21))
    np.testing.assert_allclose(fourier_resample(fine, coarse.shape), coarse, rtol=0, atol=1e-5)


def test_fourier_resample_keeps_the_mean() -> None:
    array = np.random.default_rng(4).normal(5.0, 2.0, (20, 18, 16))
    assert fourier_resample(array, (10, 9, 8)).mean() == pytest.approx(array.mean(), abs=1e-5)
