"""Put an enhanced volume onto its reference's grid, in physical space, before scoring.

Scores compare voxels at the same place in the body, not at the same array index: a real low-resolution input
may be stored with its axes permuted or reversed, or on a grid whose extent differs slightly from the
reference's (``register --grid coarse:S`` of a reference whose size ``S`` does not divide).

* When every voxel centre of the result lies on a voxel centre of the reference (same spacing, axes a signed
  permutation, whole-voxel offsets: the usual case), the result is re-indexed exactly, without interpolation, and
  scored over the voxels both cover.
* Otherwise the result is resampled onto the reference grid with trilinear interpolation (SR and baseline alike)
  and scored over the reference voxels it covers.
* Grids that cover less than half of the reference are refused in one line: the pair is not registered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..imaging.volume import Grid, Volume

#: Tolerance, in voxels, for voxel centres to count as the same point (and axes as parallel).
VOXEL_TOLERANCE = 1e-3
#: Smallest fraction of the reference the result must cover to be scored.
MIN_COVERAGE = 0.5


@dataclass(frozen=True)
class Overlay:
    """Arrays on one block of the reference grid, ready to be compared voxel by voxel.

    Attributes:
        estimates: each input volume's values on the block (float32), in the order given.
        reference: the reference's values on the block.
        covered: voxels of the block the estimates cover (all true for an exact overlay).
        block: the block's index ranges ``((i0, i1), (j0, j1), (k0, k1))`` in the reference array.
        how: ``"same grid"``, ``"re-indexed"`` (axes permuted, reversed or offset) or ``"resampled (linear)"``.
    """

    estimates: tuple[np.ndarray, ...]
    reference: np.ndarray
    covered: np.ndarray
    block: tuple[tuple[int, int], ...]
    how: str


def _index_map(source: Grid, target: Grid) -> tuple[np.ndarray, np.ndarray]:
    """``A, b`` with ``target index = A @ source index + b`` (both continuous voxel indices)."""
    source_matrix = source.direction @ np.diag(source.spacing)
    target_inverse = np.linalg.inv(target.direction @ np.diag(target.spacing))
    return target_inverse @ source_matrix, target_inverse @ (np.asarray(source.origin) - np.asarray(target.origin))


def _exact_layout(source: Grid, target: Grid) -> tuple[list[int], list[int], list[int]] | None:
    """For each target axis: the source axis, its sign and the target index of the source's first voxel after
    the flip, when every source voxel centre is a target voxel centre; else ``None``."""
    matrix, offset = _index_map(source, target)
    rounded = np.rint(matrix)
    if np.abs(matrix - rounded).max() > VOXEL_TOLERANCE or np.abs(offset - np.rint(offset)).max() > VOXEL_TOLERANCE:
        return None
    if not (np.abs(rounded).sum(axis=0) == 1).all() or not (np.abs(rounded).sum(axis=1) == 1).all():
        return None
    axes = [int(np.argmax(np.abs(rounded[row]))) for row in range(3)]
    signs = [int(rounded[row, axes[row]]) for row in range(3)]
    starts = [int(np.rint(offset[row])) if signs[row] > 0 else int(np.rint(offset[row])) - (source.shape[axes[row]] - 1)
              for row in range(3)]
    return axes, signs, starts


def _describe(grid: Grid) -> str:
    return (f"{'x'.join(map(str, grid.shape))} voxels of {'x'.join(f'{s:.3g}' for s in grid.spacing)} mm at "
            f"({', '.join(f'{o:.1f}' for o in grid.origin)})")


def overlay_on_reference(estimates: list[Volume], reference: Volume, name: str) -> Overlay:
    """Bring volumes that share one grid (an SR and its baseline) onto ``reference``'s grid.

    Args:
        estimates: volumes on one common grid (e.g. the SR and the B-spline baseline of one run).
        reference: the high-resolution reference.
        name: the reference's name, for messages.

    Raises:
        InputError: the estimates cover less than ``MIN_COVERAGE`` of the reference.
    """
    grid = estimates[0].grid
    if grid.same_geometry(reference.grid, tolerance=1e-4 * float(min(reference.spacing))):
        every = np.ones(reference.shape, dtype=bool)
        blocks = tuple((0, n) for n in reference.shape)
        return Overlay(tuple(v.array.astype(np.float32) for v in estimates), reference.array, every, blocks,
                       "same grid")
    layout = _exact_layout(grid, reference.grid)
    if layout is not None:
        axes, signs, starts = layout
        block = tuple((max(0, s), min(n, s + grid.shape[a])) for s, n, a in zip(starts, reference.shape, axes))
        _check_coverage(int(np.prod([max(0, hi - lo) for lo, hi in block])), grid, reference, name)
        arrays = []
        for volume in estimates:
            array = np.transpose(volume.array, axes)
            array = np.flip(array, [row for row in range(3) if signs[row] < 0])
            cut = tuple(slice(lo - s, hi - s) for (lo, hi), s in zip(block, starts))
            arrays.append(np.ascontiguousarray(array[cut], dtype=np.float32))
        window = tuple(slice(lo, hi) for lo, hi in block)
        return Overlay(tuple(arrays), reference.array[window], np.ones(arrays[0].shape, dtype=bool), block,
                       "re-indexed")
    return _resampled(estimates, reference, name)


def _check_coverage(covered: int, grid: Grid, reference: Volume, name: str) -> None:
    fraction = covered / float(np.prod(reference.shape))
    if fraction < MIN_COVERAGE:
        raise InputError(
            f"the result does not overlay reference {name}: it covers {100 * fraction:.0f} % of it (result grid "
            f"{_describe(grid)}, reference {_describe(reference.grid)}); register the low-resolution input onto the "
            "reference first (mrisuperres register REFERENCE LOW OUT --grid coarse:S)"
        )


def _resampled(estimates: list[Volume], reference: Volume, name: str) -> Overlay:
    import SimpleITK as sitk

    from ..imaging.volume_io import grid_to_sitk_reference, to_sitk

    target = grid_to_sitk_reference(reference.grid)
    ones = estimates[0].with_array(np.ones(estimates[0].shape, dtype=np.float32))
    coverage = sitk.GetArrayFromImage(sitk.Resample(to_sitk(ones), target, sitk.Transform(), sitk.sitkLinear, 0.0,
                                                    sitk.sitkFloat32)).transpose(2, 1, 0)
    # Voxels whose interpolation stencil lies fully inside the result (no fade towards the default value).
    inside = coverage > 1.0 - 1e-4
    _check_coverage(int(inside.sum()), estimates[0].grid, reference, name)
    where = np.argwhere(inside)
    block = tuple((int(lo), int(hi) + 1) for lo, hi in zip(where.min(axis=0), where.max(axis=0)))
    window = tuple(slice(lo, hi) for lo, hi in block)
    arrays = []
    for volume in estimates:
        image = to_sitk(volume, volume.array.astype(np.float32))
        resampled = sitk.Resample(image, target, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        arrays.append(np.ascontiguousarray(sitk.GetArrayFromImage(resampled).transpose(2, 1, 0)[window]))
    return Overlay(tuple(arrays), reference.array[window], inside[window], block, "resampled (linear)")
