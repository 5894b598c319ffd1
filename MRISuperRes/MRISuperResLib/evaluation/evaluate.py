"""Evaluate a model against ground truth: PSNR / SSIM of the SR, of cubic B-spline and of Fourier zero-filling.

For each high-resolution reference, a low-resolution input is simulated (cell-centred grid ``scale`` times
coarser, the given forward model, noise drawn from a seeded stream; one run per requested noise level) unless a
real low-resolution partner is given, then enhanced exactly as ``mrisuperres enhance`` does. Two baselines are
computed from the same input: cubic B-spline (the engine's own) and Fourier zero-filling, the scanner's "ZIP"
interpolation (:func:`zero_fill`), which is the exact inverse of k-space truncation for band-limited data.
PSNR uses the reference's 1st-99th percentile range as peak (seed 002, section 3.3); PSNR and 3D SSIM are both
computed inside the foreground (head) mask of the reference and over the whole volume. With a reference label
map (or ``segment="tissue3"``), each method's output is also segmented and scored with DICE
(:mod:`MRISuperResLib.evaluation.segmentation`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.checkpoint import LoadedModel
from ..processing.degradation import DegradationSpec, fourier_resample, parse_kind, simulate
from ..engine.enhance import EnhanceResult, enhance_volume
from ..errors import InputError
from .geometry import overlay_on_reference
from .segmentation import SEGMENT_METHODS, read_label_map, segmentation_dice
from .table import scores_table
from ..imaging.geometry import Scale, format_scale, resampled_grid
from .metrics import masked_mean_ssim, psnr, ssim_map
from ..imaging.volume import Grid, Volume
from ..imaging.volume_io import read_volume

if TYPE_CHECKING:
    from ..processing.exclusion import SliceExclusion


@dataclass(frozen=True)
class VolumeScores:
    """Scores of one evaluated volume under one acquisition (PSNR in dB; SSIM unitless, at most 1).

    ``*_sr``: the model's output; ``*_baseline``: cubic B-spline; ``*_zerofill``: Fourier zero-filling (see
    :func:`zero_fill`). PSNR and SSIM without suffix are inside the head mask, ``*_whole`` over every covered voxel.
    ``noise`` is the k-space noise level the simulation drew (fraction of the low-resolution 99th percentile;
    NaN for a real low-resolution input); ``condition`` names the forward model and noise; ``dice`` holds the
    per-label DICE of each method's segmentation (see :mod:`MRISuperResLib.evaluation.segmentation`), empty when not asked.
    """

    name: str
    psnr_sr: float
    psnr_baseline: float
    psnr_sr_whole: float
    psnr_baseline_whole: float
    ssim_sr: float
    ssim_baseline: float
    consistency_nrmse: float
    alignment: str = "same grid"
    psnr_zerofill: float = float("nan")
    psnr_zerofill_whole: float = float("nan")
    ssim_zerofill: float = float("nan")
    ssim_sr_whole: float = float("nan")
    ssim_baseline_whole: float = float("nan")
    ssim_zerofill_whole: float = float("nan")
    noise: float = float("nan")
    condition: str = ""
    dice: dict[str, dict[int, float]] = field(default_factory=dict)

    @property
    def gain(self) -> float:
        """PSNR gain of the model over B-spline inside the head (dB)."""
        return self.psnr_sr - self.psnr_baseline

    @property
    def gain_zerofill(self) -> float:
        """PSNR gain of the model over Fourier zero-filling inside the head (dB)."""
        return self.psnr_sr - self.psnr_zerofill


def evaluation_spec(
    model_degradation: dict[str, Any] | None,
    kind: str | None = None,
    noise: float | None = None,
    gap: float = 0.0,
) -> DegradationSpec:
    """The forward model of an evaluation: the model's own (its metadata ``degradation``) with the kind (one, or
    ``i,j,k`` list), a fixed noise level and the slice gap replaced where given.

    Raises:
        ValueError: the result is not a valid :class:`DegradationSpec`.
    """
    base = DegradationSpec.from_dict(model_degradation).to_dict()
    if kind:
        base["kind"] = parse_kind(kind)
    if noise is not None:
        base["noise"] = [noise, noise]
    base["gap"] = gap
    return DegradationSpec.from_dict(base)


def drawn_noise_level(spec: DegradationSpec, seed: int) -> float:
    """The k-space noise level :func:`simulated_pair` draws for ``spec`` and ``seed`` (fraction of the
    low-resolution 99th percentile): the first uniform draw of the seeded stream, as in
    :func:`~MRISuperResLib.processing.degradation.simulate` without a bias field."""
    return float(np.random.default_rng(seed).uniform(*spec.noise)) if spec.noise[1] > 0 else 0.0


def simulated_pair(reference: Volume, scale: Scale, spec: DegradationSpec, seed: int) -> tuple[Volume, Volume]:
    """Crop ``reference`` to a multiple of ``scale`` and simulate its low-resolution acquisition.

    The bias field of ``spec`` is left out: it is a training augmentation, and a reference that the simulated input
    does not share (the bias is not part of the acquisition being undone) would penalise every method alike. The
    noise level drawn is :func:`drawn_noise_level`.
    """
    spec = replace(spec, bias=0.0)
    factors = [int(s) for s in scale]
    usable = tuple(n - n % f for n, f in zip(reference.shape, factors))
    grid = Grid(usable, reference.spacing, reference.grid.origin, reference.grid.direction)
    high = Volume(reference.array[: usable[0], : usable[1], : usable[2]].astype(np.float32), grid)
    low_grid = resampled_grid(grid, tuple(n // f for n, f in zip(usable, factors)))  # type: ignore[arg-type]
    low = simulate(high.array, low_grid.shape, spec, np.random.default_rng(seed))
    # A magnitude image stays non-negative (k-space truncation rings below zero near sharp edges).
    return high, Volume(np.clip(low, 0, None) if high.array.min() >= 0 else low, low_grid)


def zero_fill(low: Volume, fine_grid: Grid) -> Volume:
    """Fourier zero-filling ("ZIP" interpolation) of ``low`` onto ``fine_grid``, the cell-centred grid over the same
    extent with more voxels (e.g. ``EnhanceResult.baseline.grid``): the exact inverse of the engine's k-space
    truncation (``degrade(..., DegradationSpec("kspace"))``).

    The centred k-space of ``low`` is zero-padded to the fine matrix size, axis by axis, with the cell-centre phase
    convention of :func:`~MRISuperResLib.processing.degradation.fourier_resample`, and scaled so that a constant stays constant. Truncation
    keeps only half of each of the two fine bins ``+-n/2`` in an even coarse matrix's Nyquist bin, so that bin is
    doubled before padding (the pseudo-inverse of truncation rather than its adjoint). Hence, exactly (to float32
    rounding): truncating the output gives ``low`` back, and zero-filling the truncation of a volume band-limited
    below the coarse Nyquist frequency gives that volume back. Magnitude inputs may ring below zero near sharp
    edges; values are not clipped.

    Raises:
        ValueError: ``fine_grid`` does not cover ``low``'s extent or has fewer voxels along an axis.
    """
    if any(f < c for f, c in zip(fine_grid.shape, low.shape)):
        raise ValueError(f"zero-filling enlarges: {low.shape} -> {fine_grid.shape}")
    expected = resampled_grid(low.grid, fine_grid.shape)
    if not expected.same_geometry(fine_grid, tolerance=1e-4 * float(min(fine_grid.spacing))):
        raise ValueError("the fine grid does not cover the low-resolution volume's extent")
    array = np.asarray(low.array, dtype=np.float64)
    for axis, size in enumerate(fine_grid.shape):
        n = array.shape[axis]
        if size == n:
            continue
        if n % 2 == 0:
            # The Nyquist component along this axis, (-1)^i times the alternating mean; added once more.
            alternating = np.where(np.arange(n) % 2 == 0, 1.0, -1.0).reshape([-1 if a == axis else 1 for a in range(3)])
            array = array + alternating * np.mean(array * alternating, axis=axis, keepdims=True)
        shape = list(array.shape)
        shape[axis] = size
        array = fourier_resample(array, tuple(shape)).astype(np.float64)  # type: ignore[arg-type]
    return Volume(array.astype(np.float32), fine_grid)


def central_block(volume: Volume, mask: np.ndarray, shape: tuple[int, int, int]) -> tuple[slice, slice, slice]:
    """Index ranges of a block of at most ``shape`` voxels centred on the bounding box of ``mask`` (the head), kept
    inside the volume: the part of a reference scored by a quick evaluation (``evaluate --crop``)."""
    found = np.argwhere(mask)
    centre = (found.min(axis=0) + found.max(axis=0) + 1) / 2.0 if found.size else np.asarray(volume.shape) / 2.0
    block = []
    for c, n, size in zip(centre, volume.shape, shape):
        size = min(int(size), n)
        start = int(np.clip(round(c - size / 2.0), 0, n - size))
        block.append(slice(start, start + size))
    return tuple(block)  # type: ignore[return-value]


def crop_volume(volume: Volume, block: tuple[slice, slice, slice]) -> Volume:
    """The voxels of ``block`` as a volume on the matching grid (same spacing and direction, origin moved)."""
    start = np.array([b.start for b in block], dtype=np.float64)
    array = np.ascontiguousarray(volume.array[block])
    origin = tuple(float(v) for v in volume.grid.physical_points(start[None, :])[0])
    return Volume(array, Grid(array.shape, volume.spacing, origin, volume.grid.direction), volume.metadata)


def describe_condition(spec: DegradationSpec | None, noise: float | None) -> str:
    """A short name of an acquisition: forward model per axis and noise (``"real input"`` without a spec)."""
    if spec is None:
        return "real input"
    kinds = spec.kind if isinstance(spec.kind, str) else ",".join(spec.kind)
    gap = f", gap {spec.gap:g}" if spec.gap and any(k != "kspace" for k in spec.kinds) else ""
    if noise is not None:
        return f"{kinds}{gap}, noise {noise:g}"
    low, high = spec.noise
    return f"{kinds}{gap}, noise {low:g}" if low == high else f"{kinds}{gap}, noise drawn in [{low:g}, {high:g}]"


def score_volume(
    name: str,
    result: EnhanceResult,
    reference: Volume,
    mask: np.ndarray,
    *,
    low: Volume | None = None,
    labels: np.ndarray | None = None,
    segment: str | None = None,
    noise: float = float("nan"),
    condition: str = "",
    excluded: np.ndarray | None = None,
) -> VolumeScores:
    """PSNR and SSIM (inside ``mask`` and whole) of the SR and baseline of ``result`` against ``reference``, and of
    Fourier zero-filling of ``low`` (the enhanced input) when given, compared in physical space: the results are
    first put onto the reference grid (see :func:`~MRISuperResLib.evaluation.geometry.overlay_on_reference`: re-indexed exactly
    when their voxel centres lie on the reference's, resampled otherwise) and scored over the reference voxels they
    cover.

    Args:
        name: the reference's name.
        result: the enhance run.
        reference: the high-resolution reference; ``mask`` is its head mask (boolean, same shape).
        low: the low-resolution input of ``result``, for the zero-filling baseline (``None``: not scored).
        labels: a label map on the reference grid (integer array of its shape) for DICE, or ``None``.
        segment: ``"labels"`` (needs ``labels``) or ``"tissue3"``: segment each output and score DICE
            (see :func:`~MRISuperResLib.evaluation.segmentation.segmentation_dice`); ``None``: no DICE.
        noise, condition: recorded as given.
        excluded: voxels of the reference to leave out of every metric (boolean, reference shape: corrupted
            slices, see :mod:`MRISuperResLib.processing.exclusion`); SSIM windows that hold one are left out too.

    Raises:
        InputError: the result covers less than half of the reference (the pair is not registered).
    """
    estimates = [result.sr, result.baseline]
    if low is not None:
        estimates.append(zero_fill(low, result.baseline.grid))
    overlay = overlay_on_reference(estimates, reference, name)
    truth, covered = overlay.reference, overlay.covered
    window = tuple(slice(lo, hi) for lo, hi in overlay.block)
    left_out = None if excluded is None else excluded[window]
    kept = covered if left_out is None else covered & ~left_out
    inside = mask[window] & kept
    whole = None if kept.all() else kept
    # Per method: PSNR inside, PSNR whole, SSIM inside, SSIM whole (NaN for zero-filling without ``low``).
    scored = []
    for estimate in overlay.estimates:
        values = ssim_map(estimate, truth, left_out)
        scored.append((psnr(estimate, truth, inside), psnr(estimate, truth, whole),
                       masked_mean_ssim(values, inside, left_out), masked_mean_ssim(values, whole, left_out)))
    scored += [(float("nan"),) * 4] * (3 - len(scored))
    sr, base, zf = scored
    dice = {}
    if segment is not None:
        names = ("sr", "baseline", "zerofill")[: len(overlay.estimates)]
        dice = segmentation_dice(dict(zip(names, overlay.estimates)), truth, inside, segment,
                                 None if labels is None else labels[window])
    return VolumeScores(
        name=name,
        psnr_sr=sr[0],
        psnr_baseline=base[0],
        psnr_sr_whole=sr[1],
        psnr_baseline_whole=base[1],
        ssim_sr=sr[2],
        ssim_baseline=base[2],
        consistency_nrmse=result.consistency_nrmse,
        alignment=overlay.how,
        psnr_zerofill=zf[0],
        psnr_zerofill_whole=zf[1],
        ssim_zerofill=zf[2],
        ssim_sr_whole=sr[3],
        ssim_baseline_whole=base[3],
        ssim_zerofill_whole=zf[3],
        noise=noise,
        condition=condition,
        dice=dice,
    )


def evaluate_files(
    references: list[str | os.PathLike],
    model: str | os.PathLike | LoadedModel,
    scale: Scale,
    spec: DegradationSpec | None = None,
    *,
    seed: int = 0,
    low_inputs: list[str | os.PathLike] | None = None,
    figure_folder: str | os.PathLike | None = None,
    noises: list[float] | None = None,
    labels: list[str | os.PathLike] | None = None,
    segment: str | None = None,
    on_scored: Callable[[int, int, VolumeScores], None] | None = None,
    crop: tuple[int, int, int] | None = None,
    exclusions: list[list[SliceExclusion]] | None = None,
    **options: Any,
) -> list[VolumeScores]:
    """Evaluate ``model`` on each reference (simulated inputs, or the given registered low-resolution ones).

    ``spec`` defaults to the model's own degradation; ``noises`` runs the simulation once per k-space noise level
    (replacing ``spec``'s noise; reference ``n`` always draws its noise from seed ``seed + n``). ``labels`` gives
    one label map per reference (on its grid) and turns on DICE (``segment`` then defaults to ``"labels"``);
    ``segment="tissue3"`` segments reference and outputs alike. ``crop`` scores only a block of at most that many
    voxels of each reference, centred on its head (:func:`central_block`; for quick runs). ``exclusions`` (one list
    of rules per reference) names corrupted voxels of each reference: they are filled from their nearest kept
    neighbours before the simulation and left out of every metric. ``options`` go to
    :func:`~.enhance.enhance_volume`. ``figure_folder`` (an existing folder) receives one PNG per reference and
    noise level, ``<reference stem>_x<scale>[_noise<level>].png``: rows axial / coronal / sagittal, columns input,
    baseline, SR, reference, difference, consistency. ``on_scored(done, total, scores)`` is called after each run.

    Returns:
        One :class:`VolumeScores` per noise level and reference, grouped by noise level in the order given.

    Raises:
        InputError: a missing figure folder, a label map that does not fit its reference, an unknown ``segment``.
    """
    if figure_folder is not None and not Path(figure_folder).is_dir():
        raise InputError(f"figure folder {figure_folder} does not exist; create it first")
    if labels is not None and len(labels) != len(references):
        raise InputError(f"{len(labels)} label maps for {len(references)} references; give one per reference")
    segment = segment or ("labels" if labels else None)
    if segment is not None and segment not in SEGMENT_METHODS:
        raise InputError(f"unknown segmentation {segment!r}; choose one of {', '.join(SEGMENT_METHODS)}")
    if segment == "labels" and not labels:
        raise InputError("segmentation 'labels' needs a label map per reference (--labels)")
    from ..engine.model_zoo import load_model
    from ..processing.exclusion import excluded_voxels, fill_excluded
    from ..processing.masks import foreground_mask

    loaded = model if isinstance(model, LoadedModel) else load_model(model, scale)
    spec = spec or DegradationSpec.from_dict(loaded.metadata.degradation)
    levels: list[float | None] = [None] if low_inputs or not noises else list(noises)
    rows: dict[float | None, list[VolumeScores]] = {level: [] for level in levels}
    for index, path in enumerate(references):
        name = Path(path).name
        reference = read_volume(path)
        label_map = read_label_map(labels[index], reference, name) if labels else None
        excluded = excluded_voxels(exclusions[index], reference, name) if exclusions else None
        if excluded is not None:
            reference = reference.with_array(fill_excluded(reference.array.astype(np.float32), excluded))
        if crop is not None:
            block = central_block(reference, foreground_mask(reference), crop)
            reference = crop_volume(reference, block)
            label_map = None if label_map is None else label_map[block]
            excluded = None if excluded is None else excluded[block]
        mask = None
        for level in levels:
            if low_inputs:
                high, low, condition, noise = reference, read_volume(low_inputs[index]), "real input", float("nan")
            else:
                drawn = spec if level is None else replace(spec, noise=(level, level))
                high, low = simulated_pair(reference, scale, drawn, seed + index)
                noise = drawn_noise_level(drawn, seed + index)
                condition = describe_condition(drawn, level if level is not None else
                                               (noise if drawn.noise[0] == drawn.noise[1] else None))
            if mask is None:
                mask = foreground_mask(high)
            result = enhance_volume(low, loaded, scale, source_name=name, **options)
            usable = tuple(slice(0, n) for n in high.shape)
            rows[level].append(score_volume(name, result, high, mask, low=low,
                                            labels=None if label_map is None else label_map[usable],
                                            segment=segment, noise=noise, condition=condition,
                                            excluded=None if excluded is None else excluded[usable]))
            if on_scored is not None:
                on_scored(sum(map(len, rows.values())), len(references) * len(levels), rows[level][-1])
            if figure_folder is not None:
                suffix = "" if len(levels) == 1 else f"_noise{level:g}"
                save_evaluation_figure(Path(figure_folder), name, low, result, high, rows[level][-1], suffix)
    return [score for level in levels for score in rows[level]]


def expand_references(paths: list[str | os.PathLike]) -> list[Path]:
    """Files and folders to a list of volumes: a folder gives its volume files (sorted by name), or itself when it
    holds a DICOM series; a file is kept.

    Raises:
        InputError: a path does not exist, or a folder holds neither volume files nor DICOM files.
    """
    from ..imaging.volume_io import volume_extension

    found: list[Path] = []
    for entry in map(Path, paths):
        if not entry.exists():
            raise InputError(f"reference {entry} does not exist; give a volume file or a folder of volumes")
        if not entry.is_dir():
            found.append(entry)
            continue
        volumes = sorted(p for p in entry.iterdir() if p.is_file() and volume_extension(p)
                         and not p.name.startswith("."))
        if volumes:
            found += volumes
        elif any(p.is_file() and p.suffix.lower() in ("", ".dcm", ".ima") for p in entry.iterdir()):
            found.append(entry)
        else:
            raise InputError(f"folder {entry} holds no volume files (.nii.gz, .nii, .nrrd, .mha, .mhd) and no DICOM "
                             "series; give a folder of volumes or the files themselves")
    return found


def save_evaluation_figure(folder: Path, name: str, low: Volume, result: EnhanceResult, reference: Volume,
                           scores: VolumeScores, suffix: str = "") -> Path:
    """One evaluation figure (overwriting an earlier one of the same reference, scale and suffix)."""
    from ..engine.figure import save_figure

    stem = name.removesuffix(".gz").rsplit(".", 1)[0]
    panels = {"input": low, "baseline": result.baseline, "SR": result.sr, "reference": reference,
              "difference": result.difference}
    if result.consistency is not None:
        panels["consistency"] = result.consistency
    title = (f"{result.model.name} x{format_scale(result.scale)} on {name} ({scores.condition}): PSNR "
             f"{scores.psnr_sr:.2f} dB vs B-spline {scores.psnr_baseline:.2f} dB (AI-generated, not acquired)")
    return save_figure(folder / f"{stem}_x{format_scale(result.scale)}{suffix}.png", panels, title=title,
                       overwrite=True)


__all__ = ["VolumeScores", "describe_condition", "drawn_noise_level", "evaluate_files", "evaluation_spec",
           "expand_references", "score_volume", "scores_table", "simulated_pair", "zero_fill"]
