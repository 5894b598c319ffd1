"""Enhance: a low-resolution volume in, a super-resolved volume and its companions out.

Data flow: input -> checks -> clipped-percentile normalisation -> tiled network on the best device ->
de-normalisation (plus the B-spline baseline for residual models) -> outputs:

* ``sr``: the super-resolved volume on the cell-centred fine grid;
* ``baseline``: cubic B-spline upsampling of the input on the same grid;
* ``difference``: ``sr - baseline`` (what the network added);
* ``consistency``: on the input grid, ``|degrade(sr) - input|`` with the model's forward model, and its score.

The input volume is never modified. Every output carries provenance in its metadata.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import LoadedModel
from .consistency import consistency_report
from .degradation import DegradationSpec
from .device import select_device
from .errors import InputError
from .geometry import Scale, format_scale, parse_scale, upsampled_grid
from .inference import CancelCheck, ProgressCallback, run_tiled, run_tiled_implicit
from .interpolation import bspline_upsample_volume
from .model_zoo import DEFAULT_MODEL, IDENTITY_ORDER, check_scale, load_model
from .normalization import PercentileNormalizer, cast_like_input
from .provenance import header_fields, make_provenance, short_description
from .volume import Volume
from .volume_io import (
    check_finite,
    check_writable_target,
    commit_staged,
    read_volume,
    stage_volume,
    staging_folder,
    strip_volume_extension,
)

#: Integer volumes with at most this many distinct values are probably label maps.
LABEL_MAP_MAX_VALUES = 32

OUTPUT_ROLES = ("sr", "baseline", "difference", "consistency")


@dataclass
class EnhanceResult:
    """Everything one enhance run produced.

    Attributes:
        sr: super-resolved volume (input units; float32, or the input's dtype with ``keep_dtype``).
        baseline: cubic B-spline upsampling of the input on the same grid (float32).
        difference: ``sr - baseline`` (float32).
        consistency: ``|degrade(sr) - input|`` on the input grid (float32), or ``None`` when not computed.
        uncertainty: standard deviation of the flip ensemble on the fine grid (float32), or ``None``.
        consistency_nrmse: RMS disagreement / normalisation range (unitless); ``nan`` when not computed.
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
    """

    sr: Volume
    baseline: Volume
    difference: Volume
    consistency: Volume | None
    uncertainty: Volume | None
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

    @property
    def consistency_threshold(self) -> float | None:
        """The model's calibrated threshold: above it the result disagrees with the input more than on
        validation scans (``None`` when the model has no calibration)."""
        value = self.model.metadata.get("consistency", {}).get("threshold")
        return float(value) if value is not None else None

    @property
    def consistency_suspicious(self) -> bool | None:
        """True when the consistency NRMSE exceeds the calibrated threshold (``None`` without calibration)."""
        threshold = self.consistency_threshold
        if threshold is None or self.consistency_nrmse != self.consistency_nrmse:
            return None
        return self.consistency_nrmse > threshold

    def summary(self) -> dict[str, Any]:
        """JSON-ready description of the run (what ``--json`` prints)."""
        return {
            "model": self.model.name,
            "model_sha256": self.model.file_sha256,
            "scale": format_scale(self.scale),
            "input_shape": list(self.input_shape),
            "output_shape": list(self.sr.shape),
            "output_spacing": list(self.sr.spacing),
            "device": self.device,
            "axis_order": "".join("ijk"[axis] for axis in self.axis_order),
            "ensemble_passes": self.ensemble_passes,
            "consistency_nrmse": self.consistency_nrmse,
            "baseline_consistency_nrmse": self.baseline_consistency_nrmse,
            "consistency_threshold": self.consistency_threshold,
            "consistency_suspicious": self.consistency_suspicious,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
            "outputs": dict(self.paths),
            **({"adaptation": self.adaptation.summary()} if self.adaptation is not None else {}),
        }


def check_input(volume: Volume, name: str, model: LoadedModel) -> list[str]:
    """Validate an input for ``model``; return warnings, raise :class:`InputError` for unusable input."""
    check_finite(volume, name)
    minimum = int(model.metadata.get("min_input_size", 1))
    if min(volume.shape) < minimum:
        raise InputError(
            f"input {name} is {'x'.join(map(str, volume.shape))} voxels; model {model.name} needs at least "
            f"{minimum} along every axis"
        )
    warnings = []
    if np.issubdtype(volume.array.dtype, np.integer):
        distinct = np.unique(volume.array[:: max(1, volume.array.shape[0] // 64)]).size
        if distinct <= LABEL_MAP_MAX_VALUES:
            warnings.append(
                f"input {name} looks like a label map ({distinct} distinct integer values); super-resolution is "
                "meant for intensity images"
            )
    return warnings


def enhance_volume(
    volume: Volume,
    model: str | os.PathLike | LoadedModel = DEFAULT_MODEL,
    scale: float | str | Scale = 2,
    *,
    device: str = "auto",
    tile: int | tuple[int, int, int] | None = None,
    overlap: float = 0.0,
    threads: int | None = None,
    keep_dtype: bool = False,
    consistency: bool = True,
    uncertainty: bool = False,
    flip_ensemble: bool = False,
    mask_background: bool | None = None,
    source_name: str = "input",
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    adapt: Any = None,
) -> EnhanceResult:
    """Super-resolve ``volume`` (never modified) and compute its baseline, difference and consistency.

    Args:
        volume: scalar input volume.
        model: shipped model name, ``"default"`` (picked by scale), a path, or an already loaded model.
        scale: per-axis factors in image index order (``2`` means ``2,2,2``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        tile: tile edge (or shape ``(i, j, k)``) in input voxels; ``None`` chooses from free memory.
        overlap: fraction of overlap between tiles (see :func:`~.inference.run_tiled`).
        threads: CPU threads for torch (``None`` keeps torch's default).
        keep_dtype: return the SR volume in the input's data type (rounded and clipped) instead of float32.
        consistency: compute the data-consistency map and scores.
        uncertainty: run the network on the 8 flipped versions of the input (test-time flip ensemble): the SR is
            their mean and the uncertainty map their standard deviation (intensity units); 8 times the work.
        flip_ensemble: the same 8-pass mean as the SR without the uncertainty map (a test-time self-ensemble:
            about +0.1 dB PSNR over one pass for the shipped models, 8 times the work).
        mask_background: outside the head (foreground mask of the input), keep the B-spline baseline so the
            network adds nothing there. ``None`` follows the model (its metadata's ``mask_background``: on for the
            shipped brain models, whose training taught them to clean the background), else off.
        source_name: the input's name, for messages and provenance.
        progress: ``(fraction, stage text)`` callback.
        cancel: polled between tiles; returning true raises :class:`~.errors.CancelledError`.
        adapt: first adapt the model to this input (:func:`~.adapt.adapt_model`): an
            :class:`~.adapt.AdaptSettings`, a time budget in seconds, or ``True`` for the defaults (180 s). Thick-slice
            scales only; the first half of the progress range is the adaptation.
    """
    report = progress or (lambda fraction, text: None)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    scale = parse_scale(scale)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, scale)
    # A model made for another axis order of this scale (1,1,4 asked for 4,1,1) sees the axes permuted.
    order = check_scale(loaded, scale)
    warnings = check_input(volume, source_name, loaded)
    choice = select_device(device)
    if choice.note:
        warnings.append(choice.note)
    if threads:
        torch.set_num_threads(int(threads))
    timings["load"] = time.perf_counter() - start
    adaptation = None
    if adapt is not None and adapt is not False:
        from .adapt import adapt_for_enhance

        loaded, adaptation = adapt_for_enhance(volume, loaded, scale, adapt, device, source_name,
                                               lambda f, t: report(0.5 * f, t), cancel)
        whole = report

        def report(fraction: float, text: str) -> None:  # the enhance stages fill the second half
            whole(0.5 + 0.5 * fraction, text)

        timings["adapt"] = adaptation.seconds

    report(0.0, "normalising")
    settings = loaded.metadata.get("normalization", {})
    normalizer = PercentileNormalizer.fit(
        volume.array, float(settings.get("lower_percentile", 1.0)), float(settings.get("upper_percentile", 99.0))
    )
    network_input = normalizer.normalize(volume.array, clip=bool(settings.get("clip", True)))
    fine_grid = upsampled_grid(volume.grid, scale)
    restore = tuple(int(a) for a in np.argsort(order))
    network_input = np.ascontiguousarray(np.transpose(network_input, order))
    network_tile = tuple(tile[a] for a in order) if isinstance(tile, (tuple, list)) else tile

    stage = time.perf_counter()
    report(0.02, "interpolating baseline")
    baseline = bspline_upsample_volume(volume, fine_grid, choice.device)
    timings["baseline"] = time.perf_counter() - stage

    stage = time.perf_counter()
    ensemble = uncertainty or flip_ensemble
    flips = [axes for count in range(4) for axes in itertools.combinations((0, 1, 2), count)] if ensemble else [()]
    outputs = []
    for number, axes in enumerate(flips):

        def tile_progress(fraction: float, text: str, number: int = number) -> None:
            done = (number + fraction) / len(flips)
            pass_text = f" (flip {number + 1}/{len(flips)})" if len(flips) > 1 else ""
            report(0.05 + 0.85 * done, f"super-resolving: {text}{pass_text}")

        flipped = np.flip(network_input, axes).copy() if axes else network_input
        if getattr(loaded.network, "arbitrary_scale", False):
            # Arbitrary-scale (implicit) models decode the fine grid directly, block by block.
            output = run_tiled_implicit(loaded.network, flipped, tuple(fine_grid.shape[a] for a in order), choice,
                                        tile=network_tile, progress=tile_progress, cancel=cancel)
        else:
            output = run_tiled(loaded.network, flipped, choice, tile=network_tile, overlap=overlap,
                               progress=tile_progress, cancel=cancel)
        output = np.flip(output, axes) if axes else output
        outputs.append(np.ascontiguousarray(np.transpose(output, restore)))
    network_output = np.mean(outputs, axis=0, dtype=np.float32) if len(outputs) > 1 else outputs[0]
    spread = np.std(outputs, axis=0, dtype=np.float32) * np.float32(normalizer.scale) if uncertainty else None
    if mask_background is None:
        mask_background = bool(loaded.metadata.get("mask_background", False))
    if mask_background:
        from .training.preprocess import foreground_mask

        head = volume.with_array(foreground_mask(volume).astype(np.float32))
        inside = bspline_upsample_volume(head, fine_grid).array > 0.5
        if not loaded.residual_to_baseline:
            network_output = np.where(inside, network_output, normalizer.normalize(baseline.array, clip=False))
        else:
            network_output = np.where(inside, network_output, 0.0).astype(np.float32)
        if spread is not None:
            spread = np.where(inside, spread, 0.0).astype(np.float32)
    timings["inference"] = time.perf_counter() - stage
    if network_output.shape != fine_grid.shape:
        raise RuntimeError(f"model output shape {network_output.shape} differs from the grid {fine_grid.shape}")
    if loaded.residual_to_baseline:
        sr_array = baseline.array + network_output * np.float32(normalizer.scale)
    else:
        sr_array = normalizer.denormalize(network_output)

    stage = time.perf_counter()
    report(0.92, "checking consistency")
    degradation = DegradationSpec.from_dict(loaded.metadata.get("degradation"))
    consistency_volume, score, baseline_score = None, float("nan"), float("nan")
    if consistency:
        sr_report = consistency_report(sr_array, volume.array, degradation, normalizer.scale)
        baseline_report = consistency_report(baseline.array, volume.array, degradation, normalizer.scale)
        consistency_volume = volume.with_array(sr_report.map)
        score, baseline_score = sr_report.nrmse, baseline_report.nrmse
    timings["consistency"] = time.perf_counter() - stage

    described = choice.describe()

    def tagged(target: Volume, role: str) -> Volume:
        provenance = make_provenance(loaded, scale, role, source_name, described)
        return target.with_array(target.array, metadata=header_fields(provenance))

    sr_values = cast_like_input(sr_array, volume.array.dtype) if keep_dtype else sr_array.astype(np.float32)
    result = EnhanceResult(
        sr=tagged(baseline.with_array(sr_values), "super-resolved"),
        baseline=tagged(baseline, "baseline"),
        difference=tagged(baseline.with_array((sr_array - baseline.array).astype(np.float32)), "difference"),
        consistency=tagged(consistency_volume, "consistency") if consistency_volume is not None else None,
        uncertainty=tagged(baseline.with_array(spread), "uncertainty") if spread is not None else None,
        consistency_nrmse=score,
        baseline_consistency_nrmse=baseline_score,
        scale=scale,
        input_shape=volume.shape,
        model=loaded,
        device=described,
        axis_order=order,
        ensemble_passes=len(flips),
        warnings=warnings,
        adaptation=adaptation,
    )
    if result.consistency_suspicious:
        result.warnings.append(
            f"consistency NRMSE {score:.4f} is above model {loaded.name}'s calibrated threshold "
            f"{result.consistency_threshold:.4f}: the result disagrees with the measured data more than on validation "
            "scans; inspect the consistency map before trusting details"
        )
    timings["total"] = time.perf_counter() - start
    result.timings = timings
    report(1.0, "done")
    return result


def enhance_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    model: str | os.PathLike | LoadedModel = DEFAULT_MODEL,
    scale: float | str | Scale = 2,
    *,
    baseline_path: str | os.PathLike | None = None,
    difference_path: str | os.PathLike | None = None,
    consistency_path: str | os.PathLike | None = None,
    figure_path: str | os.PathLike | None = None,
    uncertainty_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    sidecar: bool = True,
    **options: Any,
) -> EnhanceResult:
    """Read a volume file (or DICOM series folder), enhance it, write the requested outputs.

    Every target is checked before any work starts. All files are staged and renamed into place together at
    the end (all or nothing). Each volume gets a JSON sidecar (``<output stem>.json``) holding its provenance and
    the run summary unless ``sidecar`` is false. ``figure_path`` adds a PNG (see :mod:`.figure`).
    ``options`` are passed to :func:`enhance_volume`.
    """
    targets = {"sr": output_path, "baseline": baseline_path, "difference": difference_path,
               "consistency": consistency_path, "uncertainty": uncertainty_path}
    planned = {role: Path(path) for role, path in targets.items() if path is not None}
    resolved = [p.resolve() for p in planned.values()]
    if len(set(resolved)) != len(resolved):
        raise InputError("two outputs share one path; give each output its own file name")
    input_resolved = Path(input_path).resolve()
    figure = Path(figure_path) if figure_path is not None else None
    if figure is not None:
        if figure.resolve() in resolved or figure.resolve() == input_resolved:
            raise InputError(f"the figure {figure} has the path of another file; give it its own name")
        check_writable_target(figure, overwrite, volume_format=False)
    for role, path in planned.items():
        if path.resolve() == input_resolved:
            raise InputError(f"the {role} output {path} is the input; choose another output path")
        check_writable_target(path, overwrite)
        if sidecar:
            check_writable_target(sidecar_path(path), overwrite, volume_format=False)
    read_start = time.perf_counter()
    volume = read_volume(input_path)
    read_seconds = time.perf_counter() - read_start
    if uncertainty_path is not None:
        options["uncertainty"] = True
    result = enhance_volume(volume, model, scale, source_name=Path(input_path).name, **options)
    result.timings["read"] = read_seconds
    outputs = {"sr": result.sr, "baseline": result.baseline, "difference": result.difference,
               "consistency": result.consistency, "uncertainty": result.uncertainty}
    stage = time.perf_counter()
    folders = sorted({path.parent.resolve() for path in [*planned.values(), *([figure] if figure else [])]})
    with contextlib.ExitStack() as stack:
        # Stage every file first and rename them into place only when all were written: all or nothing.
        staging = {folder: stack.enter_context(staging_folder(folder)) for folder in folders}
        result.paths = {role: str(path) for role, path in planned.items() if outputs[role] is not None}
        for role, path in planned.items():
            output = outputs[role]
            if output is None:
                continue
            provenance = {k.partition(".")[2]: v for k, v in output.metadata.items()}
            stage_volume(output, staging[path.parent.resolve()], path.name,
                         description=short_description(provenance))
            if sidecar:
                record = {"provenance": provenance, "run": result.summary()}
                side = sidecar_path(path)
                (staging[path.parent.resolve()] / side.name).write_text(json.dumps(record, indent=2) + "\n")
        if figure is not None:
            from .figure import save_figure

            panels = {"input": volume, "baseline": result.baseline, "SR": result.sr, "difference": result.difference}
            if result.consistency is not None:
                panels["consistency"] = result.consistency
            save_figure(staging[figure.parent.resolve()] / figure.name, panels,
                        title=f"{result.model.name} x{format_scale(result.scale)}: AI-generated, not acquired")
            result.paths["figure"] = str(figure)
        commit_staged(staging, overwrite)
    result.timings["write"] = time.perf_counter() - stage
    return result


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar next to an output: ``sr.nii.gz`` -> ``sr.json``; a DICOM folder ``out`` -> ``out.json``."""
    path = Path(path)
    return path.with_name(strip_volume_extension(path) + ".json")
