"""Adapt a thick-slice model to one scan: self-supervised fine-tuning on the scan's own in-plane detail.

A thick-slice scan is fine in-plane and coarse through-plane. Its in-plane resolution is what its through-plane
resolution should become, so the scan carries its own training pairs (the idea of SMORE / ECLARE): degrade an
**in-plane** axis ``a`` with the model's slice profile by the through-plane ratio ``r``, move it to the position of
the network's thick axis, and learn to undo it. SMORE and ECLARE train a 2D network from scratch on every scan;
here a pretrained 3D model (the prior) is fine-tuned for a few hundred steps at most.

The 3D mismatch, and the sampling that limits it. In a training patch the degraded in-plane axis ``a`` sits at the
network's thick position and the true thick axis ``t`` moves into the network's in-plane position ``a`` left.
Taken from the scan as it is (``sampling="raw"``), that in-plane position is ``r`` times coarser than anything the
network saw in training and than it will see at inference. ``sampling="bootstrap"`` (the default) first enhances
the training region with the starting model along ``t`` (a two-pass scheme) and cuts the patches from that: ``t``
is then on the fine grid, blurred only as much as the starting model leaves it, and the patch's voxels are
(nearly) isotropic as at inference. The benchmark ``benchmarks/bench_adapt.py`` measures both.

Held-back data. A slab of thick planes (``holdback``, a fraction of them, across the middle of the training
region) is never trained on; pairs made from it the same way give the held-back L1 loss, measured before the
first step and every ``validate_every`` steps. The weights with the lowest held-back loss are returned, the
starting weights included, so adaptation never ends worse than the starting model on the held-back planes.

Isotropic scales (``2,2,2``) are refused: the zero-shot variant (degrade the scan itself by the scale, learn
scan <- degraded scan) would teach the model the step from the scan's resolution to half of it, whose content
(already band-limited by the scan's own acquisition) differs from what the model must restore; it was not
measured here, so it is not offered (an untested variant could make results worse unnoticed).

Normalisation is the model's own (:class:`~.normalization.PercentileNormalizer` with its metadata's percentiles,
fitted on the whole input, the network input clipped as in :func:`~.enhance.enhance_volume`). Arrays here are in
the network's axis order (``np.transpose(volume, order)`` with the thick axis last, see
:func:`~.model_zoo.axis_order`).
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..processing.bspline import bspline_upsample
from .checkpoint import LoadedModel, save_model, weights_checksum
from ..processing.degradation import DegradationSpec, degrade
from .device import select_device
from ..errors import CancelledError, InputError, ModelError
from ..imaging.geometry import Scale, format_scale, parse_scale
from .inference import CancelCheck, ProgressCallback, run_tiled
from .model_zoo import check_scale
from ..processing.normalization import PercentileNormalizer
from ..imaging.volume import Volume

SAMPLINGS = ("bootstrap", "raw")
#: ``tail``: only the layers after the residual body (the upsampler and the output convolution) learn, so each
#: step back-propagates through two convolutions; ``all``: every weight learns (several times slower per step).
TRAINABLE = ("tail", "all")
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
        batch_size: patches per step.
        patch: patch edge (fine voxels) along the two axes that are not degraded.
        low_patch: patch length along the degraded axis after degradation (network input voxels); the target is
            ``r`` times longer.
        holdback: fraction of the thick planes held back for early stopping (at least 2 planes).
        validation_patches: fixed held-back patches per evaluation.
        validate_every: steps between held-back evaluations.
        region: largest in-plane edge (input voxels) of the training region, centred on the head; bounds the
            bootstrap pass's time and the memory.
        slice_thickness: slice thickness in mm when it differs from the thick spacing (a gap between slices);
            ``None`` takes the model's slice profile as it is.
        gap: gap between slices as a fraction of the thick spacing (alternative to ``slice_thickness``).
        device: ``auto``, ``cpu``, ``cuda`` ... (as for enhance).
        source_sha256: SHA-256 of the input file, recorded in the adapted model's metadata; ``None`` hashes the
            voxel array (shape, dtype and bytes) instead.
    """

    seconds: float | None = DEFAULT_SECONDS
    steps: int | None = None
    seed: int = 0
    sampling: str = "bootstrap"
    trainable: str = "tail"
    learning_rate: float = 2e-4
    batch_size: int = 4
    patch: int = 24
    low_patch: int = 8
    holdback: float = 0.2
    validation_patches: int = 8
    validate_every: int = 10
    region: int = 96
    slice_thickness: float | None = None
    gap: float | None = None
    device: str = "cpu"
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
        if not 0.0 < self.holdback < 0.5:
            raise ValueError(f"holdback must be in (0, 0.5), got {self.holdback}")
        if self.slice_thickness is not None and self.gap is not None:
            raise InputError("give the slice thickness or the gap, not both")


@dataclass
class AdaptationReport:
    """What one adaptation did.

    Attributes:
        steps: optimisation steps taken.
        seconds: wall-clock seconds in all (bootstrap pass and evaluations included).
        bootstrap_seconds: seconds of the bootstrap pass (0 with ``sampling="raw"``).
        best_step: step whose weights were kept (0: the starting weights were best).
        held_back_before: held-back L1 loss of the starting model (normalised intensity units).
        held_back_after: held-back L1 loss of the returned model (never above ``held_back_before``).
        history: ``(step, held-back loss)`` at each evaluation.
        settings: the settings used (JSON-ready).
        input_sha256: hash recorded in the adapted model (of the input file, or of its voxels).
    """

    steps: int
    seconds: float
    bootstrap_seconds: float
    best_step: int
    held_back_before: float
    held_back_after: float
    history: list[tuple[int, float]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    input_sha256: str = ""

    @property
    def improvement(self) -> float:
        """Relative decrease of the held-back loss (0.05 = 5 % lower)."""
        return 1.0 - self.held_back_after / self.held_back_before if self.held_back_before > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["improvement"] = self.improvement
        return data


def voxel_sha256(volume: Volume) -> str:
    """SHA-256 of a volume's voxels (shape, dtype, C-order bytes): identifies an input that has no file."""
    array = np.ascontiguousarray(volume.array)
    digest = hashlib.sha256(f"{array.shape}|{array.dtype}|".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def thick_ratio(model: LoadedModel, scale: Scale) -> tuple[tuple[int, int, int], int]:
    """The axis order that puts the thick axis last for the network, and the through-plane ratio ``r``.

    Raises:
        InputError: ``scale`` is isotropic or not of the thick-slice form (one axis ``r > 1``, the others 1).
    """
    order = check_scale(model, scale)
    ordered = [scale[a] for a in order]
    if not (abs(ordered[0] - 1) < 1e-6 and abs(ordered[1] - 1) < 1e-6 and ordered[2] > 1):
        raise InputError(
            f"adaptation needs thick slices along one axis (a scale such as 1,1,4), not {format_scale(scale)}: "
            "an isotropic scan has no finer in-plane data to learn from; enhance without --adapt"
        )
    ratio = float(ordered[2])
    if abs(ratio - round(ratio)) > 1e-6:
        raise InputError(f"adaptation needs an integer through-plane ratio, not {ratio:g}")
    return order, round(ratio)


def in_plane_spec(model: LoadedModel, thick_spacing: float, settings: AdaptSettings) -> DegradationSpec:
    """The slice profile to apply along an in-plane axis: the model's through-plane (network ``k``) profile, with
    the gap from ``settings`` (given directly, or from the slice thickness and the thick spacing) when given.

    Raises:
        InputError: the slice thickness is not positive or exceeds the spacing (overlapping slices are not modelled).
    """
    spec = DegradationSpec.from_dict(model.metadata.degradation)
    gap = spec.gap
    if settings.gap is not None:
        gap = float(settings.gap)
    elif settings.slice_thickness is not None:
        thickness = float(settings.slice_thickness)
        if not 0 < thickness <= thick_spacing * (1 + 1e-6):
            raise InputError(
                f"slice thickness {thickness:g} mm must be positive and at most the slice spacing "
                f"{thick_spacing:g} mm (overlapping slices are not modelled); leave it out to use the model's profile"
            )
        gap = max(0.0, 1.0 - thickness / thick_spacing)
    if not 0.0 <= gap < 1.0:
        raise InputError(f"slice gap {gap:g} must be in [0, 1) of the slice spacing")
    return DegradationSpec(kind=spec.kinds[2], fwhm=spec.fwhm, gap=gap)


def _training_region(volume: Volume, order: tuple[int, int, int], edge: int) -> tuple[slice, slice]:
    """In-plane window (network axes 0 and 1) of at most ``edge`` voxels, centred on the head's bounding box."""
    from ..processing.preprocess import foreground_mask

    mask = np.transpose(foreground_mask(volume), order)
    shape = mask.shape
    window = []
    for axis in (0, 1):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        centre = (present[0] + present[-1] + 1) // 2 if present.size else shape[axis] // 2
        size = min(edge, shape[axis])
        start = int(np.clip(centre - size // 2, 0, shape[axis] - size))
        window.append(slice(start, start + size))
    return window[0], window[1]


class _PairSampler:
    """Cuts training / held-back pairs from the pool (network axis order, thick axis last).

    ``pool``: normalised unclipped intensities; along axis 2 each thick plane spans ``t_step`` pool voxels
    (``r`` after the bootstrap pass, 1 for raw sampling). The held-back slab ``[hold_start, hold_stop)`` is in pool
    voxels along axis 2.
    """

    def __init__(self, pool: np.ndarray, mask: np.ndarray, ratio: int, spec: DegradationSpec, settings: AdaptSettings,
                 t_step: int, clip: bool) -> None:
        self.pool, self.mask, self.ratio, self.spec, self.clip = pool, mask, ratio, spec, clip
        planes = pool.shape[2] // t_step
        held = max(2, round(settings.holdback * planes))
        if planes - held < 2:
            raise InputError(f"the scan has {planes} thick planes; adaptation needs at least 4")
        first = (planes - held) // 2
        self.hold = (first * t_step, (first + held) * t_step)
        self.long = ratio * settings.low_patch
        self.edge = settings.patch
        if min(pool.shape[0], pool.shape[1]) < self.long:
            raise InputError(
                f"the scan's in-plane size {pool.shape[0]}x{pool.shape[1]} is too small for adaptation at ratio "
                f"{ratio} (needs {self.long} voxels); enhance without adapting"
            )

    def _extent(self, a: int, t_extent: int) -> list[int]:
        # The two undegraded axes get one length so that patches of either layout stack into one batch.
        side = min(t_extent, self.pool.shape[0], self.pool.shape[1])
        extent = [side, side, side]
        extent[a] = self.long
        return extent

    def _cut(self, start: list[int], extent: list[int], a: int, swap: bool, flips: tuple[int, ...]) -> np.ndarray:
        target = self.pool[tuple(slice(s, s + e) for s, e in zip(start, extent))]
        b = 1 - a
        # Network layout: the degraded in-plane axis a goes to the thick position (2); b and t fill 0 and 1.
        layout = (2, b, a) if swap else (b, 2, a)
        target = np.transpose(target, layout)
        return np.flip(target, flips) if flips else target

    def _pair(self, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        low_shape = (target.shape[0], target.shape[1], target.shape[2] // self.ratio)
        return np.ascontiguousarray(target, dtype=np.float32), degrade(target, low_shape, self.spec)

    def _t_ranges(self, held_back: bool) -> list[tuple[int, int]]:
        n = self.pool.shape[2]
        return [self.hold] if held_back else [(0, self.hold[0]), (self.hold[1], n)]

    def draw(self, rng: np.random.Generator, count: int, held_back: bool, augment: bool) -> tuple[torch.Tensor, ...]:
        """``count`` pairs: (network input, its B-spline baseline, target), each ``(count, 1, ...)`` float32."""
        ranges = [(lo, hi) for lo, hi in self._t_ranges(held_back) if hi > lo]
        t_extent = min(self.edge, min(hi - lo for lo, hi in ranges) if held_back else max(hi - lo for lo, hi in ranges))
        ranges = [(lo, hi) for lo, hi in ranges if hi - lo >= t_extent]
        lows, targets = [], []
        for _ in range(count):
            a = int(rng.integers(2))
            extent = self._extent(a, t_extent)
            lo, hi = ranges[int(rng.integers(len(ranges)))]
            start = [0, 0, 0]
            # Centre on a head voxel of the chosen slab when there is one (90 % of draws), else anywhere.
            region = self.mask[:, :, lo:hi]
            candidates = np.flatnonzero(region) if rng.random() < 0.9 else np.empty(0, dtype=np.int64)
            if candidates.size:
                centre = np.unravel_index(int(candidates[rng.integers(candidates.size)]), region.shape)
                centre = (centre[0], centre[1], centre[2] + lo)
            else:
                centre = (int(rng.integers(self.pool.shape[0])), int(rng.integers(self.pool.shape[1])),
                          int(rng.integers(lo, hi)))
            bounds = [(0, self.pool.shape[0]), (0, self.pool.shape[1]), (lo, hi)]
            for axis in range(3):
                low_bound, high_bound = bounds[axis]
                start[axis] = int(np.clip(centre[axis] - extent[axis] // 2, low_bound, high_bound - extent[axis]))
            swap = bool(rng.integers(2))
            flips = tuple(axis for axis in range(3) if augment and rng.random() < 0.5)
            target, low = self._pair(self._cut(start, extent, a, swap, flips))
            targets.append(target)
            lows.append(low)
        low = torch.from_numpy(np.stack(lows))[:, None]
        with torch.inference_mode():
            baseline = bspline_upsample(low, (1, 1, self.ratio))
        network_input = low.clamp(0.0, 1.0) if self.clip else low
        return network_input, baseline.clone(), torch.from_numpy(np.stack(targets))[:, None]


def _held_back_loss(network: torch.nn.Module, batches: list[tuple[torch.Tensor, ...]], device: torch.device) -> float:
    network.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for low, baseline, target in batches:
            out = network(low.to(device)) + baseline.to(device)
            total += float(F.l1_loss(out, target.to(device), reduction="sum"))
            count += target.numel()
    return total / max(count, 1)


def adapt_model(
    volume: Volume,
    model: LoadedModel,
    scale: float | str | Scale,
    settings: AdaptSettings | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    *,
    source_name: str = "input",
) -> tuple[LoadedModel, AdaptationReport]:
    """Fine-tune a copy of ``model`` on ``volume``'s own in-plane detail (see the module docstring).

    Args:
        volume: the thick-slice input (never modified), thick along the axis where ``scale`` is above 1.
        model: a loaded thick-slice model with a B-spline global skip (``residual_to_baseline``); not modified.
        scale: per-axis scale in the input's ``(i, j, k)`` order, one axis ``r > 1`` (integer), the others 1.
        settings: budgets, seed and sampling (defaults: 180 s, bootstrap sampling).
        progress: ``(fraction, text)`` callback, called after each evaluation of the held-back loss.
        cancel: polled between steps; returning true raises :class:`~.errors.CancelledError`.
        source_name: the input's name, recorded in the adapted model's metadata.

    Returns:
        The adapted model (a new :class:`~.checkpoint.LoadedModel`: name ``<name>-adapted``, metadata ``adapted``
        saying from which model, on which input, with which settings and held-back losses) and its report.

    Raises:
        InputError: an isotropic or non-integer scale, a scan too small to cut patches from, a bad slice thickness.
        ModelError: the model is not a residual (B-spline global skip) fixed-scale model.
        CancelledError: ``cancel`` returned true.
    """
    settings = settings or AdaptSettings()
    report = progress or (lambda fraction, text: None)
    start_time = time.perf_counter()
    scale = parse_scale(scale)
    if getattr(model.network, "arbitrary_scale", False) or not model.residual_to_baseline:
        raise ModelError(
            f"model {model.name} cannot be adapted: adaptation needs a fixed-scale model with a B-spline global "
            "skip (the shipped edsr3d-thick models); enhance without --adapt"
        )
    order, ratio = thick_ratio(model, scale)
    thick_axis = order[2]
    spec = in_plane_spec(model, float(volume.spacing[thick_axis]), settings)
    choice = select_device(settings.device)
    device = choice.device
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng([settings.seed, 0x5CA9])

    norm = model.metadata.normalization or {}
    normalizer = PercentileNormalizer.fit(
        volume.array, float(norm.get("lower_percentile", 1.0)), float(norm.get("upper_percentile", 99.0))
    )
    clip = bool(norm.get("clip", True))
    window = _training_region(volume, order, settings.region)
    ordered = np.transpose(volume.array, order)[window[0], window[1], :]
    pool = normalizer.normalize(ordered, clip=False)
    from ..processing.preprocess import foreground_mask

    head = np.transpose(foreground_mask(volume), order)[window[0], window[1], :]

    network = copy.deepcopy(model.network).to(device)
    bootstrap_seconds = 0.0
    t_step = 1
    if settings.sampling == "bootstrap":
        report(0.0, "adapting: enhancing the training region with the starting model")
        stage = time.perf_counter()
        network.eval()
        residual = run_tiled(network, np.clip(pool, 0, 1) if clip else pool, choice, cancel=cancel)
        with torch.inference_mode():
            baseline = bspline_upsample(torch.from_numpy(np.ascontiguousarray(pool))[None, None], (1, 1, ratio))
        pool = baseline[0, 0].cpu().numpy() + residual
        head = np.repeat(head, ratio, axis=2)
        t_step = ratio
        bootstrap_seconds = time.perf_counter() - stage
    sampler = _PairSampler(pool, head, ratio, spec, settings, t_step, clip)
    validation_rng = np.random.default_rng([settings.seed, 0x7A1])
    held_back = [sampler.draw(validation_rng, 1, held_back=True, augment=False)
                 for _ in range(settings.validation_patches)]

    for name, parameter in network.named_parameters():
        parameter.requires_grad_(settings.trainable == "all" or name.startswith(("upsample.", "tail.")))
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=settings.learning_rate)

    best_loss = initial = _held_back_loss(network, held_back, device)
    best_state = copy.deepcopy(network.state_dict())
    best_step, step = 0, 0
    history = [(0, initial)]

    def budget_fraction() -> float:
        parts = []
        if settings.steps is not None:
            parts.append(step / max(settings.steps, 1))
        if settings.seconds is not None:
            parts.append((time.perf_counter() - start_time) / settings.seconds)
        return min(1.0, max(parts))

    report(budget_fraction(), f"adapting: held-back L1 {initial:.5f} before adapting")
    while True:
        if settings.steps is not None and step >= settings.steps:
            break
        if settings.seconds is not None and time.perf_counter() - start_time >= settings.seconds:
            break
        if cancel is not None and cancel():
            raise CancelledError("adaptation cancelled; nothing was written")
        step += 1
        network.train()
        low, baseline, target = sampler.draw(rng, settings.batch_size, held_back=False, augment=True)
        prediction = network(low.to(device)) + baseline.to(device)
        loss = F.l1_loss(prediction, target.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if not math.isfinite(float(loss.detach())):
            break
        last = (settings.steps is not None and step >= settings.steps) or (
            settings.seconds is not None and time.perf_counter() - start_time >= settings.seconds)
        if step % settings.validate_every == 0 or last:
            value = _held_back_loss(network, held_back, device)
            history.append((step, value))
            if value < best_loss:
                best_loss, best_step = value, step
                best_state = copy.deepcopy(network.state_dict())
            report(budget_fraction(), f"adapting: step {step}, held-back L1 {value:.5f} (start {initial:.5f})")

    network.load_state_dict(best_state)
    network.requires_grad_(False)
    network.eval()
    network.to("cpu")
    source_sha = settings.source_sha256 or voxel_sha256(volume)
    record = AdaptationReport(
        steps=step, seconds=time.perf_counter() - start_time, bootstrap_seconds=bootstrap_seconds,
        best_step=best_step, held_back_before=initial, held_back_after=best_loss, history=history,
        settings={k: v for k, v in asdict(settings).items() if k != "source_sha256"}, input_sha256=source_sha,
    )
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    metadata = copy.deepcopy(model.metadata)
    metadata.name = f"{model.name}-adapted"
    metadata.description = f"{model.metadata.description or model.name}; adapted to one input ({source_name})"
    metadata.weights_sha256 = weights_checksum(state)
    metadata.adapted = {
            "from": model.name,
            "from_version": str(model.metadata.version or ""),
            "from_sha256": model.file_sha256,
            "input": source_name,
            "input_sha256": source_sha,
            "input_sha256_of": "file" if settings.source_sha256 else "voxels",
            "scale": format_scale(scale),
            "slice_profile": spec.to_dict(),
            "steps": step,
            "best_step": best_step,
            "seconds": round(record.seconds, 1),
            "held_back_l1_before": initial,
            "held_back_l1_after": best_loss,
            "settings": record.settings,
    }
    metadata.shipped = False
    metadata.extra.pop("default_for", None)
    metadata.extra.pop("card", None)
    # Not saved (save_adapted_model drops it): marks outputs of this run as made for this very input.
    metadata.adapted["this_run"] = True
    adapted = LoadedModel(network, metadata, model.path, weights_checksum(state))
    report(1.0, f"adapted: {step} steps, held-back L1 {initial:.5f} -> {best_loss:.5f}")
    return adapted, record


def adaptation_note(model: LoadedModel) -> str | None:
    """One line for provenance when ``model`` was adapted to its input, else ``None``."""
    adapted = model.metadata.adapted
    if not adapted:
        return None
    return (f"adapted to this input: fine-tuned from {adapted.get('from')} on input SHA-256 "
            f"{str(adapted.get('input_sha256', ''))[:16]}... ({adapted.get('steps')} steps, held-back L1 "
            f"{float(adapted.get('held_back_l1_before', 0)):.5f} -> {float(adapted.get('held_back_l1_after', 0)):.5f})")


def save_adapted_model(model: LoadedModel, path: str | Any) -> Any:
    """Save an adapted model (from :func:`adapt_model`) as a normal ``.safetensors`` model file, atomically.

    Its metadata keeps the starting model's (normalisation, forward model, calibration, background masking) with
    ``name`` ``<name>-adapted`` and ``adapted`` (from which model and file SHA-256, on which input and its SHA-256,
    steps, held-back losses, settings).

    Raises:
        ModelError: ``model`` was not adapted.
    """
    metadata = model.metadata
    if metadata.adapted is None:
        raise ModelError(f"model {model.name} was not adapted to an input; nothing to save with --save-adapted")
    standard = {"name", "version", "family", "config", "scales", "min_input_size", "normalization", "degradation",
                "description", "training", "metrics", "license", "created", "engine_version", "parameters",
                "flops_per_output_voxel", "weights_sha256"}
    extra = {k: v for k, v in metadata.to_header().items() if k not in standard}
    extra["adapted"] = {k: v for k, v in metadata.adapted.items() if k != "this_run"}
    return save_model(
        model.network, path, name=str(metadata.name), family=metadata.family,
        config=dict(metadata.config), version=str(metadata.version or "0.1.0"),
        description=metadata.description, normalization=metadata.normalization,
        degradation=metadata.degradation, training=metadata.training, metrics=metadata.metrics,
        license=str(metadata.license or "Apache-2.0"), extra=extra,
    )


def adapt_for_enhance(volume: Volume, model: LoadedModel, scale: Scale, adapt: Any, device: str, source_name: str,
                      progress: ProgressCallback | None, cancel: CancelCheck | None) -> tuple[LoadedModel, AdaptationReport]:
    """:func:`adapt_model` as :func:`~.enhance.enhance_volume` calls it: ``adapt`` is :class:`AdaptSettings`, a
    time budget in seconds or ``True`` (defaults); the adaptation runs on enhance's device."""
    if isinstance(adapt, AdaptSettings):
        settings = adapt
    elif adapt is True:
        settings = AdaptSettings(device=device)
    elif isinstance(adapt, (int, float)):
        settings = AdaptSettings(seconds=float(adapt), device=device)
    else:
        raise TypeError(f"adapt must be AdaptSettings, seconds or True, not {type(adapt).__name__}")
    return adapt_model(volume, model, scale, settings, progress, cancel, source_name=source_name)


def settings_with(settings: AdaptSettings, **changes: Any) -> AdaptSettings:
    """A copy of ``settings`` with ``changes`` (a convenience for callers holding frozen settings)."""
    return replace(settings, **changes)
