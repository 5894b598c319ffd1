"""Head and brain masks (skull stripping) by thresholds and morphology, with no trained weights.

Seed 000 skull-strips its pairs before registering them and seed 002 masks the brain for its second N4 pass and
for registration; training samples patches and the evaluation computes masked metrics inside such masks. Deep
skull strippers (SynthStrip, HD-BET) need downloaded weights, which the engine never fetches at run time, so this
module uses the classical morphological pipeline, written with SimpleITK (already an engine dependency, also
inside 3D Slicer):

* :func:`foreground_mask`: one threshold (Otsu, FSL BET's robust percentile, or a number) and morphology; the
  quick head finder that enhance, evaluation and training sampling use. :func:`mask_on_grid` brings a
  user-supplied mask (a label volume) onto a volume's grid instead.
* :func:`head_mask`: Otsu's threshold of the whole volume (dark air against tissue), a closing, hole filling (the
  dark skull inside the scalp) and the largest connected component.
* :func:`brain_mask`: inside the head, a second Otsu threshold separates tissue (grey and white matter, scalp)
  from dark voxels (bone, air, and CSF in T1w); an erosion of a few mm cuts the thin bridges between the brain and
  the scalp, the largest remaining component is the brain, a dilation by the same radius restricted to tissue
  gives it its shape back, and a closing plus hole filling bring back sulci and ventricles (the mask keeps the CSF,
  as seed 002's first SynthStrip run does). When the result is implausibly large for a brain (the scalp still
  attached), the erosion grows (:data:`EROSION_STEPS_MM`). On a scan that is already skull-stripped the brain
  mask is about its head mask.

Erosion, dilation and closing are Euclidean in mm, from signed Maurer distance maps, so they cost the same for
any radius and respect anisotropic voxels. Masks are boolean arrays indexed ``[i, j, k]`` on the volume's grid.
The method suits T1w and T2w heads of adults; it does not separate the brain from the dura and may keep some
orbit fat or neck where these touch the brain: use a mask from a dedicated tool when the boundary matters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..imaging.volume import Grid, Volume
from ..imaging.volume_io import grid_to_sitk_reference, to_sitk

#: Erosion radii (mm) tried in turn until the brain mask is no larger than ``max_brain_ml``.
EROSION_STEPS_MM = (4.0, 6.0, 8.0, 10.0, 12.0)

#: Radius (mm) of the closing that bridges the sulci of the tissue mask before the erosion.
SULCUS_CLOSING_MM = 2.0

#: Kinds of mask that :func:`mask_of_kind` makes.
MASK_KINDS = ("head", "brain")


def head_mask(volume: Volume, closing_mm: float = 4.0, working_mm: float = 2.0) -> np.ndarray:
    """The head (everything that is not background air) of ``volume``: boolean ``[i, j, k]`` array.

    Otsu threshold of the whole volume, a closing of ``closing_mm``, hole filling (in 3D and slice by slice, so
    the dark skull and sinuses inside the scalp are filled even where the neck leaves the volume open), then the
    largest connected component. Found on about ``working_mm`` voxels like :func:`brain_mask` (0: on the volume's
    own grid).

    Raises:
        InputError: the volume is constant or the mask is empty.
    """
    return _on_working_grid(volume, working_mm, lambda array, spacing: _head_on_grid(array, spacing, closing_mm))


def _head_on_grid(array: np.ndarray, spacing: Sequence[float], closing_mm: float = 4.0) -> np.ndarray:
    head = largest_component(fill_holes(close(array > otsu_threshold(array), spacing, closing_mm)))
    if not head.any():
        raise InputError("the head mask is empty: the volume has no voxel above its Otsu threshold")
    return head


def brain_mask(
    volume: Volume,
    *,
    erosion_mm: float | Sequence[float] = EROSION_STEPS_MM,
    closing_mm: float = 6.0,
    max_brain_ml: float = 1800.0,
    working_mm: float = 2.0,
) -> np.ndarray:
    """The brain (with its CSF) of a head scan: boolean ``[i, j, k]`` array on the volume's grid.

    The mask is found on a copy block-averaged to about ``working_mm`` voxels (morphology at the scale of
    millimetres does not need finer ones) and brought back to the volume's grid by linear interpolation of the
    mask, thresholded at one half.

    Args:
        volume: a T1w or T2w head (or an already skull-stripped brain), any spacing.
        erosion_mm: erosion radius (mm) that cuts the brain from the scalp, or radii tried in turn until the mask
            is at most ``max_brain_ml``.
        closing_mm: radius (mm) of the final closing (sulci, ventricles and the dark cortex border come back).
        max_brain_ml: largest plausible brain volume in mL (adult brain with CSF: about 1100-1800 mL).
        working_mm: voxel size (mm) of the working copy; 0 works on the volume's own grid.

    Raises:
        InputError: the volume is constant, or no brain-sized structure survives the erosion.
    """
    return _on_working_grid(volume, working_mm, lambda array, spacing: _brain_on_grid(
        array, spacing, erosion_mm, closing_mm, max_brain_ml))


def _on_working_grid(volume: Volume, working_mm: float, find: Callable[[np.ndarray, tuple[float, ...]], np.ndarray]
                     ) -> np.ndarray:
    """``find(array, spacing)`` on a block-averaged copy of about ``working_mm`` voxels, brought back to the
    volume's grid by linear interpolation of the mask thresholded at one half."""
    _check_volume(volume)
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array.astype(np.float32).transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in volume.spacing))
    factors = [max(1, round(working_mm / s)) if working_mm > 0 else 1 for s in volume.spacing]
    factors = [min(f, max(1, n // 16)) for f, n in zip(factors, volume.shape)]
    small = sitk.BinShrink(image, factors) if max(factors) > 1 else image
    mask = find(sitk.GetArrayFromImage(small).transpose(2, 1, 0), tuple(float(s) for s in small.GetSpacing()))
    if small is image:
        return mask
    # BinShrink keeps the physical extent, so resampling in the shared (origin-free) frame puts it back in place.
    mask_image = sitk.GetImageFromArray(np.ascontiguousarray(mask.astype(np.float32).transpose(2, 1, 0)))
    mask_image.CopyInformation(small)
    full = sitk.Resample(mask_image, image, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return np.ascontiguousarray(sitk.GetArrayFromImage(full).transpose(2, 1, 0) >= 0.5)


def _brain_on_grid(
    array: np.ndarray, spacing: tuple[float, ...], erosion_mm: float | Sequence[float], closing_mm: float,
    max_brain_ml: float,
) -> np.ndarray:
    head = _head_on_grid(array, spacing)
    # Three classes inside the head (dark: bone, air, CSF in T1w; then grey matter; then white matter or fat):
    # tissue lies above the lower threshold.
    tissue = head & (array > otsu_thresholds(array[head], 2)[0])
    # Bridge sulci first, so that the erosion below cuts the thin links to the scalp, not the folded cortex.
    tissue = close(tissue, spacing, SULCUS_CLOSING_MM) & head
    radii = [float(erosion_mm)] if np.isscalar(erosion_mm) else [float(r) for r in erosion_mm]  # type: ignore[arg-type]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    brain = None
    for radius in radii:
        core = largest_component(erode(tissue, spacing, radius))
        if not core.any():
            break
        brain = largest_component(dilate(core, spacing, radius) & tissue)
        brain = fill_holes(close(brain, spacing, closing_mm)) & head
        if brain.sum() * voxel_ml <= max_brain_ml:
            break
    if brain is None or not brain.any():
        raise InputError("no brain found: nothing is left of the tissue after the erosion (is this a head scan "
                         "at a usable resolution?); give a brain mask made with another tool")
    return brain


def mask_of_kind(volume: Volume, kind: str) -> np.ndarray:
    """:func:`head_mask` or :func:`brain_mask` of ``volume`` by name (``"head"`` or ``"brain"``)."""
    if kind == "head":
        return head_mask(volume)
    if kind == "brain":
        return brain_mask(volume)
    raise ValueError(f"mask kind must be one of {', '.join(MASK_KINDS)}, got {kind!r}")


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1D sample (maximises the between-class variance of the histogram)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return low
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    centres = 0.5 * (edges[:-1] + edges[1:])
    weight = np.cumsum(counts)
    total = weight[-1]
    cumulative = np.cumsum(counts * centres)
    w0, w1 = weight[:-1], total - weight[:-1]
    valid = (w0 > 0) & (w1 > 0)
    mean0 = np.where(valid, cumulative[:-1] / np.maximum(w0, 1), 0.0)
    mean1 = np.where(valid, (cumulative[-1] - cumulative[:-1]) / np.maximum(w1, 1), 0.0)
    between = np.where(valid, w0 * w1 * (mean0 - mean1) ** 2, -1.0)
    return float(edges[1:-1][int(np.argmax(between))])


def otsu_thresholds(values: np.ndarray, count: int = 2, bins: int = 128) -> list[float]:
    """Multi-level Otsu: ``count`` (1 or 2) thresholds maximising the between-class variance, ascending."""
    if count == 1:
        return [otsu_threshold(values, bins)]
    if count != 2:
        raise ValueError(f"count must be 1 or 2, got {count}")
    values = np.asarray(values, dtype=np.float64).ravel()
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return [low, low]
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    centres = 0.5 * (edges[:-1] + edges[1:])
    weight = np.concatenate([[0.0], np.cumsum(counts)])
    moment = np.concatenate([[0.0], np.cumsum(counts * centres)])
    best, choice = -1.0, (1, 2)
    total_w, total_m = weight[-1], moment[-1]
    for a in range(1, bins - 1):
        w0, m0 = weight[a], moment[a]
        b = np.arange(a + 1, bins)
        w1, m1 = weight[b] - w0, moment[b] - m0
        w2, m2 = total_w - weight[b], total_m - moment[b]
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where((w1 > 0) & (w2 > 0) & (w0 > 0), m0 ** 2 / w0 + m1 ** 2 / w1 + m2 ** 2 / w2, -1.0)
        index = int(np.argmax(score))
        if score[index] > best:
            best, choice = float(score[index]), (a, int(b[index]))
    return [float(edges[choice[0]]), float(edges[choice[1]])]


def distance_to(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Euclidean distance (mm) from every voxel centre to the nearest voxel centre of ``mask`` (0 inside)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask.astype(np.uint8).transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing))
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    return np.maximum(sitk.GetArrayFromImage(distance).transpose(2, 1, 0), 0.0)


def erode(mask: np.ndarray, spacing: Sequence[float], radius_mm: float) -> np.ndarray:
    """Voxels of ``mask`` farther than ``radius_mm`` from every voxel outside it (Euclidean erosion in mm)."""
    if radius_mm <= 0 or not mask.any() or mask.all():
        return mask.copy()
    return distance_to(~mask, spacing) > radius_mm


def dilate(mask: np.ndarray, spacing: Sequence[float], radius_mm: float) -> np.ndarray:
    """Voxels within ``radius_mm`` of a voxel of ``mask`` (Euclidean dilation in mm)."""
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    return distance_to(mask, spacing) <= radius_mm


def close(mask: np.ndarray, spacing: Sequence[float], radius_mm: float) -> np.ndarray:
    """Dilation then erosion by ``radius_mm`` (bridges gaps narrower than twice the radius)."""
    return erode(dilate(mask, spacing, radius_mm), spacing, radius_mm)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected component of ``mask`` (empty stays empty)."""
    if not mask.any():
        return mask.copy()
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask.astype(np.uint8)))
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(image), sortByObjectSize=True)
    return sitk.GetArrayFromImage(labels) == 1


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its enclosed cavities filled in 3D and then slice by slice along every axis.

    The slice-wise pass fills what a 3D fill cannot, like ventricles or sulci open to the volume's edge through a
    thin channel.
    """
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask.astype(np.uint8)))
    filled = sitk.GetArrayFromImage(sitk.BinaryFillhole(image)) > 0
    for axis in range(3):
        moved = np.moveaxis(filled, axis, 0)
        slices = [sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(s.astype(np.uint8)))) > 0
                  for s in moved]
        filled = np.moveaxis(np.stack(slices), 0, axis)
    return filled


def _check_volume(volume: Volume) -> None:
    if not np.ptp(volume.array) > 0:
        raise InputError("the volume is constant; a mask needs a volume with anatomy in it")


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


def check_mask(mask: np.ndarray, volume: Volume) -> np.ndarray:
    """``mask`` as a boolean array; ``ValueError`` when its shape is not the volume's."""
    mask = np.asarray(mask)
    if mask.shape != volume.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the volume shape {volume.shape}")
    return mask.astype(bool, copy=False)
