"""Per-volume clipped-percentile min-max normalisation and its exact inverse.

The user's thesis (seed 002, sections 1.3.1 and 3.1.2) found that a min-max normalisation between the 1st and
99th percentiles, with values outside clipped, gives intensity distributions that agree far better between
subjects than plain min-max, because very bright voxels (vessels) vary a lot. The percentiles a model was
trained with are stored in its metadata and used again at inference: the same normalisation at train and test
time (seed 000, question 1).

Normalising maps ``low -> 0`` and ``high -> 1`` with an affine map; clipping to ``[0, 1]`` is applied to what
the network sees only. :meth:`PercentileNormalizer.denormalize` is the exact inverse of the affine map, so
network outputs come back in the input's intensity units. :func:`normalize_network_input` is that one step,
called by training (:mod:`.training.data`) and by ``enhance`` (:mod:`.enhance`) alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class PercentileNormalizer:
    """Affine intensity map fitted to one volume.

    Attributes:
        low: intensity that maps to 0 (the lower percentile of the volume).
        high: intensity that maps to 1 (the upper percentile); always greater than ``low``.
    """

    low: float
    high: float

    @classmethod
    def fit(
        cls,
        array: np.ndarray,
        lower_percentile: float = 1.0,
        upper_percentile: float = 99.0,
        mask: np.ndarray | None = None,
    ) -> PercentileNormalizer:
        """Fit the map to ``array`` (optionally only the voxels where ``mask`` is true).

        Raises:
            InputError: the volume is constant (no intensity range to normalise).
        """
        if not 0.0 <= lower_percentile < upper_percentile <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower_percentile}, {upper_percentile}")
        values = np.asarray(array if mask is None else array[mask], dtype=np.float64)
        if values.size == 0:
            raise InputError("the volume has no voxels inside its mask; check the mask")
        low, high = np.percentile(values, [lower_percentile, upper_percentile])
        if not high > low:
            # Sparse volumes (mostly background) can have equal percentiles: fall back to the full range.
            low, high = float(values.min()), float(values.max())
        if not high > low:
            raise InputError(
                f"the volume is constant (every voxel is {low:g}); there is no detail to enhance"
            )
        return cls(float(low), float(high))

    @property
    def scale(self) -> float:
        """Intensity units per normalised unit (``high - low``)."""
        return self.high - self.low

    def normalize(self, array: np.ndarray, clip: bool = True) -> np.ndarray:
        """Map intensities to the normalised range as float32; ``clip`` limits the result to ``[0, 1]``."""
        normalised = (np.asarray(array, dtype=np.float32) - np.float32(self.low)) / np.float32(self.scale)
        return np.clip(normalised, 0.0, 1.0, out=normalised) if clip else normalised

    def denormalize(self, array: np.ndarray) -> np.ndarray:
        """Exact inverse of the affine map (no clipping): normalised values back to intensity units, float32."""
        return np.asarray(array, dtype=np.float32) * np.float32(self.scale) + np.float32(self.low)


@dataclass(frozen=True)
class NormalizationSettings:
    """How a model's inputs are normalised; stored in the model's metadata under ``normalization``.

    Attributes:
        lower_percentile: percentile mapped to 0.
        upper_percentile: percentile mapped to 1.
        clip: clip the network input to ``[0, 1]`` (seed 002's clipped min-max; default).
    """

    lower_percentile: float = 1.0
    upper_percentile: float = 99.0
    clip: bool = True

    @classmethod
    def from_dict(cls, values: dict | None) -> NormalizationSettings:
        """From a model's metadata or a training config (missing keys take the defaults).

        Raises:
            ValueError: unknown keys or percentiles outside ``0 <= lower < upper <= 100``.
        """
        values = dict(values or {})
        unknown = set(values) - {"lower_percentile", "upper_percentile", "clip"}
        if unknown:
            raise ValueError(f"unknown normalisation key(s) {', '.join(sorted(unknown))}; valid keys: "
                             "lower_percentile, upper_percentile, clip")
        settings = cls(float(values.get("lower_percentile", 1.0)), float(values.get("upper_percentile", 99.0)),
                       bool(values.get("clip", True)))
        if not 0.0 <= settings.lower_percentile < settings.upper_percentile <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {settings.lower_percentile}, "
                             f"{settings.upper_percentile}")
        return settings

    def to_dict(self) -> dict[str, float | bool]:
        return {"lower_percentile": self.lower_percentile, "upper_percentile": self.upper_percentile,
                "clip": self.clip}


def normalize_network_input(array: np.ndarray,
                            settings: NormalizationSettings) -> tuple[PercentileNormalizer, np.ndarray]:
    """The one normalisation of what a network sees, used by training and by ``enhance`` alike.

    Fits the percentile map to ``array`` (a whole low-resolution volume, in its own intensity units) and applies
    it, clipped to ``[0, 1]`` when ``settings.clip``. Returns the map (to express targets and baselines in the
    same units, unclipped, and to de-normalise outputs) and the float32 network input of ``array``'s shape.

    Raises:
        InputError: the volume is constant.
    """
    normalizer = PercentileNormalizer.fit(array, settings.lower_percentile, settings.upper_percentile)
    return normalizer, normalizer.normalize(array, clip=settings.clip)


def cast_like_input(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast float results to an input's data type: round to nearest for integers and clip to its range."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(array), info.min, info.max).astype(dtype)
    return array.astype(dtype)
