from __future__ import annotations

import numpy as np
import pytest
import torch

from MRISuperResLib.processing.bspline import bspline_upsample, polyphase_kernels
from MRISuperResLib.imaging.geometry import upsampled_grid
from MRISuperResLib.processing.interpolation import bspline_upsample_volume, resample_to_grid
from MRISuperResLib.imaging.volume import Grid, Volume


@pytest.mark.parametrize(
    ("shape", "factors"),
    [((20, 24, 16), (2, 2, 2)), ((20, 24, 16), (1, 1, 4)), ((9, 5, 3), (3, 2, 2)), ((3, 7, 30), (2, 3, 1))],
)
def test_torch_bspline_matches_simpleitk_everywhere(shape, factors) -> None:
    array = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    grid = Grid(shape, (1.0, 1.2, 2.0), (3.0, -4.0, 5.0))
    reference = resample_to_grid(Volume(array, grid), upsampled_grid(grid, factors)).array
    result = bspline_upsample(torch.from_numpy(array)[None, None], factors)[0, 0].numpy()
    assert result.shape == reference.shape
    np.testing.assert_allclose(result, reference, atol=5e-6)


def test_each_phase_kernel_preserves_constants() -> None:
    for factor in (1, 2, 3, 4, 5):
        np.testing.assert_allclose(polyphase_kernels(factor).sum(axis=1), 1.0, atol=1e-9)


def test_factor_one_is_identity_and_batches_are_independent() -> None:
    x = torch.randn(2, 1, 6, 7, 8)
    assert torch.allclose(bspline_upsample(x, (1, 1, 1)), x)
    both = bspline_upsample(x, (2, 2, 2))
    assert torch.allclose(both[1:], bspline_upsample(x[1:], (2, 2, 2)))


def test_volume_helper_falls_back_to_simpleitk_for_fractional_factors() -> None:
    array = np.random.default_rng(2).normal(size=(10, 10, 10)).astype(np.float32)
    volume = Volume(array, Grid((10, 10, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    grid = upsampled_grid(volume.grid, (1.5, 1.5, 1.5))
    np.testing.assert_allclose(bspline_upsample_volume(volume, grid).array,
                               resample_to_grid(volume, grid).array, atol=1e-6)
