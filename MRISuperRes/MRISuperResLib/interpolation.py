"""Classical upsampling of a volume onto a finer grid: the baseline every result is compared with.

The baseline is cubic B-spline interpolation through SimpleITK (what Slicer's resampling gives). It is also the
global skip of models that predict a residual: the super-resolved volume is ``baseline + network residual``.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .volume import Grid, Volume
from .volume_io import grid_to_sitk_reference, to_sitk

#: Interpolators by name (SimpleITK enum values).
INTERPOLATORS = {
    "bspline": sitk.sitkBSpline,
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
}


def resample_to_grid(volume: Volume, grid: Grid, interpolator: str = "bspline") -> Volume:
    """Resample ``volume`` onto ``grid`` (same physical frame) with the named interpolator, as float32.

    Output voxel centres within half an input voxel of the input's boundary (which always holds for a
    cell-centred finer grid over the same extent) are interpolated, not filled: nearest-neighbour
    extrapolation is used for them so the border never drops to zero.
    """
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(grid_to_sitk_reference(grid))
    resampler.SetInterpolator(INTERPOLATORS[interpolator])
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    resampler.SetUseNearestNeighborExtrapolator(True)
    image = to_sitk(volume, volume.array.astype(np.float32, copy=False))
    array = np.ascontiguousarray(sitk.GetArrayFromImage(resampler.Execute(image)).transpose(2, 1, 0))
    return volume.with_grid(array, grid)
