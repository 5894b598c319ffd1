"""Data-consistency projection: correct a super-resolved volume so that it agrees with what the scanner measured.

The network's output ``x`` (fine grid) is degraded with the model's own forward model ``A`` (:mod:`.degradation`)
back onto the input grid; the residual ``r = y - A x`` against the measured input ``y`` is what the output fails to
explain. The projection adds a fine-grid correction that explains it::

    x' = x + B W r

``A`` is separable (one matrix per axis, the forward model applied to the identity), and so is ``B``, a right
inverse of ``A`` (``A B = I``) built axis by axis:

* along a k-space axis, the Moore-Penrose pseudoinverse, i.e. zero-filling: the minimum-norm correction, and with
  ``W = 1`` an orthogonal projection onto the volumes that explain the input, which for a noise-free input that
  follows the forward model is never further from the truth than ``x`` (iterative back-projection, Irani and
  Peleg 1991);
* along a slice-profile axis (thick slices), the smoothest correction along the axis (least squared differences
  between neighbouring thin slices) among those that explain the input: the pseudoinverse would add the same value
  to every thin slice of a slab and leave steps at the slab boundaries of reformatted views.

With ``W = 1`` the result explains the input exactly (``A x' = y``).

A noisy input is not the truth's image under ``A``, and re-imposing its noise undoes the denoising the network
learned. ``W`` is therefore a Wiener-like weight per shell of spatial frequency of the residual (the soft data
consistency of Schlemper et al., IEEE TMI 2018, with the noise level estimated, not given): a shell whose residual
power ``P`` is close to the noise floor ``s2`` gets weight ``max(0, 1 - s2 / P)``. The floor is the smaller of two
bounds on the noise: :data:`NOISE_FLOOR_FACTOR` times the residual's power in its highest shell (where the
network's remaining error is smallest and the noise is what is left), and the noise power measured in the input's
background outside the head (:func:`background_noise_power`; a magnitude image's air is Rayleigh noise of the same
``sigma``), when the input has a background that was not zeroed. Noise-free inputs keep weights near 1 in the
shells where the network's error is large.

Arrays are indexed ``[i, j, k]``; nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .consistency import consistency_report
from .degradation import DegradationSpec, degrade
from .degradation.base import ForwardModel

#: Number of shells of spatial frequency (radius in cycles per voxel, all axes alike) the residual's weights use.
SHELLS = 12

#: The noise floor is this fraction of the residual's power in its highest-frequency shell (chosen on the
#: validation volumes of the training set; see docs/projection.md).
NOISE_FLOOR_FACTOR = 0.5


#: Residual values farther than this many robust standard deviations (1.4826 x the median absolute deviation) from
#: its median are clipped there before the shells' power is measured.
OUTLIER_MADS = 8.0

#: Background voxels needed for a noise estimate, and the largest share of them that may be exactly zero (a zeroed
#: background, as in skull-stripped or masked data, says nothing about the noise).
MIN_BACKGROUND_VOXELS = 1000
MAX_ZERO_SHARE = 0.5


@dataclass(frozen=True)
class ProjectionReport:
    """What a projection did.

    Attributes:
        weights: the weight of each frequency shell, lowest first (``SHELLS`` values in ``[0, 1]``).
        background_sigma: the noise standard deviation measured in the input's background (intensity units), or
            ``None`` when the input has no usable background.
        nrmse_before: the consistency NRMSE of the network's output (:func:`.consistency.consistency_report`: RMS
            of ``A x - y`` divided by ``intensity_range``).
        nrmse_after: the same for the projected volume.
    """

    weights: tuple[float, ...]
    nrmse_before: float
    nrmse_after: float
    background_sigma: float | None = None

    def summary(self) -> dict[str, object]:
        """JSON-ready values."""
        return {"shell_weights": [round(w, 4) for w in self.weights], "nrmse_before": self.nrmse_before,
                "nrmse_after": self.nrmse_after, "background_sigma": self.background_sigma}


def background_voxels(measured: np.ndarray, head: np.ndarray, spacing: tuple[float, ...],
                      margin_mm: float = 5.0) -> np.ndarray | None:
    """The input's background: its voxels outside the head mask dilated by ``margin_mm`` (float64).

    Args:
        measured: the input ``[i, j, k]``.
        head: its head mask (boolean, same shape).
        spacing: voxel size (mm) along ``i, j, k``.

    Returns:
        the background values, or ``None`` when fewer than :data:`MIN_BACKGROUND_VOXELS` remain or more than
        :data:`MAX_ZERO_SHARE` of them are exactly zero (a zeroed background holds no noise to measure).
    """
    from .masks import dilate  # SimpleITK's import is left to the runs that need it

    background = measured[~dilate(head, spacing, margin_mm)].astype(np.float64)
    if background.size < MIN_BACKGROUND_VOXELS or np.mean(background == 0) > MAX_ZERO_SHARE:
        return None
    return background


def noise_power_of(background: np.ndarray) -> float:
    """The noise power ``sigma^2`` (per voxel, intensity units squared) from background voxels.

    A magnitude image's background holds Rayleigh noise whose mean square is ``2 sigma^2`` (``sigma``: the standard
    deviation of each of the real and imaginary parts, which is the noise of the bright tissue too); with negative
    values the background is taken as zero-mean Gaussian noise (mean square ``sigma^2``).
    """
    mean_square = float(np.mean(np.square(background)))
    return mean_square if background.min() < 0 else mean_square / 2.0


#: Median of Rayleigh noise (magnitude images' air) and of ``|x|`` for zero-mean Gaussian noise (signed images), in
#: units of ``sigma``; and their ``p10 / p50`` ratios, the shape a background must have (within
#: :data:`SHAPE_TOLERANCE` times) to count as noise.
RAYLEIGH_MEDIAN = float(np.sqrt(2.0 * np.log(2.0)))
HALF_NORMAL_MEDIAN = 0.6745
RAYLEIGH_P10_P50 = float(np.sqrt(-2.0 * np.log(0.9))) / RAYLEIGH_MEDIAN  # 0.390
HALF_NORMAL_P10_P50 = 0.1257 / HALF_NORMAL_MEDIAN  # 0.186
SHAPE_TOLERANCE = 1.6
#: A background at least this share negative is signed (Gaussian) noise; fewer negative voxels are overshoot.
GAUSSIAN_NEGATIVE_SHARE = 0.25


def robust_sigma_of(background: np.ndarray) -> float | None:
    """The noise standard deviation ``sigma`` (intensity units) from the median of background voxels, which a few
    extreme voxels do not move (unlike :func:`noise_power_of`'s mean square): :data:`RAYLEIGH_MEDIAN` ``* sigma``
    for a magnitude image's air; a background :data:`GAUSSIAN_NEGATIVE_SHARE` or more negative is taken as zero-mean
    Gaussian noise (median of ``|x|``: :data:`HALF_NORMAL_MEDIAN` ``* sigma``), so that a few negative voxels
    (resampling overshoot) do not switch the model.

    Returns ``None`` when the background is not shaped like noise (its ``p10 / p50`` ratio more than
    :data:`SHAPE_TOLERANCE` times off the noise model's): a constant or offset background (z-scored or filled
    skull-stripped images) or structured air would otherwise read as noise.
    """
    gaussian = float(np.mean(background < 0)) >= GAUSSIAN_NEGATIVE_SHARE
    values = np.abs(background) if gaussian else background
    p10, p50 = (float(v) for v in np.percentile(values, [10, 50]))
    expected = HALF_NORMAL_P10_P50 if gaussian else RAYLEIGH_P10_P50
    if p50 <= 0 or not expected / SHAPE_TOLERANCE <= p10 / p50 <= expected * SHAPE_TOLERANCE:
        return None
    return p50 / (HALF_NORMAL_MEDIAN if gaussian else RAYLEIGH_MEDIAN)


def background_noise_power(measured: np.ndarray, head: np.ndarray, spacing: tuple[float, ...],
                           margin_mm: float = 5.0) -> float | None:
    """The noise power ``sigma^2`` of the input from its background (:func:`background_voxels`,
    :func:`noise_power_of`); ``None`` without a usable background."""
    background = background_voxels(measured, head, spacing, margin_mm)
    return None if background is None else noise_power_of(background)


def shell_index(shape: tuple[int, ...], shells: int = SHELLS) -> np.ndarray:
    """The frequency shell of every FFT bin of an array of ``shape`` (integers ``0 .. shells - 1``): the radius
    ``sqrt(sum (f_a)^2)`` with ``f_a`` in cycles per voxel along axis ``a``, split evenly up to its maximum."""
    grids = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij", sparse=True)
    radius = np.sqrt(sum(g ** 2 for g in grids))
    top = float(radius.max()) or 1.0
    return np.minimum((radius / top * shells).astype(np.intp), shells - 1)


def shell_weights(residual: np.ndarray, factor: float = NOISE_FLOOR_FACTOR, noise_power: float | None = None,
                  shells: int = SHELLS) -> tuple[np.ndarray, np.ndarray]:
    """Weight each frequency shell of ``residual`` by ``max(0, 1 - s2 / P)``.

    Args:
        residual: ``y - A x`` on the input grid ``[i, j, k]``.
        factor: the noise floor ``s2`` as a fraction of the power in the highest shell; 0 gives weight 1 everywhere.
        noise_power: a measured noise power per voxel (:func:`background_noise_power`); the floor is then the
            smaller of the two.

    Returns:
        ``(weighted residual (float64, residual's shape), weights per shell)``.
    """
    spectrum = np.fft.fftn(residual, norm="ortho")
    index = shell_index(residual.shape, shells)
    counts = np.bincount(index.ravel(), minlength=shells)
    # The shells' power is measured on the residual with its outliers clipped: one bright voxel the network did not
    # reproduce has a flat spectrum and would otherwise raise every shell, the highest one (the floor) most.
    centre = float(np.median(residual))
    spread = OUTLIER_MADS * 1.4826 * float(np.median(np.abs(residual - centre)))
    clipped = np.clip(residual, centre - spread, centre + spread) if spread > 0 else residual
    measured = spectrum if clipped is residual else np.fft.fftn(clipped, norm="ortho")
    power = np.bincount(index.ravel(), np.abs(measured.ravel()) ** 2, shells) / np.maximum(counts, 1)
    floor = factor * power[-1] if noise_power is None else min(factor * power[-1], noise_power)
    weights = np.where(power > 0, np.clip(1.0 - floor / np.where(power > 0, power, 1.0), 0.0, 1.0), 1.0)
    return np.real(np.fft.ifftn(spectrum * weights[index], norm="ortho")), weights


#: Weight of the plain squared norm beside the squared differences in the smooth inverse (makes it unique; a
#: constant has no differences).
SMOOTH_RIDGE = 1e-3


@lru_cache(maxsize=16)
def axis_inverse(model: ForwardModel, fine: int, coarse: int) -> np.ndarray:
    """``(fine, coarse)`` float32 right inverse ``B`` of the forward model's ``(coarse, fine)`` matrix ``A`` along
    one axis (the model applied to the identity): ``A B = I``.

    For a k-space axis (``model.from_kspace``) the Moore-Penrose pseudoinverse (minimum norm); for a slice profile
    the smoothest solution, ``B = L^-1 A^T (A L^-1 A^T)^-1`` with ``L = D^T D + SMOOTH_RIDGE I`` (``D``: first
    differences along the axis), which minimises ``c^T L c`` subject to ``A c = r``.
    """
    matrix = model.degrade_axis(np.eye(fine), coarse, 0)
    if model.from_kspace:
        return np.linalg.pinv(matrix).astype(np.float32)
    differences = np.diff(np.eye(fine), axis=0)
    smoothing = np.linalg.inv(differences.T @ differences + SMOOTH_RIDGE * np.eye(fine))
    spread = smoothing @ matrix.T
    return (spread @ np.linalg.inv(matrix @ spread)).astype(np.float32)


def back_project(residual: np.ndarray, fine_shape: tuple[int, int, int], spec: DegradationSpec) -> np.ndarray:
    """``B residual``: a fine-grid volume whose forward model is ``residual`` (minimum-norm along k-space axes,
    smoothest along slice-profile axes; see :func:`axis_inverse`); float32 of ``fine_shape``."""
    result = np.asarray(residual, dtype=np.float32)
    for axis, model in enumerate(spec.models):
        if result.shape[axis] != fine_shape[axis]:
            inverse = axis_inverse(model, int(fine_shape[axis]), int(result.shape[axis]))
            result = np.moveaxis(np.tensordot(inverse, result, axes=([1], [axis])), 0, axis)
    return np.ascontiguousarray(result, dtype=np.float32)


def project(fine: np.ndarray, measured: np.ndarray, spec: DegradationSpec, intensity_range: float, *,
            factor: float = NOISE_FLOOR_FACTOR, noise_power: float | None = None, inside: np.ndarray | None = None,
            predicted: np.ndarray | None = None) -> tuple[np.ndarray, ProjectionReport]:
    """Project ``fine`` towards agreement with ``measured`` under ``spec``'s forward model.

    Args:
        fine: the super-resolved volume ``[i, j, k]`` on the fine grid (intensity units).
        measured: the input on the coarse grid.
        spec: the model's forward model (noise and bias ignored).
        intensity_range: the input's normalisation range, for the scores.
        factor: the noise floor factor (see :func:`shell_weights`; 0: the exact projection).
        noise_power: the input's noise power from its background (:func:`background_noise_power`), or ``None``.
        inside: a boolean mask on the fine grid; the correction is applied only there (the background outside the
            head stays as it was), ``None``: everywhere.
        predicted: ``degrade(fine)`` when already computed (the consistency check makes it).

    Returns:
        ``(projected volume, float32 of fine's shape; report)``.

    Raises:
        ValueError: ``measured`` is larger than ``fine`` along an axis.
    """
    if predicted is None:
        predicted = degrade(fine, measured.shape, spec, np.float32)
    residual = measured.astype(np.float64) - predicted
    weighted, weights = shell_weights(residual, factor, noise_power)
    correction = back_project(weighted, fine.shape, spec)
    if inside is not None:
        correction *= inside
    projected = (fine + correction).astype(np.float32)
    # The scores are the consistency check's own, so the one before is the run's consistency NRMSE to the digit.
    before = consistency_report(fine, measured, spec, intensity_range, predicted).nrmse
    after = consistency_report(projected, measured, spec, intensity_range).nrmse
    sigma = None if noise_power is None else float(np.sqrt(noise_power))
    return projected, ProjectionReport(tuple(float(w) for w in weights), before, after, sigma)
