"""Settings of the adaptation of a thick-slice model to one scan (:mod:`.adapt`): budgets, seed, sampling,
patch sizes, held-back share, slice profile and device."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..errors import InputError

SAMPLINGS = ("bootstrap", "raw")
#: ``all`` (the default): every weight learns; ``tail``: only the layers after the residual body (the upsampler
#: and the output convolution) learn, about three times more steps per second. Measured on 4x thick slices of five
#: held-out brains with 3 minutes on 2 CPU threads (``docs/adapt_benchmark.md``): ``all`` gained +0.12 to +1.62 dB
#: (mean +0.53), ``tail`` about +0.1 dB: the tail alone cannot move far from the starting model even when trained
#: on the truth itself (+0.22 / +0.31 dB against +1.00 / +1.36 dB for every layer).
TRAINABLE = ("all", "tail")
#: Seconds of adaptation ``--adapt`` uses when given without a number.
DEFAULT_SECONDS = 180.0


@dataclass(frozen=True)
class AdaptSettings:
    """How to adapt.

    Attributes:
        seconds: wall-clock budget in seconds (the bootstrap pass included); ``None`` for no time limit.
        steps: optimisation-step budget; ``None`` for no step limit. At least one budget must be given; the run
            stops at whichever ends first. Results are reproducible for a fixed ``seed`` and step budget (a time
            budget stops after a machine-dependent number of steps).
        seed: seeds ``torch.manual_seed`` and the numpy ``Generator`` of the patches.
        sampling: ``"bootstrap"`` or ``"raw"`` (see the module docstring).
        trainable: ``"tail"`` or ``"all"`` (see :data:`TRAINABLE`).
        learning_rate: Adam step size.
        ema: decay of an exponential moving average of the weights (``torch.optim.swa_utils.AveragedModel``,
            the decay warmed up as ``min(ema, (1 + n) / (10 + n))`` after ``n`` steps), which is what is validated
            and returned; 0 turns it off (the weights as they are after each step). Measured at 250 steps on three
            held-out volumes: 0.98 gained +0.03 to +0.06 dB more than no average.
        batch_size: patches per step.
        patch: patch edge (fine voxels) along the two axes that are not degraded.
        low_patch: patch length along the degraded axis after degradation (network input voxels); the target is
            ``r`` times longer.
        holdback: fraction of the thick planes held back for early stopping (at least 2 planes).
        holdback_tolerance: the weights returned are the latest whose held-back loss is within this share of the
            lowest one seen (and below the starting weights'); 0 returns the lowest.
        validation_patches: fixed held-back patches per evaluation.
        validate_every: steps between held-back evaluations.
        region: largest in-plane edge of the training region, centred on the head, in voxels of the pairs'
            spacing (the input's, or the target spacing where ``match_spacing`` resamples: a 0.2 mm scan with a
            1.25 mm target takes up to ``160 * 6.25`` input voxels); bounds the bootstrap pass's time. 160 rather
            than 96 gained +0.02 dB on average over seven held-out volumes at 3 minutes
            (``docs/adapt_benchmark.md``): more of the scan to learn from.
        match_spacing: resample in-plane axes finer than the through-plane target spacing (the thick spacing
            divided by ``r``) to that spacing before the pairs are cut, so that the pairs teach the step in mm that
            the through-plane axis needs (:func:`~.adapt_pairs.to_target_spacing`). Changes nothing for a scan
            whose in-plane voxels are already that size (1 x 1 x 4 mm at ``r = 4``); a small field of view is
            resampled only as far as the pairs still fit. Measured at 3 minutes: +0.09 dB on IXI002_T2 (0.94 mm
            in-plane, target 1.25 mm), +0.06 dB on a 0.66 mm prostate (``docs/adapt_benchmark.md``).
        slice_thickness: slice thickness in mm when it differs from the thick spacing (a gap between slices);
            ``None`` takes the model's slice profile as it is.
        gap: gap between slices as a fraction of the thick spacing (alternative to ``slice_thickness``).
        device: ``auto``, ``cpu``, ``cuda`` ... (as for enhance).
        precision: ``auto``, ``float32`` or ``bfloat16`` (as for enhance): the arithmetic of the bootstrap pass,
            which enhances the scan with the model before adapting it (``auto``: float32 on a CPU), and of the
            fine-tuning: ``auto`` and ``bfloat16`` fine-tune as the training does (bfloat16 autocast on CPUs with
            bfloat16 instructions, the GPU's half type on CUDA, float32 elsewhere; weights, optimiser state and
            loss float32), ``float32`` fine-tunes in float32 (:func:`~.adapt.fine_tuning_dtype`).
        source_sha256: SHA-256 of the input file, recorded in the adapted model's metadata; ``None`` hashes the
            voxel array (shape, dtype and bytes) instead.
    """

    seconds: float | None = DEFAULT_SECONDS
    steps: int | None = None
    seed: int = 0
    sampling: str = "bootstrap"
    trainable: str = "all"
    learning_rate: float = 2e-4
    ema: float = 0.98
    batch_size: int = 4
    patch: int = 24
    low_patch: int = 8
    holdback: float = 0.2
    holdback_tolerance: float = 0.01
    validation_patches: int = 8
    validate_every: int = 10
    region: int = 160
    match_spacing: bool = True
    slice_thickness: float | None = None
    gap: float | None = None
    device: str = "cpu"
    precision: str = "auto"
    source_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.seconds is None and self.steps is None:
            raise ValueError("give a time budget (seconds) or a step budget (steps) for adaptation")
        if self.seconds is not None and not self.seconds > 0:
            raise InputError(f"adaptation time {self.seconds} s must be positive; try 180")
        if self.steps is not None and self.steps < 0:
            raise InputError(f"adaptation steps {self.steps} must be at least 0")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        for name in ("batch_size", "patch", "low_patch", "validation_patches", "validate_every", "region"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if not isinstance(self.match_spacing, bool):
            raise ValueError(f"match_spacing must be True or False, got {self.match_spacing!r}")
        if isinstance(self.holdback_tolerance, bool) or not isinstance(self.holdback_tolerance, (int, float)):
            raise ValueError(f"holdback_tolerance must be a number in [0, 1), got {self.holdback_tolerance!r}")
        if not 0.0 <= self.holdback_tolerance < 1.0:
            raise ValueError(f"holdback_tolerance must be in [0, 1), got {self.holdback_tolerance}")
        if not 0.0 < self.holdback < 0.5:
            raise ValueError(f"holdback must be in (0, 0.5), got {self.holdback}")
        if self.slice_thickness is not None and self.gap is not None:
            raise InputError("give the slice thickness or the gap, not both")


def settings_with(settings: AdaptSettings, **changes: Any) -> AdaptSettings:
    """A copy of ``settings`` with ``changes`` (a convenience for callers holding frozen settings)."""
    return replace(settings, **changes)
