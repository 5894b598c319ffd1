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

Voxel size of the pairs. The pairs must teach the step in mm the through-plane axis needs: from the thick
spacing to the target spacing (thick spacing / ``r``). In-plane axes finer than the target (a 0.66 x 0.66 x 6 mm
prostate at ``r = 4``: target 1.5 mm) are first resampled to it in k-space (``match_spacing``,
:func:`~.adapt_pairs.to_target_spacing`); pairs at 0.66 mm would teach 2.7 mm -> 0.66 mm instead. At 250 steps
this gained +0.08 dB on IXI002_T2 (0.94 mm in-plane, target 1.25 mm) and +0.04 dB on the prostate; scans whose
in-plane voxels already have the target size are unchanged (``docs/adapt_benchmark.md``).

Held-back data. A slab of thick planes (``holdback``, a fraction of them, across the middle of the training
region) is never trained on; pairs made from it the same way give the held-back L1 loss, measured before the
first step and every ``validate_every`` steps. The latest weights whose held-back loss is below the starting
weights' and within ``holdback_tolerance`` (1 %) of the lowest seen are returned, else the starting weights, so
adaptation never ends worse than the starting model on the held-back planes.

Weight average. What is validated and returned is an exponential moving average of the weights (``ema``, decay
0.98 after a warm-up, :func:`warmed_up_ema`), not the weights of the last step: on three held-out volumes at 250
steps it gained +0.03 to +0.06 dB more through-plane than the raw weights (``docs/adapt_benchmark.md``).

Isotropic scales (``2,2,2``) are refused: the zero-shot variant (degrade the scan itself by the scale, learn
scan <- degraded scan) would teach the model the step from the scan's resolution to half of it, whose content
(already band-limited by the scan's own acquisition) differs from what the model must restore; it was not
measured here, so it is not offered (an untested variant could make results worse unnoticed).

Normalisation is the model's own (:class:`~MRISuperResLib.processing.normalization.PercentileNormalizer` with its metadata's percentiles,
fitted on the whole input, the network input clipped as in :func:`~.enhance.enhance_volume`). Arrays here are in
the network's axis order (``np.transpose(volume, order)`` with the thick axis last, see
:func:`~.model_zoo.axis_order`).

Arithmetic of the fine-tuning (:func:`fine_tuning_dtype`). The fine-tuning is training, so it follows the
training's rule (:func:`~MRISuperResLib.engine.mixed_precision.training_dtype` with ``run.amp`` on): its forward and
backward passes run under bfloat16 autocast on CPUs with bfloat16 instructions (AVX512-BF16 or AMX) and under the
GPU's half type on CUDA (float16 with a gradient scaler where the GPU has no bfloat16), in float32 elsewhere; the
weights, the Adam state, the weight average, the B-spline baseline and the loss stay float32. ``precision``
(``auto`` / ``float32`` / ``bfloat16``, as for enhance) governs the bootstrap pass as enhance's rule has it
(``auto`` on a CPU is float32 there: the model cards were measured so), and the fine-tuning thus: ``auto`` and
``bfloat16`` take the training's rule, ``float32`` forces float32 for the fine-tuning as well as for the bootstrap
pass. So ``auto`` on a CPU enhances in float32 but fine-tunes in bfloat16 where the CPU has it, as ``mrisuperres
train`` does: a step of the 48-channel 4x model took 0.44 s instead of 0.71 s on 2 idle CPU threads
(``benchmarks/bench_adapt_step.py``), and at 100 steps on three held-out volumes bfloat16 ended within 0.04 dB PSNR
of float32 (+0.01, -0.04, +0.01 dB; ``docs/adapt_benchmark.md``). The held-back losses that
choose the returned weights are evaluated in float32 whatever the fine-tuning's arithmetic, so that "never worse
than the starting model on the held-back planes" holds in the arithmetic enhance runs by default. The report
(:attr:`~.adapt_result.AdaptationReport.arithmetic`), the adapted model's metadata (``adapted.arithmetic``) and
the last progress line say which arithmetic the fine-tuning used.

This module holds the fine-tuning loop (:func:`adapt_model`); the pairs are cut by :mod:`.adapt_pairs`, the
settings are :mod:`.adapt_settings`, and the report, the adapted model's provenance and its file are
:mod:`.adapt_result`. Their public names are importable from here too.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel

from ..errors import CancelledError, ModelError
from ..imaging.geometry import Scale, parse_scale
from ..imaging.volume import Volume
from ..processing.bspline import bspline_upsample
from ..processing.normalization import PercentileNormalizer
from .adapt_pairs import (PairSampler, in_plane_factors, in_plane_spec, thick_ratio, to_target_spacing,
                          training_region)
from .adapt_result import AdaptationReport, adaptation_note, adapted_model, save_adapted_model, voxel_sha256
from .adapt_settings import DEFAULT_SECONDS, SAMPLINGS, TRAINABLE, AdaptSettings, settings_with
from .mixed_precision import autocast, grad_scaler, training_dtype
from .checkpoint import LoadedModel
from .device import DeviceChoice, precision_name, select_device
from .inference import CancelCheck, ProgressCallback, run_tiled

__all__ = [
    "DEFAULT_SECONDS", "SAMPLINGS", "TRAINABLE", "AdaptSettings", "AdaptationReport", "PairSampler",
    "adapt_for_enhance", "adapt_model", "adaptation_note", "adapted_model", "fine_tuning_dtype", "in_plane_spec",
    "save_adapted_model", "settings_with", "thick_ratio", "training_region", "voxel_sha256", "warmed_up_ema",
]

#: Memory layout of the fine-tuned network and its batches on the CPU. oneDNN runs 3D convolutions channels-last
#: (NDHWC) without reordering: a step of the thick x4 model took 0.43 s instead of 0.55 s on 2 threads
#: (``benchmarks/bench_adapt_step.py``). Other devices keep the default layout: it was not measured there.
CPU_TRAIN_LAYOUT = torch.channels_last_3d


def train_layout(device: torch.device) -> torch.memory_format:
    """The memory layout adaptation trains in on ``device`` (:data:`CPU_TRAIN_LAYOUT` on the CPU)."""
    return CPU_TRAIN_LAYOUT if device.type == "cpu" else torch.contiguous_format


def fine_tuning_dtype(choice: DeviceChoice) -> torch.dtype | None:
    """The autocast type of the fine-tuning steps on ``choice`` (``None``: float32; see the module docstring).

    Args:
        choice: the adaptation's device and precision, as :func:`~.device.select_device` resolved them from
            :attr:`AdaptSettings.device` and :attr:`AdaptSettings.precision`.

    Returns:
        ``None`` when the precision is ``float32`` (asked for, or ``bfloat16`` on a CPU without bfloat16
        instructions); otherwise the training's type (:func:`~MRISuperResLib.engine.mixed_precision.training_dtype`
        with ``amp`` on): bfloat16 on CPUs with bfloat16 instructions, the GPU's half type on CUDA, ``None``
        elsewhere.
    """
    return None if choice.precision == "float32" else training_dtype(choice, amp=True)


def _on(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    return tensor.to(device).contiguous(memory_format=train_layout(device))


def _held_back_loss(network: torch.nn.Module, batches: list[tuple[torch.Tensor, ...]], device: torch.device) -> float:
    network.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for low, baseline, target in batches:
            out = network(_on(low, device)) + baseline.to(device)
            total += float(F.l1_loss(out, target.to(device), reduction="sum"))
            count += target.numel()
    return total / max(count, 1)


def warmed_up_ema(decay: float):
    """The ``multi_avg_fn`` (for ``torch.optim.swa_utils.AveragedModel``) of an exponential moving average whose
    decay grows as ``min(decay, (1 + n) / (10 + n))`` after ``n`` averaged steps (the warm-up of TensorFlow's
    ``ExponentialMovingAverage``), so that a short budget is not held near the starting weights. It updates the
    averaged tensors in place, reading ``n`` once per update."""

    def average(averaged: list[torch.Tensor], current: list[torch.Tensor], count: torch.Tensor | int) -> None:
        n = float(count)
        step = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        for mean, value in zip(averaged, current):
            mean.lerp_(value, step)

    return average


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
        cancel: polled between steps; returning true raises :class:`~MRISuperResLib.errors.CancelledError`.
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
            "skip (the shipped edsr3d-thick models); run without adaptation"
        )
    order, ratio = thick_ratio(model, scale)
    thick_axis = order[2]
    spec = in_plane_spec(model, float(volume.spacing[thick_axis]), settings)
    choice = select_device(settings.device, settings.precision)
    device = choice.device
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng([settings.seed, 0x5CA9])

    norm = model.metadata.normalization or {}
    normalizer = PercentileNormalizer.fit(
        volume.array, float(norm.get("lower_percentile", 1.0)), float(norm.get("upper_percentile", 99.0))
    )
    clip = bool(norm.get("clip", True))
    target_spacing = float(volume.spacing[thick_axis]) / ratio
    factors = in_plane_factors((float(volume.spacing[order[0]]), float(volume.spacing[order[1]])), target_spacing,
                               settings)
    # The region is counted at the target spacing, so the bootstrap pass costs the same for fine in-plane voxels.
    window = training_region(volume, order, tuple(round(settings.region * f) for f in factors))
    ordered = np.transpose(volume.array, order)[window[0], window[1], :]
    pool = normalizer.normalize(ordered, clip=False)
    from ..processing.masks import foreground_mask

    head = np.transpose(foreground_mask(volume), order)[window[0], window[1], :]
    pool, head = to_target_spacing(pool, head, factors, fit=ratio * settings.low_patch)

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
    sampler = PairSampler(pool, head, ratio, spec, settings, t_step, clip)
    validation_rng = np.random.default_rng([settings.seed, 0x7A1])
    # The same patches as drawn one at a time, scored a training batch at a time: 7 evaluations of 8 patches took
    # 1.2 s on 2 CPU threads instead of 6.3 s one patch at a time (cProfile, thick x4 model).
    held_back = sampler.draw_batches(validation_rng, settings.validation_patches, settings.batch_size,
                                     held_back=True, augment=False)

    network.to(memory_format=train_layout(device))
    dtype = fine_tuning_dtype(choice)
    arithmetic = precision_name(dtype)
    scaler = grad_scaler(device, dtype)  # enabled only for float16 (CUDA GPUs without bfloat16)
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(settings.trainable == "all" or name.startswith(("upsample.", "tail.")))
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=settings.learning_rate)

    averaged = AveragedModel(network, multi_avg_fn=warmed_up_ema(settings.ema)) if settings.ema else None
    scored = averaged.module if averaged is not None else network
    best_loss = initial = _held_back_loss(network, held_back, device)
    best_state = copy.deepcopy(network.state_dict())
    best_step, step = 0, 0
    lowest = initial
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
        with autocast(device, dtype):
            residual = network(_on(low, device))
        loss = F.l1_loss(residual.float() + baseline.to(device), target.to(device))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if averaged is not None:
            averaged.update_parameters(network)
        if not math.isfinite(float(loss.detach())):
            break
        last = (settings.steps is not None and step >= settings.steps) or (
            settings.seconds is not None and time.perf_counter() - start_time >= settings.seconds)
        if step % settings.validate_every == 0 or last:
            value = _held_back_loss(scored, held_back, device)
            history.append((step, value))
            lowest = min(lowest, value)
            # The latest weights within the tolerance of the lowest loss, not the lowest itself: once the held-back
            # loss is flat its differences are noise, and the through-plane result still gains from more steps.
            if value < initial and value <= lowest * (1.0 + settings.holdback_tolerance):
                best_loss, best_step = value, step
                best_state = copy.deepcopy(scored.state_dict())
            report(budget_fraction(), f"adapting: step {step}, held-back L1 {value:.5f} (start {initial:.5f})")

    network.load_state_dict(best_state)
    network.requires_grad_(False)
    network.eval()
    # Back to the default layout: safetensors stores contiguous tensors only, and enhance tiles in that layout.
    network.to("cpu", memory_format=torch.contiguous_format)
    source_sha = settings.source_sha256 or voxel_sha256(volume)
    record = AdaptationReport(
        steps=step, seconds=time.perf_counter() - start_time, bootstrap_seconds=bootstrap_seconds,
        best_step=best_step, held_back_before=initial, held_back_after=best_loss, history=history,
        settings={k: v for k, v in asdict(settings).items() if k != "source_sha256"}, input_sha256=source_sha,
        arithmetic=arithmetic,
    )
    adapted = adapted_model(model, network, record, scale, spec, settings, source_name)
    report(1.0, f"adapted: {step} steps in {arithmetic}, held-back L1 {initial:.5f} -> {best_loss:.5f}")
    return adapted, record


def adapt_for_enhance(volume: Volume, model: LoadedModel, scale: Scale, adapt: Any, device: str, source_name: str,
                      progress: ProgressCallback | None, cancel: CancelCheck | None,
                      precision: str = "auto") -> tuple[LoadedModel, AdaptationReport]:
    """:func:`adapt_model` as :func:`~.enhance.enhance_volume` calls it: ``adapt`` is :class:`AdaptSettings`, a
    time budget in seconds or ``True`` (defaults); the adaptation runs on enhance's device, its bootstrap pass in
    enhance's ``precision`` (unless the settings name one other than ``auto``)."""
    if isinstance(adapt, AdaptSettings):
        settings = adapt
    elif adapt is True:
        settings = AdaptSettings(device=device)
    elif isinstance(adapt, (int, float)):
        settings = AdaptSettings(seconds=float(adapt), device=device)
    else:
        raise TypeError(f"adapt must be AdaptSettings, seconds or True, not {type(adapt).__name__}")
    if settings.precision == "auto":
        settings = replace(settings, precision=precision)
    return adapt_model(volume, model, scale, settings, progress, cancel, source_name=source_name)
