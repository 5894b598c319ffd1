"""Enhance: a low-resolution volume in, a super-resolved volume and its companions out.

Data flow: input -> checks -> clipped-percentile normalisation -> tiled network on the best device ->
de-normalisation (plus the B-spline baseline for residual models) -> data-consistency projection
(:mod:`..processing.projection`: the network's output is corrected towards what the scanner measured) -> the output
maps of :mod:`.outputs`:

* ``sr``: the super-resolved volume on the cell-centred fine grid;
* ``baseline``: cubic B-spline upsampling of the input on the same grid;
* ``difference``: ``sr - baseline`` (what the network added);
* ``consistency``: on the input grid, ``|degrade(network output) - input|`` with the model's forward model, and its
  score (the network's disagreement with the measured data, before the projection below);
* ``uncertainty`` (on request): the spread of the test-time flip ensemble.

The input volume is never modified. Every output carries provenance in its metadata.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import models
from .checkpoint import LoadedModel
from .conditioning import context_for_model, slice_positions
from ..processing.consistency import consistency_report
from ..processing.degradation import DegradationSpec, degrade
from ..processing.projection import background_voxels, noise_power_of, project, robust_sigma_of
from .device import select_device
from ..errors import InputError, ModelError
from ..imaging.geometry import (
    Scale,
    anisotropy_warning,
    fine_mask,
    parse_scale,
    upsampled_grid,
    voxel_size_warning,
)
from .idle_worker import IdleExecutor
from .inference import CancelCheck, ProgressCallback, run_tiled, run_tiled_implicit
from ..processing.interpolation import bspline_upsample_volume
from .model_zoo import DEFAULT_MODEL, check_scale, load_model
from ..processing.normalization import (
    NormalizationSettings,
    cast_like_input,
    normalize_network_input,
)
from ..imaging.output_paths import check_output_plan, written_path
from .output_writer import OutputStaging
from .outputs import BY_KEY, OPTIONAL_KEYS, OUTPUT_KEYS, SR, output_map
from .prepared_input import (
    PreparedInput,
    prepare_input,
    wanted_mask,
    wants_dicom_source,
)
from ..imaging.provenance import header_fields, make_provenance
from ..imaging.value_range import check_float32_range
from ..imaging.verified_write import check_finite_output
from ..imaging.volume import Volume
from ..imaging.volume_io import check_finite
from .result import EnhanceResult, distinct_numbers  # noqa: F401  (distinct_numbers: re-exported)

#: Volumes of whole numbers (integer or float voxels) with at most this many distinct values are probably label maps.
LABEL_MAP_MAX_VALUES = 32


def check_input(volume: Volume, name: str, model: LoadedModel) -> list[str]:
    """Validate an input for ``model``; return warnings, raise :class:`InputError` for unusable input."""
    check_finite(volume, name)
    check_float32_range(volume.array, name)
    minimum = int(model.metadata.min_input_size)
    if min(volume.shape) < minimum:
        raise InputError(
            f"input {name} is {'x'.join(map(str, volume.shape))} voxels; model {model.name} needs at least "
            f"{minimum} along every axis"
        )
    warnings = []
    sample = volume.array[:: max(1, volume.array.shape[0] // 64)]
    whole = np.issubdtype(sample.dtype, np.integer) or (
        np.issubdtype(sample.dtype, np.floating) and bool(np.all(sample == np.round(sample))))
    if whole:
        distinct = np.unique(sample).size
        if distinct <= LABEL_MAP_MAX_VALUES:
            stored = "" if np.issubdtype(sample.dtype, np.integer) else f", stored as {sample.dtype}"
            warnings.append(
                f"input {name} looks like a label map ({distinct} distinct integer values{stored}); "
                "super-resolution is meant for intensity images"
            )
    return warnings


def enhance_volume(
    volume: Volume,
    model: str | os.PathLike | LoadedModel = DEFAULT_MODEL,
    scale: float | str | Scale = 2,
    *,
    device: str = "auto",
    precision: str = "auto",
    tile: int | tuple[int, int, int] | None = None,
    overlap: float = 0.0,
    threads: int | None = None,
    keep_dtype: bool = False,
    consistency: bool = True,
    uncertainty: bool = False,
    flip_ensemble: bool = False,
    mask_background: bool | None = None,
    projection: bool | None = None,
    source_name: str = "input",
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    adapt: Any = None,
    foreground: np.ndarray | None = None,
    early_output: Callable[[str, Volume], None] | None = None,
    context: str | Mapping[str, Any] | None = None,
) -> EnhanceResult:
    """Super-resolve ``volume`` (never modified) and compute its baseline, difference and consistency.

    Args:
        volume: scalar input volume.
        model: shipped model name, ``"default"`` (picked by scale), a path, or an already loaded model.
        scale: per-axis factors in image index order (``2`` means ``2,2,2``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``auto``, ``float32`` or ``bfloat16``: the network's autocast type
            (:attr:`.device.DeviceChoice.autocast_dtype`).
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
        projection: correct the network's output towards the measured data under the model's forward model
            (:func:`~..processing.projection.project`, weighted against the input's noise); with ``mask_background``
            only inside the head. ``None`` (default) and ``True``: on; ``False``: the network's output as it is.
            The consistency map and score describe the network's output before the projection.
        source_name: the input's name, for messages and provenance.
        progress: ``(fraction, stage text)`` callback.
        cancel: polled between tiles; returning true raises :class:`~MRISuperResLib.errors.CancelledError`.
        adapt: first adapt the model to this input (:func:`~.adapt.adapt_model`): an
            :class:`~.adapt.AdaptSettings`, a time budget in seconds, or ``True`` for the defaults (180 s). Thick-slice
            scales only; the first half of the progress range is the adaptation.
        foreground: the input's head mask (boolean, on the input grid or already carried onto the fine grid by
            :func:`.geometry.fine_mask`) when already computed (see :mod:`.prepared_input`); with
            ``mask_background`` it is computed here when not given.
        early_output: called with ``(role, volume)`` as soon as an output exists: ``baseline`` while the network
            runs (from another thread), ``sr`` and ``difference`` before the consistency map (see
            :meth:`.output_writer.OutputStaging.stage_early`); the same volume is the result's for that role.
        context: the subject's conditioning values for a cross-attention model (``"age=63,sex=F"`` or a mapping;
            see :mod:`.conditioning`); the slice position is filled in per slice. Required by a conditioned
            model, refused by an unconditioned one (:class:`~.conditioning.ContextError`).
    """
    report = progress or (lambda fraction, text: None)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    scale = parse_scale(scale)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, scale)
    # A model made for another axis order of this scale (1,1,4 asked for 4,1,1) sees the axes permuted.
    order = check_scale(loaded, scale)
    context_vector = context_for_model(loaded.metadata, context, f"model {loaded.name}")
    warnings = check_input(volume, source_name, loaded)
    if (shape_warning := anisotropy_warning(volume.spacing, scale)) is not None:
        warnings.append(shape_warning)
    if (size_warning := voxel_size_warning(volume.spacing, scale, loaded.metadata.trained_voxel_mm)) is not None:
        warnings.append(size_warning)
    choice = select_device(device, precision)
    if choice.note:
        warnings.append(choice.note)
    if threads:
        torch.set_num_threads(int(threads))
    timings["load"] = time.perf_counter() - start
    adaptation = None
    if adapt is not None and adapt is not False:
        from .adapt import adapt_for_enhance

        loaded, adaptation = adapt_for_enhance(volume, loaded, scale, adapt, device, source_name,
                                               lambda f, t: report(0.5 * f, t), cancel, precision)
        whole = report

        def report(fraction: float, text: str) -> None:  # the enhance stages fill the second half
            whole(0.5 + 0.5 * fraction, text)

        timings["adapt"] = adaptation.seconds

    report(0.0, "normalising")
    try:
        settings = NormalizationSettings.from_dict(loaded.metadata.normalization)
    except ValueError as error:
        raise ModelError(f"model {loaded.name} has unusable normalization metadata ({error}); use another model "
                         "file") from None
    normalizer, network_input = normalize_network_input(volume.array, settings)
    fine_grid = upsampled_grid(volume.grid, scale)
    restore = tuple(int(a) for a in np.argsort(order))
    network_input = np.ascontiguousarray(np.transpose(network_input, order))
    network_tile = tuple(tile[a] for a in order) if isinstance(tile, (tuple, list)) else tile

    described = choice.describe()

    def tagged(target: Volume, key: str) -> Volume:
        provenance = make_provenance(loaded, scale, BY_KEY[key].provenance_role, source_name, described)
        return target.with_array(target.array, metadata=header_fields(provenance))

    degradation = DegradationSpec.from_dict(loaded.metadata.degradation)

    masking = wanted_mask(mask_background, loaded.metadata)

    def baseline_work() -> tuple[Volume, Any, float, np.ndarray | None, float | None, float | None]:
        start = time.perf_counter()
        baseline = tagged(bspline_upsample_volume(volume, fine_grid, choice.device), "baseline")
        seconds = time.perf_counter() - start
        if early_output is not None:
            early_output("baseline", baseline)
        checked = (consistency_report(baseline.array, volume.array, degradation, normalizer.scale) if consistency
                   else None)
        inside, noise_power, noise_sigma = None, None, None
        if masking or projection is not False or consistency:
            from ..processing.masks import foreground_mask

            head = foreground if foreground is not None else foreground_mask(volume)
            if masking:
                inside = head if head.shape == fine_grid.shape else fine_mask(head, fine_grid.shape)
            if projection is not False or consistency:
                on_input = head if head.shape == volume.shape else foreground_mask(volume)
                air = background_voxels(volume.array, on_input, volume.spacing)
                if air is not None and projection is not False:
                    noise_power = noise_power_of(air)
                if air is not None and consistency:  # what the consistency warning weighs the scores against
                    noise_sigma = robust_sigma_of(air)
        return baseline, checked, seconds, inside, noise_power, noise_sigma

    # The network needs none of these: the baseline, its consistency score and file and the head mask on the fine
    # grid are made on CPU time the network leaves unused, and whatever is left runs once the network is done.
    background = IdleExecutor()
    try:
        baseline_job = background.submit(baseline_work)  # inside: a stop during its thread's start shuts it down
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
            if models.is_arbitrary_scale(loaded.network):
                # Arbitrary-scale (implicit) models decode the fine grid directly, block by block.
                output = run_tiled_implicit(loaded.network, flipped, tuple(fine_grid.shape[a] for a in order), choice,
                                            tile=network_tile, progress=tile_progress, cancel=cancel)
            else:
                output = run_tiled(loaded.network, flipped, choice, tile=network_tile, overlap=overlap,
                                   progress=tile_progress, cancel=cancel, context=context_vector,
                                   slice_positions=_slice_positions(loaded.network, fine_grid.shape, order, axes))
            output = np.flip(output, axes) if axes else output
            outputs.append(np.ascontiguousarray(np.transpose(output, restore)))
        network_output = np.mean(outputs, axis=0, dtype=np.float32) if len(outputs) > 1 else outputs[0]
        spread = np.std(outputs, axis=0, dtype=np.float32) * np.float32(normalizer.scale) if uncertainty else None
    except BaseException:
        # The baseline's file may be being staged: let it finish before the staging folders go.
        background.promote()
        background.shutdown(wait=True, cancel_futures=True)
        raise
    timings["inference"] = time.perf_counter() - stage
    background.promote()  # no network to give way to any more
    stage = time.perf_counter()
    baseline, baseline_report, timings["baseline"], inside, noise_power, noise_sigma = baseline_job.result()
    background.shutdown()
    timings["baseline_wait"] = time.perf_counter() - stage
    stage = time.perf_counter()
    if inside is not None:
        if not loaded.residual_to_baseline:
            network_output = np.where(inside, network_output, normalizer.normalize(baseline.array, clip=False))
        else:
            network_output = np.where(inside, network_output, 0.0).astype(np.float32)
        if spread is not None:
            spread = np.where(inside, spread, 0.0).astype(np.float32)
    timings["mask"] = time.perf_counter() - stage
    if network_output.shape != fine_grid.shape:
        raise RuntimeError(f"model output shape {network_output.shape} differs from the grid {fine_grid.shape}")
    if loaded.residual_to_baseline:
        sr_array = baseline.array + network_output * np.float32(normalizer.scale)
    else:
        sr_array = normalizer.denormalize(network_output)
    del network_output
    sr_report, projection_report = None, None
    if consistency or projection is not False:
        from scipy import fft

        stage = time.perf_counter()
        report(0.9, "projecting onto the measured data" if projection is not False else "checking consistency")
        with fft.set_workers(torch.get_num_threads()):  # the FFTs of one volume on the threads torch was given
            predicted = degrade(sr_array, volume.shape, degradation, np.float32)
            if consistency:
                sr_report = consistency_report(sr_array, volume.array, degradation, normalizer.scale, predicted)
            if projection is not False:
                sr_array, projection_report = project(sr_array, volume.array, degradation, normalizer.scale,
                                                      noise_power=noise_power, inside=inside, predicted=predicted)
            del predicted
        timings["projection" if projection is not False else "consistency"] = time.perf_counter() - stage
    # Never hand back a result with NaN or infinite voxels (a broken model, or arithmetic that overflowed); checked
    # before --keep-dtype's cast, which would turn them into arbitrary integers.
    check_finite_output(sr_array, source_name)
    sr_values = cast_like_input(sr_array, volume.array.dtype) if keep_dtype else sr_array.astype(np.float32, copy=False)
    sr_output = tagged(baseline.with_array(sr_values), "sr")
    if early_output is not None:  # written while the difference and consistency maps are computed
        early_output("sr", sr_output)
    difference_output = tagged(baseline.with_array((sr_array - baseline.array).astype(np.float32)), "difference")
    if early_output is not None:
        early_output("difference", difference_output)

    consistency_volume, score, baseline_score = None, float("nan"), float("nan")
    if baseline_report is not None and sr_report is not None:
        consistency_volume = volume.with_array(sr_report.map)
        score, baseline_score = sr_report.nrmse, baseline_report.nrmse

    maps = {"sr": sr_output, "baseline": baseline, "difference": difference_output}
    if consistency_volume is not None:
        maps["consistency"] = tagged(consistency_volume, "consistency")
    if spread is not None:
        maps["uncertainty"] = tagged(baseline.with_array(spread), "uncertainty")
    result = EnhanceResult(
        maps=maps,
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
        projection=projection_report,
        noise_nrmse=noise_sigma / float(normalizer.scale) if noise_sigma is not None and normalizer.scale > 0 else None,
    )
    consistency_warning = result.consistency_warning()
    if consistency_warning:
        result.warnings.append(consistency_warning)
    timings["total"] = time.perf_counter() - start
    result.timings = timings
    report(1.0, "done")
    return result


def _slice_positions(network: Any, fine_shape: tuple[int, int, int], order: Sequence[int],
                     flipped_axes: Sequence[int]) -> np.ndarray | None:
    """Positions of the fine slices along a 2.5D network's slice axis, in the array it sees (axes permuted by
    ``order``, flipped along ``flipped_axes``)."""
    axis = getattr(network, "slice_axis", None)
    if axis is None:
        return None
    return slice_positions(int(fine_shape[order[axis]]), flipped=axis in flipped_axes)


def enhance_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    model: str | os.PathLike | LoadedModel = DEFAULT_MODEL,
    scale: float | str | Scale = 2,
    *,
    outputs: Mapping[str, str | os.PathLike | None] | None = None,
    figure_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    sidecar: bool = True,
    sidecar_extra: dict[str, Any] | None = None,
    resample_uneven_slices: bool = False,
    compress: bool = True,
    prepared: PreparedInput | None = None,
    **options: Any,
) -> EnhanceResult:
    """Read a volume file (or DICOM series folder), enhance it, write the requested outputs.

    ``output_path`` receives the SR; ``outputs`` names files for the other maps by key (``{"baseline":
    "t1_bspline.nii.gz"}``, keys of :data:`.outputs.OUTPUT_MAPS`), and a keyword ``<key>_path``
    (``baseline_path="t1_bspline.nii.gz"``) does the same. A file for an optional map (``uncertainty``) asks for
    that map to be computed. Every target is checked before any work starts (see :func:`~MRISuperResLib.imaging.output_paths.check_output_plan`): the format
    comes from the extension in any letter case, and a file is written with its extension in lower case
    (``SR.NII.GZ`` -> ``SR.nii.gz``, with a warning); ``result.paths`` holds the paths written. All files are
    staged, flushed to disk, read back and compared with the result, and renamed into place together at the end
    (all or nothing). Each volume gets a JSON sidecar named after its full file name (``sr.nii.gz.json``) holding
    its provenance and the run summary unless ``sidecar`` is false; ``sidecar_extra`` adds top-level keys to every
    sidecar. ``figure_path`` adds a PNG (see :mod:`.figure`). ``resample_uneven_slices`` interpolates a DICOM
    series with missing or unevenly spaced slices onto a regular grid (with a warning) instead of refusing it (see
    :func:`~MRISuperResLib.imaging.volume_io.read_volume`). ``compress=False`` writes NRRD and MetaImage outputs uncompressed (a ``.nii.gz``
    is gzip by its name). ``prepared`` is the input already read by :func:`.prepared_input.prepare_input` (the
    command line reads it while torch loads), with its DICOM source and head mask when those are needed.
    ``options`` are passed to :func:`enhance_volume`.

    Raises:
        MRISuperResError: a refused input or output name (before any work), or a failed write (nothing left).
    """
    targets = map_targets(output_path, outputs, options)
    planned, figure = check_targets(input_path, targets, figure_path, overwrite=overwrite, sidecar=sidecar,
                                    compress=compress)
    renamed = [f"output {targets[role]} is written as {path.name}: a lower-case extension is the one every "
               "reader recognises" for role, path in planned.items() if path != Path(targets[role])]  # type: ignore[arg-type]
    if prepared is None:
        # A DICOM output of a DICOM input joins the source's patient and study as a derived series.
        prepared = prepare_input(input_path, resample_uneven_slices=resample_uneven_slices,
                                 dicom_source=wants_dicom_source(planned.values()))
    options.update({key: True for key in OPTIONAL_KEYS if targets[key] is not None})
    if prepared.foreground is not None:
        options.setdefault("foreground", prepared.foreground)
    report = options.pop("progress", None) or (lambda fraction, text: None)

    def engine_progress(fraction: float, text: str) -> None:  # "done" only once the files are in place
        if fraction < 1.0:
            report(0.97 * fraction, text)

    with OutputStaging(planned, figure, overwrite=overwrite, sidecar=sidecar, sidecar_extra=sidecar_extra,
                       dicom_source=prepared.dicom_source, compress=compress) as staging:
        result = enhance_volume(prepared.volume, model, scale, source_name=Path(input_path).name,
                                early_output=staging.stage_early, progress=engine_progress, **options)
        result.timings.update(prepared.timings or {})
        result.warnings.extend(renamed)
        report(0.97, "writing outputs")
        staging.finish(result, prepared.volume)
    report(1.0, "done")
    return result


def map_targets(output_path: str | os.PathLike, outputs: Mapping[str, str | os.PathLike | None] | None,
                options: dict[str, Any]) -> dict[str, str | os.PathLike | None]:
    """Every map's target by key, in table order (``None``: not written): ``output_path`` for the SR, then
    ``outputs`` and the ``<key>_path`` keywords, which are taken out of ``options``.

    Raises:
        KeyError: ``outputs`` names an unknown map.
    """
    paths = {output_map(key).key: path for key, path in (outputs or {}).items()}
    for key in OUTPUT_KEYS:
        if key != SR.key and f"{key}_path" in options:
            paths[key] = options.pop(f"{key}_path")
    return {key: output_path if key == SR.key else paths.get(key) for key in OUTPUT_KEYS}


def check_targets(
    input_path: str | os.PathLike,
    targets: dict[str, str | os.PathLike | None],
    figure_path: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    sidecar: bool = True,
    compress: bool = True,
) -> tuple[dict[str, Path], Path | None]:
    """Check every output target of one input before any work (see :func:`~MRISuperResLib.imaging.output_paths.check_output_plan`).

    Returns:
        ``(role -> path to write, figure)`` for the targets given; paths to write have their volume extension in
        lower case (see :func:`~MRISuperResLib.imaging.output_paths.written_path`).

    Raises:
        MRISuperResError: an unknown format, two outputs on one path, an output on the input, an existing target
            (without ``overwrite``), a missing or unwritable folder.
    """
    requested = {role: Path(path) for role, path in targets.items() if path is not None}
    figure = Path(figure_path) if figure_path is not None else None
    check_output_plan([(Path(input_path), {**requested, **({"figure": figure} if figure else {})})],
                      overwrite=overwrite, sidecar=sidecar, compress=compress)
    return {role: written_path(path) for role, path in requested.items()}, figure
