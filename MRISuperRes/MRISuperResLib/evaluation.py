"""Evaluate a model against ground truth: PSNR / SSIM of the SR and of the B-spline baseline.

For each high-resolution reference, a low-resolution input is simulated (cell-centred grid ``scale`` times
coarser, the given forward model, noise drawn from a seeded stream) unless a real low-resolution partner is
given, then enhanced exactly as ``mrisuperres enhance`` does. PSNR uses the reference's 1st-99th percentile
range as peak (seed 002, section 3.3), both inside the foreground (head) mask and over the whole volume; SSIM is
3D (MONAI). Voxels excluded as corrupted (``exclusions``, see :mod:`.training.exclusion`) are filled from their
nearest kept neighbours before the simulation and left out of every metric.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .checkpoint import LoadedModel
from .degradation import DegradationSpec, simulate
from .enhance import EnhanceResult, enhance_volume
from .errors import InputError
from .evaluation_geometry import overlay_on_reference
from .geometry import Scale, format_scale, resampled_grid
from .metrics import psnr, ssim
from .volume import Grid, Volume
from .volume_io import read_volume

if TYPE_CHECKING:
    from .training.exclusion import SliceExclusion


@dataclass(frozen=True)
class VolumeScores:
    """Scores of one evaluated volume (PSNR in dB)."""

    name: str
    psnr_sr: float
    psnr_baseline: float
    psnr_sr_whole: float
    psnr_baseline_whole: float
    ssim_sr: float
    ssim_baseline: float
    consistency_nrmse: float
    alignment: str = "same grid"

    @property
    def gain(self) -> float:
        return self.psnr_sr - self.psnr_baseline


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
        kinds = kind.split(",")
        base["kind"] = kinds[0] if len(kinds) == 1 else kinds
    if noise is not None:
        base["noise"] = [noise, noise]
    base["gap"] = gap
    return DegradationSpec.from_dict(base)


def simulated_pair(reference: Volume, scale: Scale, spec: DegradationSpec, seed: int) -> tuple[Volume, Volume]:
    """Crop ``reference`` to a multiple of ``scale`` and simulate its low-resolution acquisition.

    The bias field of ``spec`` is left out: it is a training augmentation, and a reference that the simulated input
    does not share (the bias is not part of the acquisition being undone) would penalise every method alike.
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


def score_volume(name: str, result: EnhanceResult, reference: Volume, mask: np.ndarray,
                 excluded: np.ndarray | None = None) -> VolumeScores:
    """PSNR (inside ``mask`` and whole) and SSIM of the SR and baseline of ``result`` against ``reference``,
    compared in physical space: the result is first put onto the reference grid (see
    :func:`~.evaluation_geometry.overlay_on_reference`: re-indexed exactly when its voxel centres lie on the
    reference's, resampled otherwise) and scored over the reference voxels it covers, less the ``excluded`` ones
    (boolean, reference shape; their SSIM windows are left out too).

    Raises:
        InputError: the result covers less than half of the reference (the pair is not registered).
    """
    overlay = overlay_on_reference([result.sr, result.baseline], reference, name)
    (sr, baseline), truth, covered = overlay.estimates, overlay.reference, overlay.covered
    window = tuple(slice(lo, hi) for lo, hi in overlay.block)
    kept = covered if excluded is None else covered & ~excluded[window]
    left_out = None if excluded is None else excluded[window]
    inside = mask[window] & kept
    whole = None if kept.all() else kept
    return VolumeScores(
        name=name,
        psnr_sr=psnr(sr, truth, inside),
        psnr_baseline=psnr(baseline, truth, inside),
        psnr_sr_whole=psnr(sr, truth, whole),
        psnr_baseline_whole=psnr(baseline, truth, whole),
        ssim_sr=ssim(sr, truth, left_out),
        ssim_baseline=ssim(baseline, truth, left_out),
        consistency_nrmse=result.consistency_nrmse,
        alignment=overlay.how,
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
    exclusions: list[list[SliceExclusion]] | None = None,
    **options: Any,
) -> list[VolumeScores]:
    """Evaluate ``model`` on each reference (simulated inputs, or the given registered low-resolution ones).

    ``spec`` defaults to the model's own degradation; ``options`` go to :func:`~.enhance.enhance_volume`.
    ``figure_folder`` (an existing folder) receives one PNG per reference, ``<reference stem>_x<scale>.png``:
    rows axial / coronal / sagittal, columns input, baseline, SR, reference, difference, consistency.
    ``exclusions`` (one list of rules per reference) names corrupted voxels of each reference to leave out.
    """
    if figure_folder is not None and not Path(figure_folder).is_dir():
        raise InputError(f"figure folder {figure_folder} does not exist; create it first")
    from .model_zoo import load_model
    from .training.exclusion import excluded_voxels, fill_excluded
    from .training.preprocess import foreground_mask

    loaded = model if isinstance(model, LoadedModel) else load_model(model, scale)
    spec = spec or DegradationSpec.from_dict(loaded.metadata.get("degradation"))
    scores = []
    for index, path in enumerate(references):
        reference = read_volume(path)
        excluded = excluded_voxels(exclusions[index], reference, Path(path).name) if exclusions else None
        if excluded is not None:
            reference = reference.with_array(fill_excluded(reference.array.astype(np.float32), excluded))
        if low_inputs:
            high, low = reference, read_volume(low_inputs[index])
        else:
            high, low = simulated_pair(reference, scale, spec, seed + index)
        if excluded is not None:
            excluded = excluded[: high.shape[0], : high.shape[1], : high.shape[2]]
        result = enhance_volume(low, loaded, scale, source_name=Path(path).name, **options)
        scores.append(score_volume(Path(path).name, result, high, foreground_mask(high), excluded))
        if figure_folder is not None:
            save_evaluation_figure(Path(figure_folder), Path(path).name, low, result, high, scores[-1])
    return scores


def save_evaluation_figure(folder: Path, name: str, low: Volume, result: EnhanceResult, reference: Volume,
                           scores: VolumeScores) -> Path:
    """One evaluation figure (overwriting an earlier one of the same reference and scale)."""
    from .figure import save_figure

    stem = name.removesuffix(".gz").rsplit(".", 1)[0]
    panels = {"input": low, "baseline": result.baseline, "SR": result.sr, "reference": reference,
              "difference": result.difference}
    if result.consistency is not None:
        panels["consistency"] = result.consistency
    title = (f"{result.model.name} x{format_scale(result.scale)} on {name}: PSNR {scores.psnr_sr:.2f} dB vs "
             f"B-spline {scores.psnr_baseline:.2f} dB (AI-generated, not acquired)")
    return save_figure(folder / f"{stem}_x{format_scale(result.scale)}.png", panels, title=title, overwrite=True)


def scores_table(scores: list[VolumeScores], model_name: str, scale: Scale) -> str:
    """A Markdown table: one row per volume and the mean."""
    lines = [
        f"model {model_name}, scale {format_scale(scale)}; PSNR in dB inside the head (whole volume in brackets)",
        "",
        "| volume | PSNR B-spline | PSNR SR | gain | SSIM B-spline | SSIM SR | consistency NRMSE |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        lines.append(f"| {s.name} | {s.psnr_baseline:.2f} ({s.psnr_baseline_whole:.2f}) | {s.psnr_sr:.2f} "
                     f"({s.psnr_sr_whole:.2f}) | {s.gain:+.2f} | {s.ssim_baseline:.4f} | {s.ssim_sr:.4f} | "
                     f"{s.consistency_nrmse:.4f} |")
    moved = [f"{s.name}: scored on the reference grid ({s.alignment})" for s in scores if s.alignment != "same grid"]
    if len(scores) > 1:
        mean = {k: float(np.mean([getattr(s, k) for s in scores])) for k in asdict(scores[0])
                if k not in ("name", "alignment")}
        lines.append(f"| **mean** | {mean['psnr_baseline']:.2f} | {mean['psnr_sr']:.2f} | "
                     f"{mean['psnr_sr'] - mean['psnr_baseline']:+.2f} | {mean['ssim_baseline']:.4f} | "
                     f"{mean['ssim_sr']:.4f} | {mean['consistency_nrmse']:.4f} |")
    if moved:
        lines += ["", *moved]
    return "\n".join(lines)
