"""Preprocessing of training volumes: N4 bias-field correction, a foreground mask, cropping of empty background.

* :func:`n4_correct` removes the smooth multiplicative bias field of MRI with SimpleITK's N4 filter. The field is
  random from scan to scan, so a network cannot predict it and averages it out; correcting it on both resolutions
  matters, and at 7T it is paramount (seed 002, section 1.2.1). N4 runs on a shrunk copy and the fitted log
  field is then evaluated at full resolution, as SimpleITK's examples do.
* :func:`foreground_mask` finds the head (or the brain of a skull-stripped scan) by Otsu or a robust percentile
  threshold followed by morphology; it drives patch sampling and masked metrics. :func:`mask_on_grid` brings a
  user-supplied mask (a label volume) onto a volume's grid instead.
* :func:`crop_to_foreground` removes the empty background around the mask, keeping exact geometry, with sizes
  rounded to a multiple per axis so that a scale factor divides them; :func:`uncrop` pads back.

Arrays are indexed ``[i, j, k]``; geometry is LPS mm (see :mod:`MRISuperResLib.imaging.volume`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..imaging.volume import Grid, Volume
from ..imaging.volume_io import grid_to_sitk_reference, to_sitk

Slices = tuple[slice, slice, slice]


def n4_bias_field(
    volume: Volume,
    mask: np.ndarray | None = None,
    *,
    shrink: int | Sequence[int] = 4,
    iterations: Sequence[int] = (50, 50, 30, 20),
    control_points: int = 4,
    spline_order: int = 3,
    convergence: float = 1e-3,
    fwhm: float = 0.15,
    bins: int = 200,
    wiener_noise: float = 0.01,
) -> Volume:
    """The multiplicative bias field that N4 finds in ``volume`` (float32, about 1 inside the mask).

    Args:
        volume: the scan; voxels must be non-negative (magnitude images).
        mask: boolean array on the volume's grid where the field is fitted (e.g. the head or brain); by
            default :func:`foreground_mask` with its defaults. Voxels <= 0 are left out either way (N4 fits
            the log intensity).
        shrink: N4 runs on the volume shrunk by this factor (one, or one per axis ``i, j, k``); the fitted
            B-spline field is then evaluated on the full grid. Larger is faster; 4 suits 1 mm scans.
        iterations: maximum iterations per fitting level; the number of entries is the number of levels
            (the B-spline mesh doubles at each).
        control_points: B-spline control points per axis at the first level (at least ``spline_order + 1``).
        spline_order: order of the B-spline field.
        convergence: stop a level when the change of the field falls below this.
        fwhm: full width at half maximum of the Gaussian that models the field's blur of the histogram.
        bins: histogram bins of the sharpening step.
        wiener_noise: noise term of the Wiener deconvolution of the histogram (seed 002 uses 0.1).

    Two-pass correction and the settings of a config: :mod:`MRISuperResLib.processing.n4`.
    """
    if np.any(volume.array < 0):
        raise InputError("N4 bias-field correction needs non-negative intensities (a magnitude image)")
    mask = foreground_mask(volume) if mask is None else _check_mask(mask, volume)
    mask = mask & (volume.array > 0)
    if not mask.any():
        raise InputError("N4 bias-field correction has an empty mask; give a mask that covers the anatomy")
    image = to_sitk(volume, volume.array.astype(np.float32))
    mask_image = to_sitk(volume, mask.astype(np.uint8))
    factors = [int(shrink)] * 3 if np.isscalar(shrink) else [int(f) for f in shrink]  # type: ignore[arg-type]
    # Never shrink an axis below a few voxels (thick-slice scans have few slices).
    factors = [max(1, min(f, n // 4)) for f, n in zip(factors, volume.shape)]
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(n) for n in iterations])
    corrector.SetNumberOfControlPoints([int(control_points)] * 3)
    corrector.SetSplineOrder(int(spline_order))
    corrector.SetConvergenceThreshold(float(convergence))
    corrector.SetBiasFieldFullWidthAtHalfMaximum(float(fwhm))
    corrector.SetNumberOfHistogramBins(int(bins))
    corrector.SetWienerFilterNoise(float(wiener_noise))
    corrector.Execute(sitk.Shrink(image, factors), sitk.Shrink(mask_image, factors))
    log_field = corrector.GetLogBiasFieldAsImage(image)
    field = np.exp(sitk.GetArrayFromImage(log_field).transpose(2, 1, 0)).astype(np.float32)
    return volume.with_array(np.ascontiguousarray(field))


def n4_correct(
    volume: Volume,
    mask: np.ndarray | None = None,
    shrink: int | Sequence[int] = 4,
    iterations: Sequence[int] = (50, 50, 30, 20),
    **options: float,
) -> Volume:
    """``volume`` divided by its N4 bias field (float32, same grid); see :func:`n4_bias_field` for the options.

    The field is smooth and defined everywhere, so the whole volume is corrected, not only the mask. The input
    is not modified. For 7T scans the thesis (seed 002) runs it twice: once on the whole head, then again with a
    brain mask.
    """
    field = n4_bias_field(volume, mask, shrink=shrink, iterations=iterations, **options)  # type: ignore[arg-type]
    corrected = volume.array.astype(np.float32) / field.array
    return volume.with_array(corrected)


def foreground_mask(
    volume: Volume,
    method: str | float = "percentile",
    *,
    fraction: float = 0.1,
    opening_mm: float = 0.0,
    closing_mm: float = 4.0,
    fill_holes: bool = True,
    largest_component: bool = True,
) -> np.ndarray:
    """A boolean mask of the head (or brain) on the volume's grid, from a threshold and morphology.

    Args:
        volume: any scalar volume.
        method: ``"otsu"`` (Otsu's threshold, 200 bins; separates dark background from tissue),
            ``"percentile"`` (``p2 + fraction * (p98 - p2)`` of the intensities, FSL BET's robust threshold) or
            a number: an absolute threshold in the volume's units. Voxels above the threshold are foreground.
        fraction: for ``"percentile"``, where between the 2nd and 98th percentiles the threshold sits.
        opening_mm: radius (mm) of a binary opening that detaches thin bright structures first (0: none).
        closing_mm: radius (mm) of a binary closing that bridges dark gaps (CSF, sulci) in the foreground.
        fill_holes: fill cavities that do not reach the volume's border (ventricles).
        largest_component: keep only the largest connected component (drops noise specks and stray objects).

    Returns:
        A boolean array indexed ``[i, j, k]``.
    """
    image = to_sitk(volume, volume.array.astype(np.float32))
    if isinstance(method, str) and method == "otsu":
        mask = sitk.OtsuThreshold(image, 0, 1, 200)
    else:
        threshold = _threshold(volume.array, method, fraction)
        mask = sitk.Cast(image > threshold, sitk.sitkUInt8)
    if opening_mm > 0:
        mask = sitk.BinaryMorphologicalOpening(mask, _radius(volume.grid, opening_mm), sitk.sitkBall)
    if largest_component:
        mask = _largest_component(mask)
    if closing_mm > 0:
        mask = sitk.BinaryMorphologicalClosing(mask, _radius(volume.grid, closing_mm), sitk.sitkBall)
    if fill_holes:
        mask = sitk.BinaryFillhole(mask)
    return np.ascontiguousarray(sitk.GetArrayFromImage(mask).transpose(2, 1, 0) > 0)


def _threshold(array: np.ndarray, method: str | float, fraction: float) -> float:
    if method == "percentile":
        low, high = np.percentile(array, [2.0, 98.0])
        return float(low + fraction * (high - low))
    if isinstance(method, (int, float)) and not isinstance(method, bool):
        return float(method)
    raise ValueError(f"method must be 'otsu', 'percentile' or a number, got {method!r}")


def _radius(grid: Grid, radius_mm: float) -> list[int]:
    return [max(1, int(round(radius_mm / s))) for s in grid.spacing]


def _largest_component(mask: sitk.Image) -> sitk.Image:
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    return sitk.Cast(labels == 1, sitk.sitkUInt8)


def mask_on_grid(mask: Volume, grid: Grid) -> np.ndarray:
    """A user-supplied mask or label volume (non-zero = inside) brought onto ``grid`` by nearest neighbour.

    Raises:
        InputError: when the mask has no voxel inside ``grid`` (it belongs to another scan or frame).
    """
    image = to_sitk(mask, (mask.array != 0).astype(np.uint8))
    resampled = sitk.Resample(image, grid_to_sitk_reference(grid), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    array = np.ascontiguousarray(sitk.GetArrayFromImage(resampled).transpose(2, 1, 0) > 0)
    if not array.any():
        raise InputError("the mask does not overlap the volume; give a mask drawn on this scan (same frame)")
    return array


def crop_to_foreground(
    volume: Volume,
    mask: np.ndarray,
    margin_mm: float = 5.0,
    multiple: int | Sequence[int] = (1, 1, 1),
) -> tuple[Volume, Slices]:
    """Crop ``volume`` to the bounding box of ``mask`` plus a margin, keeping exact geometry.

    Voxel ``(0, 0, 0)`` of the crop is at the physical point of voxel ``(i0, j0, k0)`` of the original, so the
    crop overlays it exactly (same spacing and direction; the origin moves along the index axes).

    Args:
        volume: the volume to crop (not modified).
        mask: boolean array on the volume's grid; its bounding box is kept.
        margin_mm: background kept around the box on every side (mm; rounded up to whole voxels).
        multiple: the crop's size along each axis ``i, j, k`` is a multiple of this (e.g. the scale factor, so
            that the low-resolution grid divides it). The box grows about its centre, shifted to stay inside the
            volume; when the volume itself is too small, the largest multiple that fits is used.

    Returns:
        The cropped volume and the index slices ``(si, sj, sk)`` into the original (apply them to masks or the
        paired volume on the same grid; :func:`uncrop` reverses the crop).

    Raises:
        InputError: the mask is empty, or an axis is shorter than its multiple.
    """
    mask = _check_mask(mask, volume)
    if not mask.any():
        raise InputError("the foreground mask is empty; nothing to crop to (check the threshold or the mask)")
    multiples = [int(multiple)] * 3 if np.isscalar(multiple) else [int(m) for m in multiple]  # type: ignore[arg-type]
    if len(multiples) != 3 or min(multiples) < 1:
        raise ValueError(f"multiple must be one or three positive integers, got {multiple!r}")
    slices = []
    for axis, (n, spacing, m) in enumerate(zip(volume.shape, volume.spacing, multiples)):
        if n < m:
            raise InputError(f"the volume has {n} voxels along axis {'ijk'[axis]}, fewer than the multiple {m}")
        occupied = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        pad = int(np.ceil(margin_mm / spacing - 1e-9))
        start, stop = max(0, occupied[0] - pad), min(n, occupied[-1] + 1 + pad)
        size = min(-(-(stop - start) // m) * m, n // m * m)
        start = min(max(0, (start + stop - size) // 2), n - size)
        slices.append(slice(int(start), int(start + size)))
    region = tuple(slices)
    offset = np.array([s.start for s in region], dtype=np.float64)
    grid = Grid(tuple(s.stop - s.start for s in region), volume.spacing,
                tuple(volume.grid.physical_points(offset)), volume.grid.direction)
    return volume.with_grid(np.ascontiguousarray(volume.array[region]), grid), region  # type: ignore[index]


def uncrop(cropped: Volume, grid: Grid, slices: Slices, fill: float = 0.0) -> Volume:
    """Put ``cropped`` (from :func:`crop_to_foreground`) back into the full ``grid``, ``fill`` elsewhere."""
    array = np.full(grid.shape, fill, dtype=cropped.array.dtype)
    array[slices] = cropped.array
    return cropped.with_grid(array, grid)


def _check_mask(mask: np.ndarray, volume: Volume) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != volume.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the volume shape {volume.shape}")
    return mask.astype(bool, copy=False)
