"""Scale factors and cell-centred resampling grids.

A grid is cell-centred: voxel ``n`` covers ``[n - 1/2, n + 1/2]`` in index units, so a volume's physical
extent is ``shape * spacing``. Upsampling along an axis by ``s`` keeps that extent: the new spacing is
``spacing * n / round(n * s)`` and the first output voxel centre sits at
``origin + direction @ ((1/s - 1) / 2 * spacing)`` (per axis, ``s`` the effective factor ``round(n*s)/n``),
so the result overlays its input with no half-voxel shift. Scales are given per axis in image index order
``(i, j, k)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import MRISuperResError
from .volume import Grid

Scale = tuple[float, float, float]


def parse_scale(value: float | str | Sequence[float]) -> Scale:
    """Parse a scale given as ``2``, ``"2"``, ``"1,1,4"``, ``"1x1x4"`` or ``(1, 1, 4)``.

    Returns:
        The per-axis factors ``(s_i, s_j, s_k)`` in image index order, each >= 1.

    Raises:
        MRISuperResError: when ``value`` is not one or three numbers (as text, a number or a sequence; ``None``,
            booleans and mappings are refused), or a factor is below 1.
    """
    numbers: list[float] = []
    if isinstance(value, str):
        parts = [p for p in value.replace("x", ",").replace("X", ",").replace(" ", ",").split(",") if p]
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            numbers = []
    elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        numbers = [float(value)]
    elif value is not None and not isinstance(value, Mapping):
        try:
            numbers = [float(v) for v in value]
        except (TypeError, ValueError):
            numbers = []
    if len(numbers) == 1:
        numbers = numbers * 3
    if len(numbers) != 3 or not all(np.isfinite(numbers)):
        hint = (" ('iso' depends on the input's voxels: resolve it with isotropic_scale(volume.spacing))"
                if isinstance(value, str) and value.strip().lower() == "iso" else "")
        raise MRISuperResError(
            f"scale {value!r} is not understood; give one factor (e.g. 2) or three in i,j,k order (e.g. 1,1,4)"
            + hint
        )
    if min(numbers) < 1.0:
        raise MRISuperResError(f"scale {value!r} has a factor below 1; super-resolution only enlarges (use >= 1)")
    return (numbers[0], numbers[1], numbers[2])


def format_scale(scale: Scale) -> str:
    """Short text for a scale: ``"2"`` when isotropic, else ``"1,1,4"`` (``g`` formatting)."""
    if scale[0] == scale[1] == scale[2]:
        return f"{scale[0]:g}"
    return ",".join(f"{s:g}" for s in scale)


#: Voxels whose thickest axis is less than this many times the finest count as near-isotropic.
ISOTROPIC_RATIO = 1.5

#: The factor the command line and ``enhance`` use when nothing else decides.
DEFAULT_SCALE: Scale = (2.0, 2.0, 2.0)


def anisotropy(spacing: Sequence[float]) -> float:
    """Thickest over finest voxel edge (1 for isotropic voxels)."""
    values = [float(s) for s in spacing]
    return max(values) / min(values)


def isotropic_scale(spacing: Sequence[float], max_factor: int = 5) -> Scale | None:
    """The per-axis scale (``i, j, k`` order) that brings the thickest axis nearest the finest spacing.

    The thickest axis gets ``round(thickest / finest)`` (at most ``max_factor``), the others 1: spacing
    ``(1, 1, 4)`` mm gives ``(1, 1, 4)``, ``(3, 1, 1)`` gives ``(3, 1, 1)``. ``None`` when the voxels are already
    near-isotropic (:data:`ISOTROPIC_RATIO`). The Slicer panel's "thick slices" choice and ``--scale iso``.
    """
    values = [float(s) for s in spacing]
    if anisotropy(values) < ISOTROPIC_RATIO:
        return None
    thickest = max(range(3), key=lambda axis: values[axis])
    factors = [1.0, 1.0, 1.0]
    factors[thickest] = float(min(max_factor, round(values[thickest] / min(values))))
    return (factors[0], factors[1], factors[2])


def default_scale(spacing: Sequence[float], supported: Sequence[Scale] | None = None) -> Scale:
    """The scale to run when the user gives none, from the input's voxel size (mm, ``i, j, k``).

    Clearly anisotropic voxels get :func:`isotropic_scale` (restore the thick slices, never thin the fine axes),
    others :data:`DEFAULT_SCALE`. When a model supports only one scale (``supported``, each in any axis order)
    and that is not it, the model's scale is used, its largest factor along the input's thickest axis.
    """
    chosen = isotropic_scale(spacing) or DEFAULT_SCALE
    if not supported or any(sorted(chosen) == sorted(s) for s in supported) or len(supported) != 1:
        return chosen
    factors = sorted(float(f) for f in supported[0])
    values = [float(s) for s in spacing]
    thickest = max(range(3), key=lambda axis: (values[axis], axis))  # ties: the last axis (k, the slice axis)
    others = [axis for axis in range(3) if axis != thickest]
    result = [0.0, 0.0, 0.0]
    result[thickest], result[others[0]], result[others[1]] = factors[2], factors[0], factors[1]
    return (result[0], result[1], result[2])


def anisotropy_warning(spacing: Sequence[float], scale: Scale) -> str | None:
    """One line when ``scale`` makes voxels of ``spacing`` (mm, ``i, j, k``) more anisotropic than they were
    (e.g. ``1,1,3`` on 3 x 1 x 1 mm voxels gives 3 x 1 x 0.33 mm), naming the scale that would not; else ``None``."""
    before = anisotropy(spacing)
    out = [float(s) / float(f) for s, f in zip(spacing, scale)]
    after = anisotropy(out)
    if after < ISOTROPIC_RATIO or after <= before * 1.01:
        return None
    suggestion = isotropic_scale(spacing)
    hint = (f"scale {format_scale(suggestion)} (--scale iso; 'thick slices' in Slicer) restores them" if suggestion
            else "an isotropic factor such as 2 keeps their shape")
    return (f"scale {format_scale(scale)} turns {format_millimetres(spacing)} mm voxels into "
            f"{format_millimetres(out)} mm, more anisotropic than the input; {hint}")


#: How far (a factor either way) an output voxel edge may lie from the training range before enhance warns.
VOXEL_RANGE_TOLERANCE = 2.0


def voxel_size_warning(spacing: Sequence[float], scale: Scale, trained_mm: tuple[float, float] | None) -> str | None:
    """One line when the output voxels (``spacing / scale``, mm, ``i, j, k``) lie well outside ``trained_mm``, the
    ``(smallest, largest)`` high-resolution voxel edge the model was trained on (more than
    :data:`VOXEL_RANGE_TOLERANCE` times finer or coarser); else ``None`` (also when the range is unknown).

    The networks work in voxel units: detail they learnt at 1 mm is drawn at 0.4 or 2 mm on other voxels, so the
    result is then less reliable than the card's tables say. A factor of 2 either way is tolerated, so that the
    common use of an x2 model made from 2 mm -> 1 mm pairs on 1 mm scans runs without a warning.
    """
    if trained_mm is None:
        return None
    out = [float(s) / float(f) for s, f in zip(spacing, scale)]
    low, high = trained_mm
    if min(out) >= low / VOXEL_RANGE_TOLERANCE and max(out) <= high * VOXEL_RANGE_TOLERANCE:
        return None
    trained = format_voxel_range(trained_mm)
    return (f"output voxels of {format_millimetres(out)} mm lie outside the {trained} mm the model was trained on; "
            "it works in voxels, so expect less reliable detail than its card reports")


def format_voxel_range(trained_mm: tuple[float, float]) -> str:
    """A voxel-edge range for messages and cards: ``"0.9-1"``, or ``"1"`` when both ends agree (mm)."""
    low, high = (f"{float(v):.3g}" for v in trained_mm)
    return low if low == high else f"{low}-{high}"


def format_millimetres(spacing: Sequence[float]) -> str:
    """Voxel edges for a message: ``"1 x 1 x 0.333"`` (mm, ``i, j, k``; three significant digits)."""
    return " x ".join(f"{float(s):.3g}" for s in spacing)


def is_integer_scale(scale: Scale) -> bool:
    """True when every factor is a whole number."""
    return all(float(s).is_integer() for s in scale)


def upsampled_grid(grid: Grid, scale: Scale) -> Grid:
    """The cell-centred grid ``scale`` times finer than ``grid`` over the same physical extent.

    The output has ``round(n * s)`` voxels per axis; for a non-integer product the effective factor is
    ``round(n * s) / n`` so the extent is kept exactly.
    """
    shape_in = np.asarray(grid.shape, dtype=np.float64)
    shape_out = np.maximum(np.rint(shape_in * np.asarray(scale)), 1).astype(int)
    return resampled_grid(grid, tuple(int(n) for n in shape_out))


def resampled_grid(grid: Grid, shape: tuple[int, int, int]) -> Grid:
    """The cell-centred grid with ``shape`` voxels covering exactly the extent of ``grid``.

    Works both ways (finer or coarser): spacing becomes ``spacing * n_in / n_out`` and the first voxel centre
    moves by ``(n_in / n_out - 1) / 2`` input voxels along each index axis.
    """
    n_in = np.asarray(grid.shape, dtype=np.float64)
    n_out = np.asarray(shape, dtype=np.float64)
    spacing_in = np.asarray(grid.spacing)
    shift_in_voxels = (n_in / n_out - 1.0) / 2.0
    origin = np.asarray(grid.origin) + grid.direction @ (shift_in_voxels * spacing_in)
    return Grid(tuple(int(n) for n in shape), tuple(spacing_in * n_in / n_out), tuple(origin), grid.direction)


def effective_scale(grid_in: Grid, grid_out: Grid) -> Scale:
    """Per-axis factor ``n_out / n_in`` between two grids over the same extent."""
    return tuple(float(o) / float(i) for i, o in zip(grid_in.shape, grid_out.shape))  # type: ignore[return-value]


def fine_mask(mask: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A boolean mask on the input grid ``[i, j, k]`` carried onto the cell-centred fine grid of ``shape``.

    Separable linear interpolation that samples fine voxel ``o`` at input index ``(o + 1/2) * n / shape - 1/2``
    (the cell-centred rule, any scale, integer or not; the edge value beyond the outermost centres), thresholded
    at 0.5 so the boundary stays where it was (a voxel exactly half inside counts as inside). A B-spline of a binary mask costs as much as the baseline itself
    for the same boundary. Numpy only, so it can run before torch is loaded (see :mod:`MRISuperResLib.engine.prepared_input`).
    """
    values = mask.astype(np.float32)
    for axis, size_out in enumerate(shape):
        size_in = values.shape[axis]
        if size_out == size_in:
            continue
        position = np.maximum((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5, 0.0)
        lower = np.minimum(np.floor(position).astype(np.intp), size_in - 1)
        upper = np.minimum(lower + 1, size_in - 1)
        weight = (position - lower).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        below = np.take(values, lower, axis=axis)
        values = below + weight * (np.take(values, upper, axis=axis) - below)
    # Ties (e.g. 3/4 * 2/3 at mixed scales) land on either side of 0.5 by rounding alone: count them inside.
    return values > np.float32(0.5 - 1e-6)
