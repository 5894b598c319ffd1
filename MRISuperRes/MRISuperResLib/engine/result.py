"""What one enhance run produced: its output maps by key, its consistency scores and their verdict, its summary.

The maps are those of :data:`.outputs.OUTPUT_MAPS`; each is also an attribute (``result.sr``,
``result.uncertainty``: ``None`` when not computed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..imaging.geometry import Scale, format_scale
from ..imaging.volume import Volume
from .model_zoo import IDENTITY_ORDER
from .outputs import BY_KEY

if TYPE_CHECKING:  # the result itself needs no torch
    from .checkpoint import LoadedModel

#: A result is suspicious only when its consistency NRMSE is also this many times the B-spline baseline's on the
#: same input: where interpolation disagrees with the input as much, the input is unusual, not the network.
BASELINE_CONSISTENCY_MARGIN = 1.25
#: The share of the input's noise (``noise_nrmse``) that a score may carry on top of the calibrated threshold and
#: still be read as noise: root-sum-square, ``sqrt(threshold^2 + (NOISE_SHARE * noise)^2)``. Measured on a 5x thick
#: input simulated with 3 and 5 % k-space noise, noise added about 0.2 x its level to B-spline's score and about
#: 0.35 x to the 5x model's; extreme voxels or another slice profile add more than this allows.
NOISE_SHARE = 0.5


@dataclass
class EnhanceResult:
    """Everything one enhance run produced.

    Attributes:
        maps: the output volumes by key (:data:`.outputs.OUTPUT_MAPS`), only those computed; each also reads as an
            attribute, ``None`` when not computed:

            * ``sr``: super-resolved volume (input units; float32, or the input's dtype with ``keep_dtype``);
            * ``baseline``: cubic B-spline upsampling of the input on the same grid (float32);
            * ``difference``: ``sr - baseline`` (float32);
            * ``consistency``: ``|degrade(network output) - input|`` on the input grid (float32), the network's
              disagreement with the input before the data-consistency projection;
            * ``uncertainty``: standard deviation of the flip ensemble on the fine grid (float32).
        consistency_nrmse: RMS disagreement / normalisation range (unitless) of the network's output; ``nan`` when
            not computed.
        baseline_consistency_nrmse: the same score for the baseline, as a reference.
        scale: per-axis scale used.
        input_shape: shape of the input volume ``(i, j, k)``.
        model: the model that ran.
        axis_order: the input's axes in the order the network saw them (``(0, 1, 2)`` unless the model runs
            ``scale`` with its axes permuted, e.g. ``(1, 2, 0)`` for a ``1,1,4`` model asked for ``4,1,1``).
        device: description of where the network ran.
        ensemble_passes: network passes averaged into ``sr`` (8 with the flip ensemble, else 1).
        timings: seconds per stage.
        warnings: messages for the user (device fallback, label-map-like input).
        paths: written files by role, filled by :func:`enhance_file`.
        adaptation: the :class:`~.adapt.AdaptationReport` when the model was adapted to this input, else ``None``.
        projection: the :class:`~..processing.projection.ProjectionReport` of the data-consistency projection,
            ``None`` when it was turned off.
        noise_nrmse: the input's noise standard deviation, measured in its background
            (:func:`~..processing.projection.robust_sigma_of`), over the same normalisation range as the
            consistency scores: about the score that noise alone gives an input-consistent result; ``None`` when
            the input has no usable background or consistency was not checked.
    """

    maps: dict[str, Volume]
    consistency_nrmse: float
    baseline_consistency_nrmse: float
    scale: Scale
    input_shape: tuple[int, int, int]
    model: LoadedModel
    device: str
    axis_order: tuple[int, int, int] = IDENTITY_ORDER
    ensemble_passes: int = 1
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)
    adaptation: Any = None
    projection: Any = None
    noise_nrmse: float | None = None

    def __getattr__(self, name: str) -> Volume | None:
        # Only reached when normal lookup fails: a map's key reads its volume (None when not computed).
        maps = self.__dict__.get("maps")
        if maps is not None and name in BY_KEY:
            return maps.get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def consistency_threshold(self) -> float | None:
        """The model's calibrated threshold: above it the result disagrees with the input more than on
        validation scans (``None`` when the model has no calibration)."""
        return self.model.metadata.consistency_threshold

    @property
    def consistency_suspicious(self) -> bool | None:
        """True when the consistency NRMSE exceeds the calibrated threshold and also clearly exceeds the B-spline
        baseline's on the same input (``BASELINE_CONSISTENCY_MARGIN`` times); ``None`` without calibration."""
        threshold = self.consistency_threshold
        if threshold is None or self.consistency_nrmse != self.consistency_nrmse:
            return None
        baseline = self.baseline_consistency_nrmse
        beyond_baseline = baseline != baseline or self.consistency_nrmse > BASELINE_CONSISTENCY_MARGIN * baseline
        return self.consistency_nrmse > threshold and beyond_baseline

    def consistency_warning(self) -> str | None:
        """The warning the consistency scores call for, naming the culprit, or ``None``.

        A suspicious result (see :attr:`consistency_suspicious`) is blamed on the result; a result above the
        threshold whose B-spline baseline is about as inconsistent is blamed on the input (extreme voxels, or an
        acquisition unlike the model's forward model).
        """
        threshold = self.consistency_threshold
        if threshold is None or not self.consistency_nrmse > threshold:
            return None
        score, baseline = self.consistency_nrmse, self.baseline_consistency_nrmse
        name = self.model.name
        if self.consistency_suspicious:
            text, limit = distinct_numbers(score, threshold)
            versus = ""
            if baseline == baseline:
                versus = (f" and {_ratio(score, baseline)} x B-spline's {distinct_numbers(baseline, score)[0]} "
                          "on this input")
            return (f"consistency NRMSE {text} is {_ratio(score, threshold)} x model {name}'s calibrated threshold "
                    f"{limit}{versus}: the result disagrees with the measured data more than on validation scans and "
                    "more than interpolation does; inspect the consistency map before trusting details")
        text, base = distinct_numbers(score, baseline)
        if self.noise_nrmse is not None:
            allowed = (threshold ** 2 + (NOISE_SHARE * self.noise_nrmse) ** 2) ** 0.5
            if max(score, baseline) <= allowed:
                # What lifts both scores over the threshold is no more than the input's noise accounts for.
                return (f"this input is noisy (background noise {100 * self.noise_nrmse:.2g} % of its intensity "
                        f"range): its consistency NRMSE {text} and B-spline's {base} exceed model {name}'s calibrated "
                        f"threshold {distinct_numbers(threshold, min(score, baseline))[0]} by what the noise accounts "
                        "for, so the check cannot separate the network's errors from noise; judge details on the "
                        "images themselves")
        return (f"the input disagrees with model {name}'s forward model: B-spline's consistency NRMSE {base} is "
                f"{_ratio(baseline, threshold)} x the calibrated threshold {distinct_numbers(threshold, baseline)[0]}, "
                f"like the result's {text}; check the input for extreme voxels or an acquisition unlike the model's "
                "before trusting details")

    def summary(self) -> dict[str, Any]:
        """JSON-ready description of the run (what ``--json`` prints)."""
        return {
            "model": self.model.name,
            "model_sha256": self.model.file_sha256,
            "scale": format_scale(self.scale),
            "input_shape": list(self.input_shape),
            "output_shape": list(self.sr.shape),
            # 7 significant digits: what a float32 header holds, without its binary tail (0.4699999988 -> 0.47)
            "output_spacing": [float(f"{value:.7g}") for value in self.sr.spacing],
            "device": self.device,
            "axis_order": "".join("ijk"[axis] for axis in self.axis_order),
            "ensemble_passes": self.ensemble_passes,
            "consistency_nrmse": self.consistency_nrmse,
            "baseline_consistency_nrmse": self.baseline_consistency_nrmse,
            "consistency_threshold": self.consistency_threshold,
            "consistency_suspicious": self.consistency_suspicious,
            "noise_nrmse": self.noise_nrmse,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
            "outputs": dict(self.paths),
            "projection": self.projection.summary() if self.projection is not None else None,
            **({"adaptation": self.adaptation.summary()} if self.adaptation is not None else {}),
        }


def _ratio(value: float, reference: float) -> str:
    """``value / reference`` with two decimals, or more (up to eight) while they would read as exactly 1."""
    ratio = value / reference
    for places in range(2, 9):
        text = f"{ratio:.{places}f}"
        if float(text) != 1.0 or ratio == 1.0:
            break
    return text


def distinct_numbers(value: float, other: float, digits: int = 4) -> tuple[str, str]:
    """``value`` and ``other`` printed with ``digits`` significant digits, or more until they read differently
    (so ``0.009134`` is never shown as "0.0091 is above 0.0091"); at most 10."""
    for places in range(digits, 11):
        first, second = f"{value:.{places}g}", f"{other:.{places}g}"
        if first != second or value == other:
            break
    return first, second
