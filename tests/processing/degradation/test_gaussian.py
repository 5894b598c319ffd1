"""The Gaussian slice profile (MRISuperResLib.processing.degradation.gaussian)."""

from __future__ import annotations

import numpy as np

from MRISuperResLib.processing.degradation import DegradationSpec, degrade, gaussian_downsample


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


def test_gaussian_profile_is_wider_with_larger_fwhm() -> None:
    impulse = np.zeros((1, 1, 64), np.float32)
    impulse[0, 0, 31] = 1.0
    narrow = degrade(np.tile(impulse, (2, 2, 1)), (2, 2, 16), DegradationSpec("gaussian", 1.0))[0, 0]
    wide = degrade(np.tile(impulse, (2, 2, 1)), (2, 2, 16), DegradationSpec("gaussian", 3.0))[0, 0]
    assert np.count_nonzero(wide > 1e-3) > np.count_nonzero(narrow > 1e-3)
