"""Bias field and k-space noise of simulated inputs (MRISuperResLib.processing.degradation.simulate)."""

from __future__ import annotations

import numpy as np
import pytest

from MRISuperResLib.processing.degradation import DegradationSpec


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
