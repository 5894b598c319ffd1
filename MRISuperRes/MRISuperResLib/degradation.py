"""Forward models that turn a fine volume into the coarse one a scanner would have measured.

Each model maps an array on a fine cell-centred grid to an array of a given coarser shape covering the same
physical extent (see :mod:`.geometry`). They serve two purposes: simulating low-resolution training inputs,
and the engine's data-consistency check (degrade the super-resolved volume back onto the input grid and
compare with what was measured).

Kinds (``DegradationSpec.kind``):

* ``"kspace"`` -- k-space truncation: keep the central low frequencies of the Fourier transform, as a scanner
  that acquires a smaller matrix over the same field of view (seed 000: "cutting off three quarters of high
  frequency region"; seed 003, eq. 1). Sample positions follow the cell-centred rule exactly.
* ``"box"`` -- averaging over the coarse voxel (an ideal rectangular slice profile / partial-volume model).
* ``"gaussian"`` -- Gaussian blur with a full width at half maximum of ``fwhm`` coarse voxels, then sampling
  at the coarse voxel centres (seed 000's first approach).

Arrays are indexed ``[i, j, k]``; shapes and factors are in that order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

KINDS = ("kspace", "box", "gaussian")


@dataclass(frozen=True)
class DegradationSpec:
    """How low-resolution data relate to high-resolution data.

    Attributes:
        kind: one of :data:`KINDS`.
        fwhm: for ``"gaussian"``, the blur's full width at half maximum in coarse voxels (1.0 = one voxel).
    """

    kind: str = "kspace"
    fwhm: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"degradation kind {self.kind!r} is not one of {', '.join(KINDS)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, object] | None) -> "DegradationSpec":
        """Build from model metadata (unknown keys are ignored, missing ones take defaults)."""
        data = dict(data or {})
        return cls(kind=str(data.get("kind", "kspace")), fwhm=float(data.get("fwhm", 1.0)))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def degrade(array: np.ndarray, shape: tuple[int, int, int], spec: DegradationSpec) -> np.ndarray:
    """Apply the forward model ``spec`` to ``array`` and sample it on the cell-centred grid of ``shape``.

    Args:
        array: fine volume ``[i, j, k]``.
        shape: coarse shape; each entry at most the fine one (equal means that axis is left alone).
        spec: which forward model.

    Returns:
        float32 array of ``shape``.
    """
    if any(c > f for c, f in zip(shape, array.shape)):
        raise ValueError(f"degraded shape {shape} is larger than the input shape {array.shape}")
    if spec.kind == "kspace":
        return fourier_resample(array, shape)
    if spec.kind == "box":
        return box_downsample(array, shape)
    return gaussian_downsample(array, shape, spec.fwhm)


def fourier_resample(array: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Band-limited (sinc) resampling to ``shape`` on cell-centred grids, axis by axis.

    Shrinking truncates k-space to the central frequencies of the smaller matrix; enlarging zero-fills it.
    The Nyquist bin of an even-sized smaller matrix is shared equally between its two signed frequencies so
    the result stays real and symmetric. Values are scaled so that a constant volume stays constant.
    """
    result = np.asarray(array, dtype=np.float64)
    for axis, size in enumerate(shape):
        if size != result.shape[axis]:
            result = _fourier_resample_axis(result, int(size), axis)
    return result.astype(np.float32)


def _fourier_resample_axis(array: np.ndarray, size_out: int, axis: int) -> np.ndarray:
    size_in = array.shape[axis]
    smaller = min(size_in, size_out)
    spectrum = np.fft.fft(array, axis=axis)
    frequencies = np.fft.fftfreq(size_in, d=1.0 / size_in)  # integers k in FFT order
    keep = np.abs(frequencies) <= smaller / 2
    weights = np.where(keep, 1.0, 0.0)
    if smaller % 2 == 0:
        weights[np.abs(frequencies) == smaller / 2] = 0.5
    # Shift so that output voxel m samples input position (m + 1/2) * size_in / size_out - 1/2 (cell centres).
    phase = np.exp(1j * np.pi * frequencies * (1.0 / size_out - 1.0 / size_in))
    factors = weights * phase
    out_spectrum_shape = list(array.shape)
    out_spectrum_shape[axis] = size_out
    out_spectrum = np.zeros(out_spectrum_shape, dtype=np.complex128)
    target_bins = np.mod(frequencies, size_out).astype(int)
    for k_index in np.flatnonzero(keep):
        source = [slice(None)] * array.ndim
        target = [slice(None)] * array.ndim
        source[axis] = k_index
        target[axis] = target_bins[k_index]
        out_spectrum[tuple(target)] += factors[k_index] * spectrum[tuple(source)]
    if size_in % 2 == 0 and size_out > size_in:
        # Enlarging an even matrix: the shared Nyquist bin also contributes its mirrored frequency.
        k_index = int(np.flatnonzero(frequencies == -size_in / 2)[0])
        source = [slice(None)] * array.ndim
        target = [slice(None)] * array.ndim
        source[axis] = k_index
        target[axis] = size_in // 2
        mirrored_phase = np.exp(1j * np.pi * (size_in / 2) * (1.0 / size_out - 1.0 / size_in))
        out_spectrum[tuple(target)] += 0.5 * mirrored_phase * spectrum[tuple(source)]
    return np.real(np.fft.ifft(out_spectrum, axis=axis)) * (size_out / size_in)


def box_downsample(array: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Average over each coarse voxel's footprint with exact area weights (any size ratio), axis by axis."""
    result = np.asarray(array, dtype=np.float32)
    for axis, size in enumerate(shape):
        if size != result.shape[axis]:
            weights = _box_weights(result.shape[axis], int(size))
            result = np.moveaxis(np.tensordot(weights, result, axes=([1], [axis])), 0, axis)
    return np.ascontiguousarray(result, dtype=np.float32)


def _box_weights(size_in: int, size_out: int) -> np.ndarray:
    """``(size_out, size_in)`` matrix: share of fine voxel ``n`` inside coarse voxel ``m``, rows summing to 1."""
    ratio = size_in / size_out
    starts = np.arange(size_out)[:, None] * ratio
    fine = np.arange(size_in)[None, :]
    overlap = np.clip(np.minimum(starts + ratio, fine + 1) - np.maximum(starts, fine), 0.0, None)
    return (overlap / ratio).astype(np.float32)


def gaussian_downsample(array: np.ndarray, shape: tuple[int, int, int], fwhm: float) -> np.ndarray:
    """Gaussian blur of ``fwhm`` coarse voxels (per axis that shrinks), then linear sampling at coarse centres."""
    factors = np.asarray(array.shape, dtype=np.float64) / np.asarray(shape, dtype=np.float64)
    sigma = np.where(factors > 1.0, fwhm * factors / (2.0 * np.sqrt(2.0 * np.log(2.0))), 0.0)
    blurred = ndimage.gaussian_filter(np.asarray(array, dtype=np.float32), sigma=sigma, mode="nearest")
    centres = [(np.arange(n) + 0.5) * f - 0.5 for n, f in zip(shape, factors)]
    coordinates = np.stack(np.meshgrid(*centres, indexing="ij"))
    return ndimage.map_coordinates(blurred, coordinates, order=1, mode="nearest").astype(np.float32)
