"""Forward models that turn a fine volume into the coarse one a scanner would have measured.

Each model maps an array on a fine cell-centred grid to an array of a given coarser shape covering the same
physical extent (see :mod:`.geometry`). They serve two purposes: simulating low-resolution training inputs
(:func:`simulate`, which adds noise and bias), and the engine's data-consistency check (:func:`degrade`,
deterministic: degrade the super-resolved volume back onto the input grid and compare with what was measured).

Kinds (``DegradationSpec.kind``, one for all axes or one per axis ``(i, j, k)``):

* ``"kspace"`` -- k-space truncation: keep the central low frequencies of the Fourier transform, as a scanner
  that acquires a smaller matrix over the same field of view (seed 000: "cutting off three quarters of high
  frequency region"; seed 003, eq. 1). Sample positions follow the cell-centred rule exactly.
* ``"box"`` -- a rectangular slice profile: the average over the coarse voxel (minus an optional ``gap``
  between slices), the partial-volume model of thick 2D slices.
* ``"gaussian"`` -- a Gaussian profile of full width at half maximum ``fwhm`` coarse voxels, sampled at the
  coarse voxel centres (blur + decimation, seed 000's first approach; also a smooth slice profile).

:func:`simulate` then adds an optional smooth multiplicative bias field (before acquisition) and complex
Gaussian noise in k-space at a level drawn per sample (seed 003), whose magnitude image is Rician.

Arrays are indexed ``[i, j, k]``; shapes and factors are in that order. Every random step takes a
``numpy.random.Generator`` so results are reproducible from a seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

KINDS = ("kspace", "box", "gaussian")

_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class DegradationSpec:
    """How low-resolution data relate to high-resolution data.

    Attributes:
        kind: one of :data:`KINDS`, or three of them, one per axis ``(i, j, k)`` (e.g. k-space truncation
            in-plane and a box slice profile through-plane: ``("kspace", "kspace", "box")``).
        fwhm: for ``"gaussian"``, the profile's full width at half maximum in coarse voxels (1.0 = one voxel).
        gap: for ``"box"`` and ``"gaussian"``, the gap between slices as a fraction of the coarse spacing
            (the profile's width shrinks to ``1 - gap`` voxels); ``0`` for contiguous slices.
        noise: ``(low, high)`` standard deviation of complex Gaussian k-space noise, as a fraction of the coarse
            volume's 99th-percentile intensity; :func:`simulate` draws one level per sample uniformly.
        bias: amplitude of a smooth multiplicative bias field applied before acquisition (0.2 = up to +-20 %).
    """

    kind: str | tuple[str, str, str] = "kspace"
    fwhm: float = 1.0
    gap: float = 0.0
    noise: tuple[float, float] = (0.0, 0.0)
    bias: float = 0.0

    def __post_init__(self) -> None:
        kinds = (self.kind,) * 3 if isinstance(self.kind, str) else tuple(self.kind)
        if len(kinds) != 3 or any(k not in KINDS for k in kinds):
            raise ValueError(f"degradation kind {self.kind!r} is not one of {', '.join(KINDS)} (or three of them)")
        if not isinstance(self.kind, str):
            object.__setattr__(self, "kind", kinds)
        noise = (float(self.noise), float(self.noise)) if np.isscalar(self.noise) else tuple(map(float, self.noise))
        if len(noise) != 2 or not 0.0 <= noise[0] <= noise[1]:
            raise ValueError(f"noise must be a level or a (low, high) range with 0 <= low <= high, got {self.noise!r}")
        object.__setattr__(self, "noise", noise)
        if not 0.0 <= self.gap < 1.0:
            raise ValueError(f"gap must be in [0, 1), got {self.gap}")
        if self.fwhm <= 0 or self.bias < 0:
            raise ValueError("fwhm must be positive and bias non-negative")

    @property
    def kinds(self) -> tuple[str, str, str]:
        """The kind along each axis ``(i, j, k)``."""
        return (self.kind,) * 3 if isinstance(self.kind, str) else self.kind  # type: ignore[return-value]

    @classmethod
    def from_dict(cls, data: Mapping[str, object] | None) -> "DegradationSpec":
        """Build from model metadata or a config (missing keys take defaults; unknown keys are refused)."""
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown degradation setting(s) {', '.join(sorted(unknown))}; "
                f"valid: {', '.join(cls.__dataclass_fields__)}"
            )
        kind = data.get("kind", "kspace")
        noise = data.get("noise", (0.0, 0.0))
        return cls(
            kind=kind if isinstance(kind, str) else tuple(kind),  # type: ignore[arg-type]
            fwhm=float(data.get("fwhm", 1.0)),  # type: ignore[arg-type]
            gap=float(data.get("gap", 0.0)),  # type: ignore[arg-type]
            noise=noise if np.isscalar(noise) else tuple(noise),  # type: ignore[arg-type]
            bias=float(data.get("bias", 0.0)),  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind if isinstance(self.kind, str) else list(self.kind), "fwhm": self.fwhm,
                "gap": self.gap, "noise": list(self.noise), "bias": self.bias}


def degrade(array: np.ndarray, shape: Sequence[int], spec: DegradationSpec) -> np.ndarray:
    """Apply the deterministic forward model of ``spec`` and sample on the cell-centred grid of ``shape``.

    Noise and bias are not applied (see :func:`simulate`).

    Args:
        array: fine volume ``[i, j, k]``.
        shape: coarse shape; each entry at most the fine one (equal means that axis is left alone).
        spec: which forward model.

    Returns:
        float32 array of ``shape``.
    """
    shape = tuple(int(n) for n in shape)
    if any(c > f for c, f in zip(shape, array.shape)):
        raise ValueError(f"degraded shape {shape} is larger than the input shape {array.shape}")
    result = np.asarray(array, dtype=np.float64)
    for axis, (size, kind) in enumerate(zip(shape, spec.kinds)):
        if size == result.shape[axis]:
            continue
        if kind == "kspace":
            result = _fourier_resample_axis(result, size, axis)
        else:
            weights = _profile_weights(result.shape[axis], size, kind, spec.fwhm, spec.gap)
            result = np.moveaxis(np.tensordot(weights, result, axes=([1], [axis])), 0, axis)
    return np.ascontiguousarray(result, dtype=np.float32)


def simulate(
    array: np.ndarray, shape: Sequence[int], spec: DegradationSpec, rng: np.random.Generator
) -> np.ndarray:
    """Simulate an acquisition of the fine volume ``array`` on the coarse grid ``shape``.

    Steps: multiply by a smooth bias field (``spec.bias``), apply the forward model (:func:`degrade`), add
    complex Gaussian noise in k-space at a level drawn uniformly from ``spec.noise`` and take the magnitude
    (Rician statistics, as in a magnitude MR image).
    """
    fine = np.asarray(array, dtype=np.float32)
    if spec.bias > 0:
        fine = fine * smooth_bias_field(fine.shape, spec.bias, rng)
    coarse = degrade(fine, shape, spec)
    level = rng.uniform(*spec.noise) if spec.noise[1] > 0 else 0.0
    if level > 0:
        coarse = add_kspace_noise(coarse, level * float(np.percentile(coarse, 99)), rng)
    return coarse


def add_kspace_noise(array: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add complex white Gaussian noise of standard deviation ``sigma`` (per real/imaginary part) in k-space
    (orthonormal FFT) and return the magnitude image, float32."""
    spectrum = np.fft.fftn(np.asarray(array, dtype=np.float64), norm="ortho")
    spectrum += sigma * (rng.standard_normal(array.shape) + 1j * rng.standard_normal(array.shape))
    return np.abs(np.fft.ifftn(spectrum, norm="ortho")).astype(np.float32)


def smooth_bias_field(shape: Sequence[int], amplitude: float, rng: np.random.Generator, nodes: int = 4) -> np.ndarray:
    """A smooth positive multiplicative field ``exp(f)`` with ``max |f| = log(1 + amplitude)``.

    ``f`` is a random ``nodes^3`` lattice upsampled with cubic splines over the whole volume.
    """
    from scipy import ndimage  # imported here: loading scipy.ndimage costs every enhance process half a second

    lattice = rng.standard_normal((nodes, nodes, nodes))
    field = ndimage.zoom(lattice, [n / nodes for n in shape], order=3, mode="nearest", grid_mode=True)
    field = field[tuple(slice(0, n) for n in shape)]
    field *= np.log1p(amplitude) / max(float(np.abs(field).max()), 1e-12)
    return np.exp(field).astype(np.float32)


def _profile_weights(size_in: int, size_out: int, kind: str, fwhm: float, gap: float) -> np.ndarray:
    """``(size_out, size_in)`` matrix of a slice profile: row ``m`` weights fine voxels for coarse voxel ``m``.

    Box: exact overlap of each fine voxel with the profile ``[centre - w/2, centre + w/2]``, ``w = (1 - gap)``
    coarse voxels. Gaussian: the profile's integral over each fine voxel (``fwhm * (1 - gap)`` coarse voxels
    wide at half maximum). Rows are normalised to 1 (at the volume's faces, the part outside is dropped).
    """
    ratio = size_in / size_out
    centres = (np.arange(size_out)[:, None] + 0.5) * ratio  # coarse centres in fine edge coordinates
    lower, upper = np.arange(size_in)[None, :], np.arange(size_in)[None, :] + 1.0
    if kind == "box":
        half = 0.5 * ratio * (1.0 - gap)
        weights = np.clip(np.minimum(centres + half, upper) - np.maximum(centres - half, lower), 0.0, None)
    else:
        from scipy.special import erf

        sigma = max(fwhm * (1.0 - gap) * ratio * _FWHM_TO_SIGMA, 1e-6)
        scale = 1.0 / (np.sqrt(2.0) * sigma)
        weights = 0.5 * (erf((upper - centres) * scale) - erf((lower - centres) * scale))
    return weights / weights.sum(axis=1, keepdims=True)


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
    if size_out < size_in:
        return _fourier_shrink_axis(array, size_out, axis)
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


def _fourier_shrink_axis(array: np.ndarray, size_out: int, axis: int) -> np.ndarray:
    """:func:`_fourier_resample_axis` for ``size_out < size_in`` through real FFTs (half the work).

    A real volume has a Hermitian spectrum and the cell-centre phase ramp keeps it Hermitian, so only the
    non-negative frequencies ``0 .. size_out // 2`` are formed. The output's Nyquist bin (even ``size_out``)
    receives half of each of the two input bins ``+-size_out / 2``; for a real signal that sum is the real part
    of one of them, which is what the inverse real FFT takes from that bin.
    """
    from scipy import fft  # pocketfft's C++ core: about 1.5x numpy's own along a non-contiguous axis

    size_in = array.shape[axis]
    spectrum = fft.rfft(array, axis=axis)
    bins = size_out // 2 + 1
    frequencies = np.arange(bins)
    phase = np.exp(1j * np.pi * frequencies * (1.0 / size_out - 1.0 / size_in))
    shape = [1] * array.ndim
    shape[axis] = bins
    kept = np.take(spectrum, np.arange(bins), axis=axis) * phase.reshape(shape)
    return fft.irfft(kept, n=size_out, axis=axis) * (size_out / size_in)


def box_downsample(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Average over each coarse voxel's footprint with exact area weights (any size ratio)."""
    return degrade(array, shape, DegradationSpec("box"))


def gaussian_downsample(array: np.ndarray, shape: Sequence[int], fwhm: float) -> np.ndarray:
    """Gaussian profile of ``fwhm`` coarse voxels along each axis that shrinks, sampled at the coarse centres."""
    return degrade(array, shape, DegradationSpec("gaussian", fwhm))
