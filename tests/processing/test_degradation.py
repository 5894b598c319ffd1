"""Forward models from fine to coarse grids (MRISuperResLib.processing.degradation)."""

from __future__ import annotations

import numpy as np
import pytest

from MRISuperResLib.processing.degradation import (
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


def test_spec_from_dict_defaults_to_kspace_and_refuses_unknown_keys() -> None:
    assert DegradationSpec.from_dict(None) == DegradationSpec("kspace", 1.0)
    spec = DegradationSpec.from_dict({"kind": ["kspace", "kspace", "box"], "gap": 0.2, "noise": [0.01, 0.05]})
    assert spec.kinds == ("kspace", "kspace", "box") and spec.noise == (0.01, 0.05)
    assert DegradationSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="valid: kind, fwhm, gap, noise, bias"):
        DegradationSpec.from_dict({"kind": "box", "sigma": 1})


def test_box_profile_with_gap_averages_only_the_slice_core() -> None:
    line = np.arange(8, dtype=np.float32)  # two coarse slices of four fine voxels each
    volume = np.tile(line[None, None, :], (2, 2, 1))
    contiguous = degrade(volume, (2, 2, 2), DegradationSpec("box"))[0, 0]
    gapped = degrade(volume, (2, 2, 2), DegradationSpec("box", gap=0.5))[0, 0]
    np.testing.assert_allclose(contiguous, [1.5, 5.5], atol=1e-6)
    np.testing.assert_allclose(gapped, [1.5, 5.5], atol=1e-6)  # symmetric core: same mean for a ramp
    core = np.tile(np.array([0, 10, 10, 0, 0, 0, 0, 0], np.float32)[None, None, :], (2, 2, 1))
    assert degrade(core, (2, 2, 2), DegradationSpec("box", gap=0.5))[0, 0, 0] == pytest.approx(10.0)
    assert degrade(core, (2, 2, 2), DegradationSpec("box"))[0, 0, 0] == pytest.approx(5.0)


def test_per_axis_kinds_degrade_each_axis_with_its_own_profile() -> None:
    array = np.random.default_rng(3).normal(size=(8, 8, 16)).astype(np.float32)
    mixed = degrade(array, (4, 4, 4), DegradationSpec(("kspace", "kspace", "box")))
    expected = degrade(degrade(array, (4, 4, 16), DegradationSpec("kspace")), (4, 4, 4), DegradationSpec("box"))
    np.testing.assert_allclose(mixed, expected, atol=1e-5)


def test_gaussian_profile_is_wider_with_larger_fwhm() -> None:
    impulse = np.zeros((1, 1, 64), np.float32)
    impulse[0, 0, 31] = 1.0
    narrow = degrade(np.tile(impulse, (2, 2, 1)), (2, 2, 16), DegradationSpec("gaussian", 1.0))[0, 0]
    wide = degrade(np.tile(impulse, (2, 2, 1)), (2, 2, 16), DegradationSpec("gaussian", 3.0))[0, 0]
    assert np.count_nonzero(wide > 1e-3) > np.count_nonzero(narrow > 1e-3)


def test_simulate_is_reproducible_from_the_seed_and_noise_is_rician() -> None:
    from MRISuperResLib.processing.degradation import simulate

    array = np.full((32, 32, 32), 100.0, np.float32)
    spec = DegradationSpec("kspace", noise=(0.05, 0.05))
    first = simulate(array, (16, 16, 16), spec, np.random.default_rng(7))
    again = simulate(array, (16, 16, 16), spec, np.random.default_rng(7))
    other = simulate(array, (16, 16, 16), spec, np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # Magnitude of a constant signal plus complex noise: mean ~ sqrt(A^2 + sigma^2), std ~ sigma (high SNR).
    assert first.std() == pytest.approx(5.0, rel=0.15)
    assert first.min() >= 0


def test_background_noise_is_rayleigh_and_positive() -> None:
    from MRISuperResLib.processing.degradation import add_kspace_noise

    noisy = add_kspace_noise(np.zeros((24, 24, 24), np.float32), 2.0, np.random.default_rng(0))
    # Rayleigh mean = sigma * sqrt(pi / 2).
    assert noisy.mean() == pytest.approx(2.0 * np.sqrt(np.pi / 2), rel=0.05)


def test_bias_field_is_smooth_positive_and_bounded() -> None:
    from MRISuperResLib.processing.degradation import smooth_bias_field

    field = smooth_bias_field((40, 30, 20), 0.2, np.random.default_rng(1))
    assert field.shape == (40, 30, 20)
    assert field.min() >= 1 / 1.2 - 1e-6 and field.max() <= 1.2 + 1e-6
    assert np.abs(np.diff(field, axis=0)).max() < 0.05
