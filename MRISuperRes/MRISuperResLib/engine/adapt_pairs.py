"""Self-supervised training pairs from a thick-slice scan's own in-plane detail (the idea of SMORE / ECLARE).

An in-plane axis ``a`` of the scan is degraded with the model's slice profile by the through-plane ratio ``r`` and
moved to the network's thick position: the degraded patch is the network input, the patch before degradation its
target. Arrays are in the network's axis order (thick axis last, see :func:`~.model_zoo.axis_order`); see
:mod:`.adapt` for the sampling schemes and the held-back slab.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..imaging.geometry import Scale, format_scale
from ..imaging.volume import Volume
from ..processing.bspline import bspline_upsample
from ..processing.degradation import DegradationSpec, degrade
from .adapt_settings import AdaptSettings
from .checkpoint import LoadedModel
from .model_zoo import check_scale


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
            "an isotropic scan has no finer in-plane data to learn from; run without adaptation"
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


def training_region(volume: Volume, order: tuple[int, int, int],
                    edge: int | tuple[int, int]) -> tuple[slice, slice]:
    """In-plane window (network axes 0 and 1) of at most ``edge`` voxels (one edge, or one per axis), centred on
    the head's bounding box."""
    from ..processing.masks import foreground_mask

    mask = np.transpose(foreground_mask(volume), order)
    shape = mask.shape
    edges = (edge, edge) if isinstance(edge, int) else edge
    window = []
    for axis in (0, 1):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        centre = (present[0] + present[-1] + 1) // 2 if present.size else shape[axis] // 2
        size = min(int(edges[axis]), shape[axis])
        start = int(np.clip(centre - size // 2, 0, shape[axis] - size))
        window.append(slice(start, start + size))
    return window[0], window[1]


#: In-plane voxels finer than the through-plane target spacing by more than this share are resampled to it.
FINER_TOLERANCE = 0.1


def in_plane_factors(in_plane_spacing: tuple[float, float], target_spacing: float,
                     settings: AdaptSettings) -> tuple[float, float]:
    """How many times coarser each in-plane axis (network axes 0 and 1) must become for its voxel edge to equal the
    through-plane target spacing (thick spacing / ``r``, mm): ``target / spacing`` for an axis finer than the
    target by more than :data:`FINER_TOLERANCE`, else 1 (an axis as coarse or coarser stays as it is: upsampling
    it would only blur the targets). All 1 when ``settings.match_spacing`` is off."""
    if not settings.match_spacing:
        return 1.0, 1.0
    return tuple(target_spacing / s if s < target_spacing * (1 - FINER_TOLERANCE) else 1.0
                 for s in in_plane_spacing)  # type: ignore[return-value]


def to_target_spacing(pool: np.ndarray, head: np.ndarray, factors: tuple[float, float],
                      fit: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``pool`` and its head mask with in-plane axes 0 and 1 made ``factors`` times coarser (axis 2 unchanged), but
    never below ``fit`` voxels (the length of a pair, ``r * low_patch``) where they had at least that many: a small
    field of view is resampled only as far as the pairs still fit.

    The pool is resampled in k-space (:func:`~MRISuperResLib.processing.degradation.fourier_resample`, as the
    training resamples voxel sizes); the mask is interpolated linearly and kept where that is at least 0.5. Why:
    the pairs degrade an in-plane axis by ``r`` and learn to undo it. On a 0.66 x 0.66 x 6 mm prostate at
    ``r = 4`` (target 1.5 mm), pairs at the scan's own 0.66 mm would teach 2.7 mm -> 0.66 mm, not the
    6 mm -> 1.5 mm the through-plane axis needs.
    """
    from scipy import ndimage

    from ..processing.degradation import fourier_resample

    shape = (*(max(min(fit, n), round(n / f)) for n, f in zip(pool.shape[:2], factors)), pool.shape[2])
    if shape == pool.shape:
        return pool, head
    zoom = [m / n for m, n in zip(shape, pool.shape)]
    mask = ndimage.zoom(head.astype(np.float32), zoom, order=1, mode="nearest", grid_mode=True) >= 0.5
    return fourier_resample(pool, shape), mask


class PairSampler:
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
                f"the in-plane size {pool.shape[0]}x{pool.shape[1]} (the scan along the axes where the scale is 1, "
                f"at most region={settings.region}) is too small for adaptation at ratio {ratio} (needs "
                f"{self.long} voxels); check that --scale puts the ratio on the thick axis, or run without adaptation"
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

    def draw_batches(self, rng: np.random.Generator, count: int, batch_size: int, held_back: bool,
                     augment: bool) -> list[tuple[torch.Tensor, ...]]:
        """``count`` pairs in batches of at most ``batch_size``: the same pairs as ``count`` single draws."""
        return [self.draw(rng, min(batch_size, count - first), held_back, augment)
                for first in range(0, count, batch_size)]

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
