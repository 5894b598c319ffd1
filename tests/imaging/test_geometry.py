"""Scale parsing and cell-centred grids (MRISuperResLib.imaging.geometry, MRISuperResLib.imaging.volume.Grid)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import oblique_grid

from MRISuperResLib.errors import MRISuperResError
from MRISuperResLib.imaging.geometry import effective_scale, parse_scale, resampled_grid, upsampled_grid
from MRISuperResLib.imaging.volume import LPS_TO_RAS, Grid


def extent_corners(grid: Grid) -> np.ndarray:
    """LPS positions of the outer corners of the first and last voxels (index -1/2 and n - 1/2)."""
    low = np.full(3, -0.5)
    high = np.asarray(grid.shape, dtype=np.float64) - 0.5
    return grid.physical_points(np.stack([low, high]))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2", (2.0, 2.0, 2.0)),
        (2, (2.0, 2.0, 2.0)),
        (2.5, (2.5, 2.5, 2.5)),
        ("1,1,4", (1.0, 1.0, 4.0)),
        ("1x1x4", (1.0, 1.0, 4.0)),
        ("1X1X4", (1.0, 1.0, 4.0)),
        ("1.5, 1.5, 3", (1.5, 1.5, 3.0)),
        ("3.2", (3.2, 3.2, 3.2)),
        ((1, 1, 4), (1.0, 1.0, 4.0)),
        ([1.0, 2.0, 3.0], (1.0, 2.0, 3.0)),
    ],
)
def test_parse_scale_accepts_one_or_three_factors(text, expected) -> None:
    scale = parse_scale(text)
    assert scale == expected
    assert all(isinstance(s, float) for s in scale)


@pytest.mark.parametrize("text", ["abc", "", "1,2", "1,2,3,4", "nan", "inf", (1, 2), None, True, {"a": 1},
                                  ("a", "b", "c"), np.array([1.0, 1.0])])
def test_parse_scale_rejects_malformed_text(text) -> None:
    with pytest.raises(MRISuperResError, match="not understood"):
        parse_scale(text)


def test_parse_scale_says_that_iso_needs_the_input() -> None:
    with pytest.raises(MRISuperResError, match="'iso' depends on the input's voxels"):
        parse_scale("iso")


@pytest.mark.parametrize("text", ["0.5", "1,1,0.5", 0, "-2"])
def test_parse_scale_rejects_factors_below_one(text) -> None:
    with pytest.raises(MRISuperResError, match="below 1"):
        parse_scale(text)


@pytest.mark.parametrize(
    ("scale", "shape", "expected_shape"),
    [
        ((2.0, 2.0, 2.0), (7, 6, 5), (14, 12, 10)),
        ((1.0, 1.0, 4.0), (7, 6, 5), (7, 6, 20)),
        ((3.2, 3.2, 3.2), (10, 7, 5), (32, 22, 16)),
    ],
)
def test_upsampled_grid_is_cell_centred_over_the_same_extent(scale, shape, expected_shape) -> None:
    grid = oblique_grid(shape, spacing=(0.75, 1.25, 3.0))
    fine = upsampled_grid(grid, scale)

    assert fine.shape == expected_shape
    effective = np.asarray(expected_shape, dtype=np.float64) / np.asarray(shape)
    np.testing.assert_allclose(effective_scale(grid, fine), effective, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fine.spacing, np.asarray(grid.spacing) / effective, rtol=0, atol=1e-12)
    shift_mm = (1.0 / effective - 1.0) / 2.0 * np.asarray(grid.spacing)
    expected_origin = np.asarray(grid.origin) + grid.direction @ shift_mm
    np.testing.assert_allclose(fine.origin, expected_origin, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(fine.direction, grid.direction)
    np.testing.assert_allclose(extent_corners(fine), extent_corners(grid), rtol=0, atol=1e-12)


def test_upsampled_grid_of_integer_scale_puts_fine_voxels_symmetrically_inside_coarse_ones() -> None:
    grid = oblique_grid((4, 4, 4))
    fine = upsampled_grid(grid, (2.0, 2.0, 2.0))
    # The two fine voxels 0 and 1 along each axis straddle coarse voxel 0's centre symmetrically.
    first_pair = fine.physical_points(np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    np.testing.assert_allclose(first_pair.mean(axis=0), grid.origin, rtol=0, atol=1e-12)


def test_upsampled_grid_with_scale_one_is_the_same_grid() -> None:
    grid = oblique_grid((5, 6, 7))
    assert upsampled_grid(grid, (1.0, 1.0, 1.0)).same_geometry(grid, tolerance=1e-12)


@pytest.mark.parametrize("scale", [(2.0, 2.0, 2.0), (1.0, 1.0, 4.0), (3.2, 3.2, 3.2)])
def test_resampled_grid_back_to_the_coarse_shape_restores_the_original_grid(scale) -> None:
    grid = oblique_grid((10, 7, 5))
    fine = upsampled_grid(grid, scale)
    back = resampled_grid(fine, grid.shape)
    assert back.same_geometry(grid, tolerance=1e-12)


def test_ijk_to_ras_is_lps_with_first_two_axes_negated() -> None:
    grid = oblique_grid((5, 6, 7))
    ijk = np.array([1.0, 2.0, 3.0, 1.0])
    lps = grid.ijk_to_lps() @ ijk
    ras = grid.ijk_to_ras() @ ijk
    np.testing.assert_allclose(ras[:3], lps[:3] * np.array([-1.0, -1.0, 1.0]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(lps[:3], grid.physical_points(ijk[:3]), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(LPS_TO_RAS @ LPS_TO_RAS, np.eye(4))


def test_ijk_to_ras_origin_is_the_centre_of_voxel_zero() -> None:
    grid = oblique_grid((5, 6, 7))
    ras_origin = grid.ijk_to_ras()[:3, 3]
    np.testing.assert_allclose(ras_origin, np.asarray(grid.origin) * np.array([-1.0, -1.0, 1.0]), rtol=0, atol=0)


def test_grid_from_ijk_to_ras_round_trips() -> None:
    grid = oblique_grid((5, 6, 7), spacing=(0.75, 1.25, 3.0))
    rebuilt = Grid.from_ijk_to_ras(grid.shape, grid.ijk_to_ras())
    assert rebuilt.shape == grid.shape
    np.testing.assert_allclose(rebuilt.spacing, grid.spacing, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rebuilt.origin, grid.origin, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rebuilt.direction, grid.direction, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rebuilt.ijk_to_ras(), grid.ijk_to_ras(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(40, 40, 40), (20, 20, 80), (30, 50, 20), (20, 20, 20)])
def test_fine_mask_matches_trilinear_interpolation_with_cell_centred_corners(shape) -> None:
    import torch

    from MRISuperResLib.imaging.geometry import fine_mask

    rng = np.random.default_rng(3)
    mask = np.zeros((20, 20, 20), bool)
    mask[4:15, 3:17, 5:18] = True
    mask |= rng.random(mask.shape) > 0.95
    values = torch.nn.functional.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], size=shape,
                                             mode="trilinear", align_corners=False)[0, 0].numpy()
    carried = fine_mask(mask, shape)
    assert carried.shape == shape
    decided = np.abs(values - 0.5) > 1e-5  # exactly half inside: counted inside by fine_mask, either way by torch
    np.testing.assert_array_equal(carried[decided], values[decided] > 0.5)
    assert np.all(carried[~decided])
