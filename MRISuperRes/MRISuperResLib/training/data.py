"""Training data: subjects, simulation or registered real pairs, normalisation, patch sampling.

Every subject is held once, in float16 (normalised values are ~[0, 1], so float16 keeps about 3 significant
digits), in the training process: no data-loader workers and no per-worker copies (seed 000's 12 GB problem).
High-resolution volumes are cropped so that their shape is a multiple of the scale; the low-resolution grid is
the cell-centred grid ``scale`` times coarser over the same extent.

Normalisation is the engine's: each low-resolution input goes through
:func:`..normalization.normalize_network_input` (its own percentiles, clipped to ``[0, 1]`` unless the config says
``clip: false``), the very function ``enhance`` calls at inference; its B-spline baseline is computed from the
unclipped input, as ``enhance`` upsamples the input volume itself. For simulated pairs the target is the
high-resolution volume expressed in the *same* affine map (so de-normalising the network output as at inference
gives high-resolution intensities); for real pairs, whose members come from different acquisitions, the target
uses its own percentiles.

Randomness is a pure function of ``(seed, step)`` or ``(seed, refresh)``: a resumed run draws exactly what an
uninterrupted one would.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..processing.degradation.acquisition import AcquisitionRanges, acquire
from ..processing.bspline import bspline_upsample
from ..engine.conditioning import slice_positions
from ..processing.degradation import DegradationSpec, simulate
from ..errors import InputError
from ..imaging.geometry import resampled_grid
from ..processing.normalization import (
    NormalizationSettings,
    PercentileNormalizer,
    normalize_network_input,
)
from ..imaging.volume import Grid, Volume
from ..imaging.volume_io import read_volume
from .augment import (
    ElasticSettings,
    PatchBatch,
    gmm_contrast,
    random_displacement,
    warp,
)
from ..processing.exclusion import SliceExclusion, excluded_voxels, fill_excluded

log = logging.getLogger(__name__)

#: Offsets that keep the streams of random numbers of different purposes apart.
_REFRESH_STREAM, _VALIDATION_STREAM, _PATCH_STREAM, _STABILITY_STREAM = 1, 2, 3, 7


@dataclass
class Subject:
    """One training or validation subject on its high- and low-resolution grids.

    Attributes:
        name: file name of the high-resolution volume.
        high_source: high-resolution volume normalised by its own percentiles (float16), the simulation source.
        high_grid: grid of ``high_source`` (cropped to a multiple of the scale).
        low_grid: the cell-centred coarse grid over the same extent.
        mask_low: foreground on the coarse grid (patch centres are drawn from it).
        mask_high: foreground on the fine grid (masked validation metrics).
        real_low: for a real pair, the registered low-resolution volume on ``low_grid`` (raw intensities).
        excluded_high: voxels excluded from targets and metrics on the fine grid (corrupted slices; see
            :mod:`MRISuperResLib.processing.exclusion`), ``None`` when none are.
        low, baseline, target: the current normalised input, its B-spline upsampling and the target (float16).
        mask_current: foreground on the current input's grid when the current draw resampled the subject to
            another voxel size (``data.acquisition.voxel_mm``); ``None``: ``mask_low``.
        foreground_indices: flat indices of the current foreground (patch centres), found once per draw.
    """

    name: str
    high_source: np.ndarray
    high_grid: Grid
    low_grid: Grid
    mask_low: np.ndarray
    mask_high: np.ndarray
    real_low: np.ndarray | None = None
    excluded_high: np.ndarray | None = None
    low: np.ndarray | None = None
    baseline: np.ndarray | None = None
    target: np.ndarray | None = None
    mask_current: np.ndarray | None = None
    foreground_indices: np.ndarray | None = None

    def patch_centres(self) -> np.ndarray:
        """Flat indices (on the current input's grid) of the foreground voxels patch centres are drawn from."""
        if self.foreground_indices is None:
            mask = self.mask_current if self.mask_current is not None else self.mask_low
            self.foreground_indices = np.flatnonzero(mask)
        return self.foreground_indices


def expand_paths(patterns: Sequence[str], resolve) -> list[Path]:  # type: ignore[no-untyped-def]
    """Expand paths and globs (relative to the config) into a sorted list of existing files."""
    found: list[Path] = []
    for pattern in patterns:
        path = resolve(pattern)
        matches = sorted(Path(p) for p in glob.glob(str(path))) if any(c in str(path) for c in "*?[") else [path]
        if not matches:
            raise InputError(f"{pattern} matches no files (looked in {path.parent}); check data paths in the config")
        for match in matches:
            if not match.exists():
                raise InputError(f"training volume {match} does not exist; check data paths in the config")
            found.append(match)
    return found


def integer_scale(scale: Sequence[float]) -> tuple[int, int, int]:
    """The scale as integers; training pairs need whole factors (arbitrary-scale models train at these too)."""
    if not all(float(s).is_integer() and s >= 1 for s in scale):
        raise InputError(f"training scale {tuple(scale)} must be whole factors >= 1 (e.g. 2 or 1,1,4)")
    return tuple(int(s) for s in scale)  # type: ignore[return-value]


def load_subject(
    path: Path,
    scale: tuple[int, int, int],
    *,
    normalization: NormalizationSettings,
    crop_foreground: bool,
    n4: bool | dict[str, Any] | None,
    low_path: Path | None = None,
    register_low: bool | str = True,
    mask_path: Path | None = None,
    exclusions: Sequence[SliceExclusion] = (),
    foreground: str = "threshold",
) -> Subject:
    """Read, check, optionally N4-correct and crop one subject; register its real low-resolution partner.

    The foreground comes from ``mask_path`` (a mask drawn on this scan, non-zero inside) or from a threshold.
    Voxels named by ``exclusions`` are first filled from their nearest kept neighbours (everything after depends on
    the kept voxels only) and left out of the foreground and, later, of the targets (:mod:`MRISuperResLib.processing.exclusion`).
    ``n4`` is the config's ``data.n4`` (``true``, or a mapping of :class:`~MRISuperResLib.processing.n4.N4Settings`); N4
    corrects both members of a real pair, the high-resolution one inside ``mask_path`` when given.
    ``foreground`` is the config's ``data.foreground``: ``"threshold"`` (:func:`~MRISuperResLib.processing.masks.foreground_mask`),
    ``"head"`` or ``"brain"`` (:mod:`MRISuperResLib.processing.masks`), used when no ``mask_path`` is given.
    """
    from ..processing.n4 import N4Settings, n4_correct
    from ..processing.cropping import crop_to_foreground
    from ..processing.masks import foreground_mask, mask_on_grid

    volume = read_volume(path)
    volume = volume.with_array(volume.array.astype(np.float32))
    excluded = excluded_voxels(exclusions, volume, path.name)
    volume = volume.with_array(fill_excluded(volume.array, excluded))
    if mask_path is not None:
        mask = mask_on_grid(read_volume(mask_path), volume.grid)
    elif foreground == "threshold":
        mask = foreground_mask(volume)
    else:
        from ..processing.masks import mask_of_kind

        mask = mask_of_kind(volume, foreground)
    if excluded is not None:
        mask = mask.astype(bool) & ~excluded
    n4_settings = N4Settings.from_config(n4) if not isinstance(n4, N4Settings) else n4
    if n4_settings is not None:
        n4_mask = mask if mask_path is not None else None
        if excluded is not None and n4_mask is None:
            from ..processing.n4 import pass_mask

            n4_mask = pass_mask(volume, n4_settings.mask) & ~excluded
        volume = n4_correct(volume, n4_settings, mask=n4_mask).corrected
    if crop_foreground:
        volume, region = crop_to_foreground(volume, mask, multiple=scale)
        mask = mask[region]
        excluded = excluded[region] if excluded is not None else None
    usable = tuple(n - n % s for n, s in zip(volume.shape, scale))
    if min(usable) < 2 * max(scale):
        raise InputError(f"training volume {path} is too small ({volume.shape}) for scale {scale}")
    high = volume.array[: usable[0], : usable[1], : usable[2]]
    mask = mask[: usable[0], : usable[1], : usable[2]]
    if excluded is not None:
        excluded = excluded[: usable[0], : usable[1], : usable[2]]
    high_grid = Grid(usable, volume.spacing, volume.grid.origin, volume.grid.direction)
    low_grid = resampled_grid(high_grid, tuple(n // s for n, s in zip(usable, scale)))  # type: ignore[arg-type]
    normalizer = PercentileNormalizer.fit(high, normalization.lower_percentile, normalization.upper_percentile)
    mask_low = _downsample_mask(mask, scale)
    real_low = None
    if low_path is not None:
        low_volume = read_volume(low_path)
        if n4_settings is not None:
            low_volume = n4_correct(low_volume, n4_settings).corrected
        real_low = _registered_low(low_volume, Volume(high, high_grid), low_grid, register_low)
    return Subject(
        name=path.name,
        high_source=normalizer.normalize(high, clip=False).astype(np.float16),
        high_grid=high_grid,
        low_grid=low_grid,
        mask_low=mask_low,
        mask_high=mask.astype(bool),
        real_low=real_low,
        excluded_high=excluded if excluded is not None and excluded.any() else None,
    )


def _downsample_mask(mask: np.ndarray, scale: Sequence[int]) -> np.ndarray:
    shape = tuple(n // s for n, s in zip(mask.shape, scale))
    blocks = mask.reshape(shape[0], scale[0], shape[1], scale[1], shape[2], scale[2])
    return blocks.mean(axis=(1, 3, 5)) >= 0.5


def _registered_low(low: Volume, high: Volume, low_grid: Grid, register_low: bool | str) -> np.ndarray:
    """``low`` registered onto ``high`` (``register_low``: ``true``/``"affine"``, ``"deformable"`` for a B-spline
    stage after the affine one, ``false`` for none) and resampled onto ``low_grid``."""
    from ..processing.registration import register, resample_into

    if register_low not in (True, False, "affine", "deformable"):
        raise InputError(f"data.pairs register must be true, false, affine or deformable, got {register_low!r}")
    if register_low:
        transform = register(high, low).transform
        if register_low == "deformable":
            from ..processing.deformable import register_deformable

            transform = register_deformable(high, low, transform).transform
    else:
        import SimpleITK as sitk

        transform = sitk.Transform(3, sitk.sitkIdentity)
    return resample_into(low, transform, low_grid).array.astype(np.float32)


def refresh_subject(
    subject: Subject,
    spec: DegradationSpec,
    rng: np.random.Generator,
    normalization: NormalizationSettings,
    gmm_probability: float = 0.0,
    acquisition: AcquisitionRanges | None = None,
    mark_excluded: bool = True,
    elastic: ElasticSettings | None = None,
    min_low_shape: Sequence[int] = (1, 1, 1),
) -> None:
    """Draw a new low-resolution input (simulated, or the real partner) and its baseline and target.

    Simulated inputs follow ``spec`` or, when ``acquisition`` is given, one acquisition drawn from its ranges
    (:mod:`..acquisition`); the target is the (contrast-remapped, when drawn) high-resolution volume. With
    ``mark_excluded`` the target is NaN at the subject's excluded voxels (training: see
    :func:`~MRISuperResLib.processing.exclusion.fill_from_estimate`); validation keeps the filled values and masks the metrics instead.
    With ``elastic``, the high-resolution volume is deformed first (a simulated input is then simulated from it)
    and a real partner, like the excluded voxels, gets the identical deformation on its own grid.
    An acquisition that draws ``voxel_mm`` resamples the high-resolution volume to that voxel edge first (not for
    subjects with excluded voxels), keeping every input axis at least ``min_low_shape`` (the patch size); the
    arrays then have the resampled shapes and ``mask_current`` the foreground on the new input grid.
    """
    high = subject.high_source.astype(np.float32)
    low_real = subject.real_low
    excluded = subject.excluded_high
    if gmm_probability > 0 and rng.random() < gmm_probability:
        high = gmm_contrast(high, subject.mask_high, rng)
    if elastic is not None and rng.random() < elastic.probability:
        extent = np.asarray(subject.high_grid.shape) * np.asarray(subject.high_grid.spacing)
        field = random_displacement(extent, elastic, rng)
        high = warp(high, subject.high_grid.spacing, field)
        if low_real is not None:
            low_real = warp(low_real, subject.low_grid.spacing, field)
        if excluded is not None:
            excluded = warp(excluded.astype(np.float32), subject.high_grid.spacing, field) > 0
    subject.mask_current = None
    subject.foreground_indices = None
    if subject.real_low is None and acquisition is not None:
        factors = [h / l for h, l in zip(subject.high_grid.shape, subject.low_grid.shape)]
        drawn = acquisition.draw(rng, factors)
        low_shape = subject.low_grid.shape
        if drawn.voxel_mm is not None and excluded is None:
            high, subject.mask_current, low_shape = _resample_voxels(high, subject, drawn.voxel_mm, min_low_shape)
        if drawn.gamma != 1.0:
            high = np.power(np.clip(high, 0.0, None), drawn.gamma).astype(np.float32)
        low = acquire(high, low_shape, replace(drawn, gamma=1.0))
    elif subject.real_low is None:
        low = simulate(high, subject.low_grid.shape, spec, rng)
    else:
        low = low_real
    low_map, network_input = normalize_network_input(low, normalization)
    if subject.real_low is None:
        target = low_map.normalize(high, clip=False)
    else:
        high_map = PercentileNormalizer.fit(high, normalization.lower_percentile, normalization.upper_percentile)
        target = high_map.normalize(high, clip=False)
    factors = [h // l for h, l in zip(high.shape, low.shape)]
    with torch.inference_mode():
        baseline = bspline_upsample(torch.from_numpy(low_map.normalize(low, clip=False))[None, None],
                                    factors)[0, 0].numpy()
    subject.low = network_input.astype(np.float16)
    subject.baseline = baseline.astype(np.float16)
    if mark_excluded and excluded is not None:
        target = np.where(excluded, np.float32(np.nan), target)
    subject.target = target.astype(np.float16)


def _resample_voxels(high: np.ndarray, subject: Subject, voxel_mm: float,
                     min_low_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int, int]]:
    """``high`` resampled by k-space (sinc) resampling to voxel edges near ``voxel_mm`` (whole multiples of the
    scale, the input at least ``min_low_shape``), its input-grid foreground and the input shape; unchanged (mask
    ``None``) when the shape would not change."""
    from scipy import ndimage

    from ..processing.degradation import fourier_resample

    scale = [h // l for h, l in zip(subject.high_grid.shape, subject.low_grid.shape)]
    low_shape = tuple(max(int(m), int(round(n * float(spacing) / voxel_mm)) // s)
                      for n, spacing, s, m in zip(high.shape, subject.high_grid.spacing, scale, min_low_shape))
    shape = tuple(n * s for n, s in zip(low_shape, scale))
    if shape == tuple(high.shape):
        return high, None, subject.low_grid.shape
    fine = fourier_resample(high, shape)  # type: ignore[arg-type]
    zoom = [m / n for m, n in zip(shape, high.shape)]
    mask = ndimage.zoom(subject.mask_high.astype(np.float32), zoom, order=1, mode="nearest", grid_mode=True) >= 0.5
    return fine, _downsample_mask(mask[: shape[0], : shape[1], : shape[2]], scale), low_shape  # type: ignore[return-value]


def refresh_rng(seed: int, refresh: int, subject_index: int) -> np.random.Generator:
    """The random stream of one subject's re-simulation number ``refresh``."""
    return np.random.default_rng([seed, _REFRESH_STREAM, refresh, subject_index])


def validation_rng(seed: int, subject_index: int) -> np.random.Generator:
    """The fixed random stream of a validation subject's simulated input."""
    return np.random.default_rng([seed, _VALIDATION_STREAM, subject_index])


def patch_rng(seed: int, step: int, rank: int = 0) -> np.random.Generator:
    """The random stream of the patches (and their augmentation) of one step on one process."""
    return np.random.default_rng([seed, _PATCH_STREAM, step, rank])


def stability_rng(seed: int, step: int, rank: int = 0) -> np.random.Generator:
    """The random stream of one step's stability twin (``loss.stability``) on one process: the same whether the
    batch was drawn in the step or ahead."""
    return np.random.default_rng([seed, _STABILITY_STREAM, step, rank])


def sample_patches(
    subjects: Sequence[Subject],
    rng: np.random.Generator,
    patch: Sequence[int],
    batch_size: int,
    foreground_fraction: float,
    contexts: Sequence[np.ndarray] | None = None,
    slice_axis: int | None = None,
) -> PatchBatch:
    """Cut ``batch_size`` aligned patch triples (input, baseline, target), foreground-weighted.

    With ``contexts`` (one vector per subject) the batch carries each patch's context and, along ``slice_axis``,
    the whole-volume positions of its fine slices (:func:`~..conditioning.slice_positions`).
    """
    lows, baselines, highs, chosen, positions = [], [], [], [], []
    for _ in range(batch_size):
        number = int(rng.integers(len(subjects)))
        subject = subjects[number]
        shape = subject.low.shape  # type: ignore[union-attr]  # the current draw's (another voxel size, maybe)
        candidates = subject.patch_centres()
        if rng.random() < foreground_fraction and candidates.size:
            centre = np.unravel_index(int(candidates[rng.integers(candidates.size)]), shape)
        else:
            centre = tuple(int(rng.integers(n)) for n in shape)
        start = [int(np.clip(c - p // 2, 0, n - p)) for c, p, n in zip(centre, patch, shape)]
        factors = [h // l for h, l in zip(subject.target.shape, shape)]  # type: ignore[union-attr]
        low_region = tuple(slice(s, s + p) for s, p in zip(start, patch))
        high_region = tuple(slice(s * f, (s + p) * f) for s, p, f in zip(start, patch, factors))
        lows.append(subject.low[low_region])  # type: ignore[index]
        baselines.append(subject.baseline[high_region])  # type: ignore[index]
        highs.append(subject.target[high_region])  # type: ignore[index]
        chosen.append(number)
        if contexts is not None and slice_axis is not None:
            whole = slice_positions(subject.target.shape[slice_axis])  # type: ignore[union-attr]
            positions.append(whole[high_region[slice_axis]])

    def stack(items: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(items).astype(np.float32))[:, None]

    if contexts is None:
        return PatchBatch(stack(lows), stack(baselines), stack(highs))
    context = torch.from_numpy(np.stack([contexts[n] for n in chosen]).astype(np.float32))
    return PatchBatch(stack(lows), stack(baselines), stack(highs), context,
                      torch.from_numpy(np.stack(positions)) if positions else None)


def split_subjects(paths: Sequence[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Split by subject: a seeded shuffle, at least one for validation and one for training."""
    if len(paths) < 2:
        raise InputError(
            f"{len(paths)} training volume(s) cannot be split into training and validation; give at least 2 or "
            "list validation volumes in data.validation"
        )
    order = np.random.default_rng([seed, 4]).permutation(len(paths))
    count = min(len(paths) - 1, max(1, round(fraction * len(paths))))
    validation = sorted(paths[i] for i in order[:count])
    train = sorted(paths[i] for i in order[count:])
    return train, validation
