"""Excluding corrupted slices (or any voxels) from training targets and from evaluation.

A scan may hold slices ruined by motion, spikes or wrap-around (seed 000). Such voxels are named per volume, either
as slice indices along one axis or as a mask volume (non-zero = excluded), and then:

* they are replaced, before anything else reads the volume, by the value of the nearest kept voxel
  (:func:`fill_excluded`, a Euclidean distance transform): percentiles, foreground mask, N4, registration and the
  simulated low-resolution input depend on the kept voxels only, whatever the excluded ones hold (NaN, spikes);
* training targets carry NaN there; :func:`fill_from_estimate` gives those voxels the network's own (detached)
  prediction before any loss, so they add nothing to pixel losses and give the critic nothing to tell apart;
* validation and ``evaluate`` leave them out of PSNR (mask) and of SSIM (only windows free of them are averaged,
  :func:`MRISuperResLib.evaluation.metrics.ssim`).

Indices are 0-based voxel indices of the file as stored (before any crop), along axis ``i`` = 0, ``j`` = 1, ``k`` = 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..imaging.volume import Volume


@dataclass(frozen=True)
class SliceExclusion:
    """One exclusion rule: slices ``indices`` along ``axis``, or the non-zero voxels of the mask at ``mask``."""

    axis: int | None = None
    indices: tuple[int, ...] = ()
    mask: Path | None = None

    def describe(self) -> str:
        if self.mask is not None:
            return f"mask {self.mask.name}"
        return f"axis {self.axis} slices {', '.join(map(str, self.indices))}"


def parse_exclusion(value: Any, resolve: Callable[[str], Path], where: str) -> list[SliceExclusion]:
    """Rules from a config value: ``{axis: 2, indices: [3, 7]}``, ``{mask: file}`` or a list of those.

    Raises:
        InputError: a value of another form (naming ``where``).
    """
    items = value if isinstance(value, list) else [value]
    rules = []
    for item in items:
        if isinstance(item, dict) and set(item) == {"mask"} and isinstance(item["mask"], str):
            rules.append(SliceExclusion(mask=resolve(item["mask"])))
            continue
        if (isinstance(item, dict) and set(item) == {"axis", "indices"} and item["axis"] in (0, 1, 2)
                and isinstance(item["indices"], list) and all(isinstance(i, int) for i in item["indices"])):
            rules.append(SliceExclusion(axis=int(item["axis"]), indices=tuple(int(i) for i in item["indices"])))
            continue
        raise InputError(f"{where}: {item!r} is not an exclusion; write {{axis: 0|1|2, indices: [3, 7]}} or "
                         "{mask: file} (non-zero voxels excluded), or a list of those")
    return rules


def parse_exclusion_text(text: str) -> list[SliceExclusion]:
    """Rules from a command-line value: ``AXIS:I,J,K-L`` (``2:3,7,10-12``), or a mask file path.

    Raises:
        InputError: neither form.
    """
    if ":" in text and text.split(":", 1)[0].strip() in ("0", "1", "2"):
        axis, listed = text.split(":", 1)
        indices: list[int] = []
        try:
            for part in filter(None, (p.strip() for p in listed.split(","))):
                low, _, high = part.partition("-")
                indices += list(range(int(low), int(high or low) + 1))
        except ValueError:
            indices = []
        if indices:
            return [SliceExclusion(axis=int(axis), indices=tuple(indices))]
    path = Path(text).expanduser()
    if path.is_file():
        return [SliceExclusion(mask=path)]
    raise InputError(f"--exclude-slices {text!r} is neither AXIS:INDICES (e.g. 2:3,7,10-12) nor an existing mask "
                     "file")


def excluded_voxels(rules: Sequence[SliceExclusion], volume: Volume, name: str) -> np.ndarray | None:
    """The excluded voxels of ``volume`` (boolean, its shape), ``None`` without rules.

    Raises:
        InputError: an index outside the volume, a mask that does not cover it, or nothing left.
    """
    if not rules:
        return None
    from ..imaging.volume_io import read_volume
    from .masks import mask_on_grid

    excluded = np.zeros(volume.shape, bool)
    for rule in rules:
        if rule.mask is not None:
            if not rule.mask.is_file():
                raise InputError(f"exclusion mask {rule.mask} for {name} does not exist")
            excluded |= mask_on_grid(read_volume(rule.mask), volume.grid).astype(bool)
            continue
        size = volume.shape[rule.axis]  # type: ignore[index]
        bad = [i for i in rule.indices if not 0 <= i < size]
        if bad:
            raise InputError(f"excluded slice(s) {bad} of {name} are outside axis {rule.axis} (0..{size - 1})")
        region: list[Any] = [slice(None)] * 3
        region[rule.axis] = list(rule.indices)  # type: ignore[index]
        excluded[tuple(region)] = True
    if excluded.all():
        raise InputError(f"the exclusions of {name} ({'; '.join(r.describe() for r in rules)}) leave no voxel")
    return excluded


def fill_excluded(array: np.ndarray, excluded: np.ndarray | None) -> np.ndarray:
    """A copy of ``array`` whose excluded voxels hold the value of the nearest kept voxel (a pure function of the
    kept voxels; the input is not modified)."""
    if excluded is None or not excluded.any():
        return array
    from scipy.ndimage import distance_transform_edt

    nearest = distance_transform_edt(excluded, return_distances=False, return_indices=True)
    return array[tuple(nearest)]


def fill_from_estimate(target: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """``target`` with its excluded (NaN) voxels replaced by the detached ``estimate``: they then add nothing to
    pixel losses (same shapes, ``(batch, 1, ...)``). Returns ``target`` itself when nothing is excluded."""
    valid = torch.isfinite(target)
    if bool(valid.all()):
        return target
    return torch.where(valid, target, estimate.detach().to(target.dtype))
