"""The box slice profile (MRISuperResLib.processing.degradation.box)."""

from __future__ import annotations

import numpy as np
import pytest

from MRISuperResLib.processing.degradation import DegradationSpec, box_downsample, degrade

Shape = tuple[int, int, int]


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
