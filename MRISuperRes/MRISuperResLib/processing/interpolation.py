"""Classical upsampling of a volume onto a finer grid: the baseline every result is compared with.

The baseline is cubic B-spline interpolation, as ITK/SimpleITK (and so Slicer's resampling) computes it: through
SimpleITK for any grid, or through the equivalent separable torch filters of :mod:`.bspline` for integer factors
(faster, and on the GPU when there is one). It is also the global skip of models that predict a residual: the
super-resolved volume is ``baseline + network residual``.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from .bspline import bspline_upsample
from ..imaging.volume import Grid, Volume
from ..imaging.volume_io import grid_to_sitk_reference, to_sitk

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


def bspline_upsample_volume(volume: Volume, grid: Grid, device: torch.device | None = None) -> Volume:
    """Cubic B-spline upsampling of ``volume`` onto ``grid`` (an :func:`~.geometry.upsampled_grid` of it).

    Integer per-axis factors run as separable polyphase filters in torch (on ``device``, CPU by default);
    other factors go through SimpleITK. Both give ITK's cubic B-spline interpolation (float32).
    """
    factors = [o / i for i, o in zip(volume.shape, grid.shape)]
    # ITK treats 2-voxel axes specially; the torch filters match it from 3 voxels on.
    if not all(float(f).is_integer() for f in factors) or min(volume.shape) < 3:
        return resample_to_grid(volume, grid, "bspline")
    tensor = torch.from_numpy(np.ascontiguousarray(volume.array, dtype=np.float32))[None, None]
    with torch.inference_mode():
        upsampled = bspline_upsample(tensor.to(device or "cpu"), [int(f) for f in factors])
    return volume.with_grid(upsampled[0, 0].cpu().numpy(), grid)
