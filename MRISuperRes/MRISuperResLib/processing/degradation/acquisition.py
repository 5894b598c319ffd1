"""Simulated acquisitions that look like real scanners, for training: a random draw, then a deterministic apply.

:class:`~.spec.DegradationSpec` holds a model's *nominal* forward model (k-space truncation or a slice profile per
axis), the one the consistency map uses and the model card states. Real scanners differ from it in ways a network must
have seen to generalise to scanners it never saw, so training inputs are simulated here with the variation real
protocols have, drawn per sample:

* **slice profile** along thick axes: box or Gaussian (FWHM drawn), with a gap between slices (drawn);
* **k-space apodisation**: the filters scanners apply to the acquired matrix before reconstruction (none,
  Hamming, or Tukey with a drawn taper fraction) along the axes reconstructed from k-space;
* **partial Fourier**: a fraction (5/8 to 1) of one phase-encoding axis acquired, the rest zero-filled,
  reconstructed as a magnitude image (the asymmetric blur and ringing of zero-filled partial Fourier);
* **noise**: complex Gaussian noise in k-space at a drawn level (0 to 5 % of the 99th percentile), giving the
  Rician statistics of magnitude images;
* **bias field**: a smooth multiplicative field (seed 002 corrects it with N4; the network should not care);
* **contrast**: a gamma remapping of the normalised intensities (SynthSR-style contrast variation).

Sampling is separated from applying, as TorchIO's random transforms do: :meth:`AcquisitionRanges.draw` turns a
``numpy.random.Generator`` into an :class:`Acquisition` (plain numbers, JSON-ready, printed by ``simulate``), and
:func:`acquire` applies it deterministically (its noise and bias field come from the acquisition's own seed).

Arrays are ``[i, j, k]`` on cell-centred grids (see :mod:`...imaging.geometry`); the coarse shape covers the same
extent.
Sources: k-space truncation and complex noise (seed 003, eq. 1; seed 000), slice profiles with gaps (ECLARE,
SMORE), apodisation windows (Bernstein, King, Zhou, *Handbook of MRI Pulse Sequences*, 13.1), partial Fourier
zero-filling (ibid., 13.4), contrast and resolution randomisation (Iglesias et al., SynthSR, 2023).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from .base import REGISTRY, known_kinds
from .kspace import KSpaceTruncation
from .simulate import smooth_bias_field
from .spec import DegradationSpec, degrade

#: Apodisation windows applied to acquired k-space.
WINDOWS = ("none", "hamming", "tukey")

#: Smallest acquired fraction of a partially acquired phase-encoding axis (5/8, the usual scanner minimum).
MIN_PARTIAL_FOURIER = 0.625


@dataclass(frozen=True)
class Acquisition:
    """One simulated acquisition (deterministic given these numbers).

    Attributes:
        kinds: forward model per axis ``(i, j, k)``: ``"kspace"`` for axes reconstructed from k-space, a slice
            profile (``"box"``, ``"gaussian"``: :func:`slice_profiles`) for thick axes (axes that keep their size
            are left alone).
        fwhm: Gaussian profile width, coarse voxels.
        gap: gap between slices, fraction of the coarse spacing.
        window: apodisation window of :data:`WINDOWS` on the coarse k-space of the ``"kspace"`` axes.
        tukey_alpha: tapered fraction of the Tukey window (0 = none, 1 = Hann).
        partial_fourier: acquired fraction of k-space along ``partial_fourier_axis`` (1 = full).
        partial_fourier_axis: the partially acquired axis (a ``"kspace"`` axis).
        noise: standard deviation of complex k-space noise, fraction of the coarse 99th percentile (0 = none).
        bias: amplitude of the multiplicative bias field applied before acquisition (0.2 = up to +-20 %).
        gamma: exponent of the contrast remapping of the normalised fine volume (1 = unchanged).
        seed: seed of the noise and the bias field.
        voxel_mm: the high-resolution voxel edge (mm) the fine volume is resampled to (k-space) before it is
            acquired, so that the network sees anatomy at other sizes in voxels (SynthSR); ``None``: its own.
    """

    kinds: tuple[str, str, str] = (KSpaceTruncation.name,) * 3
    fwhm: float = 1.0
    gap: float = 0.0
    window: str = "none"
    tukey_alpha: float = 0.5
    partial_fourier: float = 1.0
    partial_fourier_axis: int = 0
    noise: float = 0.0
    bias: float = 0.0
    gamma: float = 1.0
    seed: int = 0
    voxel_mm: float | None = None

    def __post_init__(self) -> None:
        if len(self.kinds) != 3 or any(kind not in REGISTRY for kind in self.kinds):
            raise ValueError(f"acquisition kinds {self.kinds!r} must be three of {', '.join(known_kinds())}")
        if self.window not in WINDOWS:
            raise ValueError(f"apodisation window {self.window!r} is not one of {', '.join(WINDOWS)}")
        if not MIN_PARTIAL_FOURIER <= self.partial_fourier <= 1.0:
            raise ValueError(f"partial Fourier fraction {self.partial_fourier} is outside [{MIN_PARTIAL_FOURIER}, 1]")
        if self.partial_fourier_axis not in (0, 1, 2):
            raise ValueError(f"partial Fourier axis {self.partial_fourier_axis} is not 0, 1 or 2")
        if not 0.0 <= self.tukey_alpha <= 1.0 or self.noise < 0 or self.bias < 0 or self.gamma <= 0:
            raise ValueError("tukey_alpha must be in [0, 1], noise and bias non-negative, gamma positive")
        if self.voxel_mm is not None and not 0 < self.voxel_mm < np.inf:
            raise ValueError(f"voxel_mm {self.voxel_mm} must be a positive voxel edge in mm")

    @property
    def forward(self) -> DegradationSpec:
        """The deterministic resampling part (profile per axis), as the engine's forward-model spec."""
        return DegradationSpec(kind=self.kinds, fwhm=self.fwhm, gap=self.gap)

    def to_dict(self) -> dict[str, object]:
        values = asdict(self)
        values["kinds"] = list(self.kinds)
        if self.voxel_mm is None:
            del values["voxel_mm"]
        return values


def slice_profiles() -> tuple[str, ...]:
    """The registered kinds that are slice profiles (not reconstructed from k-space), in :data:`~.KINDS` order."""
    return tuple(kind for kind in known_kinds() if not REGISTRY[kind].from_kspace)


def _kspace_axes(kinds: Sequence[str]) -> list[int]:
    """The axes whose forward model is reconstructed from k-space (apodised, partially acquired)."""
    return [axis for axis, kind in enumerate(kinds) if REGISTRY[kind].from_kspace]


def _interval(value: object, name: str) -> tuple[float, float]:
    low, high = (value, value) if np.isscalar(value) else tuple(value)  # type: ignore[arg-type]
    low, high = float(low), float(high)
    if low > high:
        raise ValueError(f"{name} range [{low}, {high}] is empty; give [low, high] with low <= high")
    return low, high


@dataclass(frozen=True)
class AcquisitionRanges:
    """What a training run varies (the ``data.acquisition`` section of a training config).

    Attributes:
        thick_profiles: slice profiles drawn for axes whose scale is above 1 when the scale is anisotropic.
        fwhm: ``[low, high]`` Gaussian profile FWHM, coarse voxels.
        gap: ``[low, high]`` gap between thick slices, fraction of the coarse spacing.
        windows: apodisation windows drawn from (uniformly).
        tukey_alpha: ``[low, high]`` Tukey taper fraction.
        partial_fourier: ``[low, high]`` acquired fraction when partial Fourier is drawn.
        partial_fourier_probability: share of samples with partial Fourier.
        noise: ``[low, high]`` k-space noise level (fraction of the 99th percentile).
        bias: largest bias-field amplitude (drawn uniformly from ``[0, bias]``).
        gamma: ``[low, high]`` contrast exponent, drawn log-uniformly.
        gamma_probability: share of samples with a contrast remapping.
        voxel_mm: ``[low, high]`` high-resolution voxel edge (mm), drawn log-uniformly per draw: the training volume
            is resampled to it by k-space (sinc) resampling before the acquisition is simulated (SynthSR's
            resolution randomisation); ``None`` (the default) keeps each volume's own voxels.
    """

    thick_profiles: tuple[str, ...] = ("box", "gaussian")
    fwhm: tuple[float, float] = (0.8, 1.2)
    gap: tuple[float, float] = (0.0, 0.2)
    windows: tuple[str, ...] = WINDOWS
    tukey_alpha: tuple[float, float] = (0.2, 0.6)
    partial_fourier: tuple[float, float] = (MIN_PARTIAL_FOURIER, 1.0)
    partial_fourier_probability: float = 0.3
    noise: tuple[float, float] = (0.0, 0.05)
    bias: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.4)
    gamma_probability: float = 0.5
    voxel_mm: tuple[float, float] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, object] | None) -> "AcquisitionRanges":
        """Build from a config section; unknown keys and invalid values raise ``ValueError`` naming them."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown acquisition setting(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}")
        values: dict[str, object] = {}
        for name in ("fwhm", "gap", "tukey_alpha", "partial_fourier", "noise", "gamma"):
            if name in data:
                values[name] = _interval(data[name], name)
        if data.get("voxel_mm") is not None:
            values["voxel_mm"] = _interval(data["voxel_mm"], "voxel_mm")
        for name in ("thick_profiles", "windows"):
            if name in data:
                values[name] = (data[name],) if isinstance(data[name], str) else tuple(data[name])  # type: ignore[arg-type]
        for name in ("partial_fourier_probability", "bias", "gamma_probability"):
            if name in data:
                values[name] = float(data[name])  # type: ignore[arg-type]
        ranges = cls(**values)  # type: ignore[arg-type]
        ranges.check()
        return ranges

    def check(self) -> None:
        """Raise ``ValueError`` for values no acquisition can have."""
        profiles = slice_profiles()
        bad_profiles = [p for p in self.thick_profiles if p not in profiles]
        if not self.thick_profiles or bad_profiles:
            raise ValueError(f"thick_profiles must be some of {', '.join(profiles)}; "
                             f"got {list(self.thick_profiles)}")
        bad_windows = [w for w in self.windows if w not in WINDOWS]
        if not self.windows or bad_windows:
            raise ValueError(f"windows must be some of {', '.join(WINDOWS)}; got {list(self.windows)}")
        if self.partial_fourier[0] < MIN_PARTIAL_FOURIER or self.partial_fourier[1] > 1.0:
            raise ValueError(f"partial_fourier must lie in [{MIN_PARTIAL_FOURIER}, 1]; got {list(self.partial_fourier)}")
        if not (0.0 <= self.gap[0] and self.gap[1] < 1.0):
            raise ValueError(f"gap must lie in [0, 1); got {list(self.gap)}")
        if self.fwhm[0] <= 0 or self.gamma[0] <= 0 or self.noise[0] < 0 or self.bias < 0:
            raise ValueError("fwhm and gamma must be positive, noise and bias non-negative")
        for name in ("partial_fourier_probability", "gamma_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]")
        if self.voxel_mm is not None and not 0 < self.voxel_mm[0] <= self.voxel_mm[1] < np.inf:
            raise ValueError(f"voxel_mm must be [low, high] voxel edges in mm, 0 < low <= high; got {list(self.voxel_mm)}")

    def draw(self, rng: np.random.Generator, scale: Sequence[float]) -> Acquisition:
        """One random acquisition for a ``scale`` (``(i, j, k)``; thick axes are those above the smallest factor
        when the scale is anisotropic, and get a drawn slice profile; the other axes are k-space axes)."""
        scale = tuple(float(s) for s in scale)
        anisotropic = max(scale) > min(scale)
        profile = str(rng.choice(self.thick_profiles))
        kinds = tuple(profile if anisotropic and s > min(scale) else KSpaceTruncation.name for s in scale)
        kspace_axes = _kspace_axes(kinds)
        partial = 1.0
        axis = kspace_axes[0] if kspace_axes else 0
        if kspace_axes and rng.random() < self.partial_fourier_probability:
            partial = float(rng.uniform(*self.partial_fourier))
            axis = int(rng.choice(kspace_axes))
        gamma = 1.0
        if rng.random() < self.gamma_probability:
            gamma = float(np.exp(rng.uniform(np.log(self.gamma[0]), np.log(self.gamma[1]))))
        return Acquisition(
            kinds=kinds,  # type: ignore[arg-type]
            fwhm=float(rng.uniform(*self.fwhm)),
            gap=float(rng.uniform(*self.gap)) if anisotropic else 0.0,
            window=str(rng.choice(self.windows)),
            tukey_alpha=float(rng.uniform(*self.tukey_alpha)),
            partial_fourier=partial,
            partial_fourier_axis=axis,
            noise=float(rng.uniform(*self.noise)),
            bias=float(rng.uniform(0.0, self.bias)),
            gamma=gamma,
            seed=int(rng.integers(2**31)),
            # drawn last, and only when asked for, so that runs without it draw exactly what they drew before
            voxel_mm=(float(np.exp(rng.uniform(np.log(self.voxel_mm[0]), np.log(self.voxel_mm[1]))))
                      if self.voxel_mm is not None else None),
        )


def apodisation_window(size: int, window: str, alpha: float = 0.5) -> np.ndarray:
    """Weights of an apodisation window over ``size`` k-space samples in FFT order (index 0 = centre of
    k-space, weight 1 there), float64.

    ``"hamming"``: ``0.54 + 0.46 cos(2 pi k / N)``; ``"tukey"``: flat over the central ``1 - alpha`` of k-space,
    a cosine taper to 0 over the outer ``alpha``; ``"none"``: ones.
    """
    if window not in WINDOWS:
        raise ValueError(f"apodisation window {window!r} is not one of {', '.join(WINDOWS)}")
    frequencies = np.abs(np.fft.fftfreq(size))  # |k| / N in [0, 0.5]
    if window == "none" or size < 2:
        return np.ones(size)
    if window == "hamming":
        return 0.54 + 0.46 * np.cos(2.0 * np.pi * frequencies)
    radius = 2.0 * frequencies  # 0 at the centre, 1 at the edge of k-space
    flat = 1.0 - alpha
    taper = np.clip((radius - flat) / max(alpha, 1e-12), 0.0, 1.0)
    return np.where(radius <= flat, 1.0, 0.5 * (1.0 + np.cos(np.pi * taper)))


def partial_fourier_mask(size: int, fraction: float) -> np.ndarray:
    """Acquired samples (FFT order) when ``fraction`` of ``size`` phase-encoding lines are measured: all the
    negative frequencies and the first ``fraction * size - size / 2`` positive ones (the top of k-space is
    zero-filled)."""
    acquired = int(round(fraction * size))
    lines = np.fft.fftfreq(size, d=1.0 / size)  # integer k in FFT order, -N/2 .. N/2 - 1
    return (lines < acquired - size // 2).astype(np.float64)


def acquire(fine: np.ndarray, shape: Sequence[int], acquisition: Acquisition) -> np.ndarray:
    """Apply ``acquisition`` to a normalised fine volume: contrast, bias, resampling, then k-space effects.

    Args:
        fine: fine volume ``[i, j, k]`` in normalised units (about 0..1; negative values are clipped for the
            contrast remapping only).
        shape: coarse shape (each entry at most the fine one).
        acquisition: the drawn acquisition.

    Returns:
        float32 coarse magnitude image of ``shape``.
    """
    rng = np.random.default_rng(acquisition.seed)
    volume = np.asarray(fine, dtype=np.float32)
    if acquisition.gamma != 1.0:
        volume = np.power(np.clip(volume, 0.0, None), acquisition.gamma).astype(np.float32)
    if acquisition.bias > 0:
        volume = volume * smooth_bias_field(volume.shape, acquisition.bias, rng)
    coarse = degrade(volume, shape, acquisition.forward).astype(np.float64)
    kspace_axes = _kspace_axes(acquisition.kinds)
    filtered = acquisition.window != "none" and kspace_axes
    partial = acquisition.partial_fourier < 1.0 and acquisition.partial_fourier_axis in kspace_axes
    if not (filtered or partial or acquisition.noise > 0):
        return coarse.astype(np.float32)
    level = acquisition.noise * float(np.percentile(coarse, 99))
    spectrum = np.fft.fftn(coarse, norm="ortho")
    if level > 0:
        # Noise is acquired with the signal, so the window filters it and zero-filled lines hold none.
        spectrum += level * (rng.standard_normal(coarse.shape) + 1j * rng.standard_normal(coarse.shape))
    for axis in kspace_axes:
        weights = np.ones(coarse.shape[axis])
        if filtered:
            weights = weights * apodisation_window(coarse.shape[axis], acquisition.window, acquisition.tukey_alpha)
        if partial and axis == acquisition.partial_fourier_axis:
            weights = weights * partial_fourier_mask(coarse.shape[axis], acquisition.partial_fourier)
        view = [1, 1, 1]
        view[axis] = -1
        spectrum *= weights.reshape(view)
    return np.abs(np.fft.ifftn(spectrum, norm="ortho")).astype(np.float32)
