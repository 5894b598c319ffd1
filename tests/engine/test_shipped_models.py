"""The shipped default models beat B-spline on a real scan they never saw (the MNI152 template from nilearn).

A guard against shipping a broken or mis-wired model: a central 64 mm cube of the template, degraded with each
model's own forward model at 1 % k-space noise, enhanced with the model's defaults. Measured on this dense cube:
+3.0 dB at x2, +2.8 dB for 4x thicker slices along k or along i (whole-head means are in the model cards); the floors
below leave room for retrained models.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import manifest_default

from MRISuperResLib.engine.enhance import enhance_volume
from MRISuperResLib.evaluation.evaluate import evaluation_spec, simulated_pair
from MRISuperResLib.imaging.geometry import Scale
from MRISuperResLib.evaluation.metrics import psnr
from MRISuperResLib.engine.model_zoo import load_model
from MRISuperResLib.processing.masks import foreground_mask
from MRISuperResLib.imaging.volume import Grid, Volume


def central_cube(volume: Volume, edge: int = 64, order: tuple[int, int, int] = (0, 1, 2)) -> Volume:
    """The central ``edge``-voxel cube of ``volume`` as float32 on a plain 1 mm grid, axes in ``order``."""
    start = [(n - edge) // 2 for n in volume.shape]
    cube = volume.array[start[0]: start[0] + edge, start[1]: start[1] + edge, start[2]: start[2] + edge]
    array = np.ascontiguousarray(np.transpose(cube.astype(np.float32), order))
    return Volume(array, Grid(array.shape, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))


def gain_over_bspline(reference: Volume, scale: Scale, kind: str) -> tuple[float, str]:
    """PSNR gain (dB, inside the head) of the default model for ``scale`` over B-spline, and the model's name."""
    model = load_model("default", scale)
    spec = evaluation_spec(model.metadata.degradation, kind, noise=0.01)
    high, low = simulated_pair(reference, scale, spec, seed=0)
    result = enhance_volume(low, model, scale, device="cpu", consistency=False)
    mask = foreground_mask(high)
    return psnr(result.sr.array, high.array, mask) - psnr(result.baseline.array, high.array, mask), model.name


def test_the_x2_default_beats_bspline_on_an_unseen_scan(mni_volume: Volume, single_thread) -> None:
    gain, name = gain_over_bspline(central_cube(mni_volume), (2.0, 2.0, 2.0), "kspace")
    assert name == manifest_default((2.0, 2.0, 2.0))
    assert gain > 1.0, f"x2 gain {gain:+.2f} dB"


@pytest.mark.parametrize(
    ("scale", "order"),
    [((1.0, 1.0, 4.0), (0, 1, 2)), ((4.0, 1.0, 1.0), (2, 0, 1)), ((1.0, 1.0, 2.0), (0, 1, 2)),
     ((1.0, 3.0, 1.0), (0, 2, 1)), ((1.0, 1.0, 5.0), (0, 1, 2))],
)
def test_the_thick_slice_defaults_beat_bspline_along_any_axis(
    mni_volume: Volume, single_thread, scale: Scale, order: tuple[int, int, int]
) -> None:
    # The cube is transposed so that its thick axis is always the template's inferior-superior axis.
    gain, name = gain_over_bspline(central_cube(mni_volume, order=order), scale, "box")
    assert name == manifest_default(scale)
    assert gain > 1.5, f"thick-slice gain {gain:+.2f} dB at scale {scale}"
