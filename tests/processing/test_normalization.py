"""Clipped-percentile normalisation and casting back (MRISuperResLib.processing.normalization)."""

from __future__ import annotations

import numpy as np
import pytest

from MRISuperResLib.errors import InputError
from MRISuperResLib.processing.normalization import PercentileNormalizer, cast_like_input


def shuffled_ramp(count: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """The values ``0, 1, ..., count - 1`` in random order as a 3D array (percentile p is ``p/100 * (count-1)``)."""
    values = np.random.default_rng(seed).permutation(count).astype(np.float32)
    return values.reshape(shape)


def test_fit_uses_the_1st_and_99th_percentiles() -> None:
    array = shuffled_ramp(1001, (7, 11, 13))
    normalizer = PercentileNormalizer.fit(array)
    assert normalizer.low == pytest.approx(10.0, abs=1e-9)
    assert normalizer.high == pytest.approx(990.0, abs=1e-9)
    assert normalizer.scale == pytest.approx(980.0, abs=1e-9)


def test_fit_uses_the_requested_percentiles() -> None:
    array = shuffled_ramp(1001, (7, 11, 13))
    normalizer = PercentileNormalizer.fit(array, 5.0, 80.0)
    assert (normalizer.low, normalizer.high) == pytest.approx((50.0, 800.0), abs=1e-9)


def test_fit_ignores_outliers_beyond_the_percentiles() -> None:
    array = shuffled_ramp(1001, (7, 11, 13))
    array[array == 1000.0] = 1e9
    assert PercentileNormalizer.fit(array).high == pytest.approx(990.0, abs=1e-9)


def test_fit_within_a_mask_uses_only_masked_voxels() -> None:
    array = shuffled_ramp(1001, (7, 11, 13))
    mask = array <= 100
    normalizer = PercentileNormalizer.fit(array, 0.0, 100.0, mask=mask)
    assert (normalizer.low, normalizer.high) == (0.0, 100.0)


def test_fit_falls_back_to_the_full_range_when_percentiles_coincide() -> None:
    array = np.zeros((10, 10, 10), np.float32)
    array[0, 0, :3] = [5.0, 7.0, 9.0]
    normalizer = PercentileNormalizer.fit(array)
    assert (normalizer.low, normalizer.high) == (0.0, 9.0)


def test_fit_refuses_a_constant_volume() -> None:
    with pytest.raises(InputError, match="constant"):
        PercentileNormalizer.fit(np.full((4, 5, 6), 3.5, np.float32))


def test_fit_refuses_an_empty_mask() -> None:
    with pytest.raises(InputError, match="mask"):
        PercentileNormalizer.fit(np.arange(8.0).reshape(2, 2, 2), mask=np.zeros((2, 2, 2), bool))


@pytest.mark.parametrize(("lower", "upper"), [(50.0, 50.0), (60.0, 40.0), (-1.0, 99.0), (1.0, 101.0)])
def test_fit_refuses_invalid_percentiles(lower: float, upper: float) -> None:
    with pytest.raises(ValueError, match="percentiles"):
        PercentileNormalizer.fit(np.arange(8.0).reshape(2, 2, 2), lower, upper)


def test_normalize_maps_low_to_zero_and_high_to_one() -> None:
    normalizer = PercentileNormalizer(low=100.0, high=612.0)
    out = normalizer.normalize(np.array([100.0, 356.0, 612.0]))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [0.0, 0.5, 1.0])


def test_denormalize_inverts_unclipped_normalize() -> None:
    rng = np.random.default_rng(1)
    array = rng.normal(300.0, 200.0, (9, 8, 7)).astype(np.float32)
    normalizer = PercentileNormalizer.fit(array)
    normalised = normalizer.normalize(array, clip=False)
    assert normalised.min() < 0.0 and normalised.max() > 1.0
    back = normalizer.denormalize(normalised)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, array, rtol=0, atol=1e-6 * float(np.abs(array).max()))


def test_normalize_inverts_denormalize() -> None:
    normalizer = PercentileNormalizer(low=-37.5, high=1200.25)
    values = np.linspace(-0.5, 1.5, 101, dtype=np.float32)
    np.testing.assert_allclose(normalizer.normalize(normalizer.denormalize(values), clip=False), values,
                               rtol=0, atol=1e-6)


def test_clip_limits_the_normalised_range_to_zero_one() -> None:
    normalizer = PercentileNormalizer(low=10.0, high=20.0)
    array = np.array([-100.0, 5.0, 10.0, 15.0, 20.0, 25.0, 1e6])
    np.testing.assert_array_equal(normalizer.normalize(array), [0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(normalizer.normalize(array, clip=False)[[0, -1]], [-11.0, 99999.0])


def test_normalize_does_not_modify_its_input() -> None:
    array = np.array([-100.0, 15.0, 1e6], np.float32)
    copy = array.copy()
    PercentileNormalizer(low=10.0, high=20.0).normalize(array)
    np.testing.assert_array_equal(array, copy)


def test_cast_like_input_rounds_and_clips_to_uint8() -> None:
    out = cast_like_input(np.array([-5.0, 0.4, 0.6, 127.5, 254.6, 300.0], np.float32), np.uint8)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [0, 0, 1, 128, 255, 255])


def test_cast_like_input_rounds_and_clips_to_int16() -> None:
    out = cast_like_input(np.array([-40000.0, -1.6, -0.4, 2.5, 3.5, 40000.0], np.float32), np.int16)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, [-32768, -2, 0, 2, 4, 32767])


def test_cast_like_input_keeps_float_values() -> None:
    array = np.array([-1.25, 3.75], np.float32)
    out = cast_like_input(array, np.float64)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, array)
