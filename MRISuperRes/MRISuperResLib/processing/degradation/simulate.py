"""The random part of a simulated acquisition: bias field and k-space noise around the deterministic forward model.

:func:`simulate` multiplies the fine volume by an optional smooth bias field, applies the spec's forward model
(:func:`~.spec.degrade`, deterministic) and adds complex Gaussian noise in k-space at a level drawn per sample
(seed 003), whose magnitude image is Rician. Every random step takes a ``numpy.random.Generator``, so results are
reproducible from a seed; the draws come in a fixed order (bias lattice, noise level, noise), which
``evaluation.evaluate.drawn_noise_level`` relies on. For scanner-like variation (profiles, apodisation, partial
Fourier, contrast) drawn per sample, see :mod:`.acquisition`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .spec import DegradationSpec, degrade


def simulate(
    array: np.ndarray, shape: Sequence[int], spec: DegradationSpec, rng: np.random.Generator
) -> np.ndarray:
    """Simulate an acquisition of the fine volume ``array`` on the coarse grid ``shape``.

    Steps: multiply by a smooth bias field (``spec.bias``), apply the forward model (:func:`~.spec.degrade`), add
    complex Gaussian noise in k-space at a level drawn uniformly from ``spec.noise`` and take the magnitude
    (Rician statistics, as in a magnitude MR image).

    Returns:
        float32 array of ``shape``.
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

    ``f`` is a random ``nodes^3`` lattice upsampled with cubic splines over the whole volume (what
    ``scipy.ndimage.zoom(order=3, mode="nearest", grid_mode=True)`` gives, computed as its separable tensor product:
    a few hundred times faster on a 256^3 volume, which every training refresh draws).
    """
    lattice = rng.standard_normal((nodes, nodes, nodes))
    weights = [_spline_zoom_weights(int(n), nodes) for n in shape]
    field = np.einsum("ia,jb,kc,abc->ijk", *weights, lattice, optimize=True)
    field *= np.log1p(amplitude) / max(float(np.abs(field).max()), 1e-12)
    return np.exp(field).astype(np.float32)


def _spline_zoom_weights(size: int, nodes: int) -> np.ndarray:
    """``(size, nodes)``: column ``m`` is the 1-D cubic-spline zoom of node ``m``'s unit impulse to ``size``."""
    from scipy import ndimage  # imported here: loading scipy.ndimage costs every enhance process half a second

    impulses = np.eye(nodes)
    return np.stack([ndimage.zoom(impulses[m], size / nodes, order=3, mode="nearest", grid_mode=True)[:size]
                     for m in range(nodes)], axis=1)
