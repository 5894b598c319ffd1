"""Forward models from fine to coarse grids (MRISuperResLib.degradation)."""

from __future__ import annotations

import numpy as np
import pytest

from MRISuperResLib.degradation import (
    DegradationSpec,
    box_downsample,
    degrade,
    fourier_resample,
    gaussian_downsample,
)

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


@pytest.mark.parametrize("kind", ["kspace", "box", "gaussian"])
@pytest.mark.parametrize("shape", [(8, 6, 5), (7, 10, 11), (16, 12, 3)])
def test_a_constant_volume_stays_constant(kind: str, shape: Shape) -> None:
    result = degrade(np.full((16, 12, 15), 3.7, np.float32), shape, DegradationSpec(kind))
    assert result.shape == shape
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, 3.7, rtol=0, atol=1e-5)


@pytest.mark.parametrize("factors", [(2, 2, 2), (1, 1, 4), (3, 2, 1)])
def test_box_downsample_equals_block_means_for_integer_factors(factors: Shape) -> None:
    shape = (4, 3, 5)
    fine_shape = tuple(n * f for n, f in zip(shape, factors))
    array = np.random.default_rng(5).normal(size=fine_shape).astype(np.float32)
    blocks = array.reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2]).mean(axis=(1, 3, 5))
    result = box_downsample(array, shape)
    assert result.shape == shape
    np.testing.assert_allclose(result, blocks, rtol=0, atol=1e-6)


def test_box_downsample_weights_partial_voxels_by_area() -> None:
    # 3 fine voxels -> 2 coarse ones: coarse voxel 0 covers fine voxel 0 and half of fine voxel 1.
    array = np.broadcast_to(np.array([0.0, 3.0, 6.0], np.float32)[:, None, None], (3, 2, 2))
    result = box_downsample(array, (2, 2, 2))
    np.testing.assert_allclose(result[:, 0, 0], [(0.0 + 0.5 * 3.0) / 1.5, (0.5 * 3.0 + 6.0) / 1.5], rtol=0, atol=1e-6)


def test_gaussian_downsample_of_a_linear_ramp_samples_coarse_centres() -> None:
    # Blurring keeps a linear ramp (away from the borders); sampling must happen at the coarse cell centres.
    fine = np.broadcast_to(np.arange(32, dtype=np.float32)[:, None, None], (32, 4, 4))
    result = gaussian_downsample(fine, (8, 4, 4), fwhm=1.0)
    expected = (np.arange(8) + 0.5) * 4 - 0.5
    np.testing.assert_allclose(result[2:-2, 0, 0], expected[2:-2], rtol=0, atol=1e-3)


def test_gaussian_fwhm_widens_the_blur() -> None:
    spike = np.zeros((32, 4, 4), np.float32)
    spike[15:17] = 1.0
    narrow = gaussian_downsample(spike, (8, 4, 4), fwhm=1.0)[:, 0, 0]
    wide = gaussian_downsample(spike, (8, 4, 4), fwhm=3.0)[:, 0, 0]
    assert wide.max() < narrow.max()
    assert wide[1] > narrow[1]


def test_degrade_refuses_a_shape_larger_than_the_input() -> None:
    with pytest.raises(ValueError, match="larger than the input"):
        degrade(np.zeros((8, 8, 8), np.float32), (8, 9, 8), DegradationSpec("box"))


def test_degrade_with_equal_shape_leaves_the_volume_alone() -> None:
    array = np.random.default_rng(6).normal(size=(6, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(degrade(array, array.shape, DegradationSpec("kspace")), array, rtol=0, atol=0)


def test_spec_refuses_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="kspace"):
        DegradationSpec("sinc")


def test_spec_from_dict_defaults_to_kspace_and_ignores_unknown_keys() -> None:
    assert DegradationSpec.from_dict(None) == DegradationSpec("kspace", 1.0)
    spec = DegradationSpec.from_dict({"kind": "gaussian", "fwhm": 2, "noise": 0.1})
    assert spec == DegradationSpec("gaussian", 2.0)
    assert DegradationSpec.from_dict(spec.to_dict()) == spec
