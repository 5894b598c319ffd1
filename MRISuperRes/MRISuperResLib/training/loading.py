"""Reading a run's subjects: training volumes and real pairs, validation volumes and held-out real pairs.

Validation is simulated from high-resolution volumes (``data.validation``, or a share of ``data.train``) and/or
made of real pairs held out in ``data.validation_pairs``, registered exactly as training pairs are. A real pair's
baseline is its own registered low-resolution member upsampled by B-spline onto the target grid; at scale 1 (a
3T -> 7T set-up, the thesis's) that is the input itself resampled onto the target grid, so the printed baseline,
early stopping and the best model are judged against the input. A simulated validation input that equals its
target (scale 1 without noise) would score an infinite baseline and is refused.

Progress is shown while loading (a bar on terminals; one line before and after).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..processing.degradation import DegradationSpec
from ..errors import InputError
from ..evaluation.metrics import psnr
from ..processing.normalization import NormalizationSettings
from .config import ConfigError, TrainConfig
from .data import (
    Subject,
    expand_paths,
    load_subject,
    refresh_subject,
    split_subjects,
    validation_rng,
)
from ..processing.exclusion import SliceExclusion, parse_exclusion

PAIR_KEYS = ("high", "low", "register", "mask", "exclude_slices")

#: Most volumes read at once (each holds its float32 copy while it is cropped and normalised).
LOAD_WORKERS = 8


@dataclass
class LoadedData:
    """The subjects of a run: ``train`` (simulated and real pairs) and ``validation`` (input, baseline and
    target already drawn, fixed for the whole run)."""

    train: list[Subject]
    validation: list[Subject]


@dataclass(frozen=True)
class _Item:
    high: Path
    low: Path | None = None
    register: bool | str = True
    mask: Path | None = None
    exclusions: tuple[SliceExclusion, ...] = ()
    validation: bool = False


def _pair_items(config: TrainConfig, pairs: list[dict[str, Any]], key: str, validation: bool,
                exclusions: dict[str, list[SliceExclusion]]) -> list[_Item]:
    items = []
    for pair in pairs:
        if not isinstance(pair, dict) or set(pair) - set(PAIR_KEYS) or "high" not in pair or "low" not in pair:
            raise ConfigError(f"data.{key} entries need high and low (and optional register, mask, exclude_slices),"
                              f" got {pair!r}")
        high = config.resolve(pair["high"])
        rules = (parse_exclusion(pair["exclude_slices"], config.resolve, f"data.{key} exclude_slices")
                 if pair.get("exclude_slices") is not None else exclusions.get(high.name, []))
        items.append(_Item(high, config.resolve(pair["low"]), pair.get("register", True),
                           config.resolve(pair["mask"]) if pair.get("mask") else None, tuple(rules), validation))
    return items


def plan_items(config: TrainConfig) -> list[_Item]:
    """What to read, in order: training volumes, training pairs, validation volumes, validation pairs.

    Raises:
        InputError, ConfigError: no training data, no validation data, malformed entries.
    """
    data = config.data
    exclusions = {Path(name).name: parse_exclusion(value, config.resolve, f"data.exclude_slices[{name}]")
                  for name, value in (data.exclude_slices or {}).items()}
    masks = {Path(name).name: config.resolve(mask) for name, mask in data.masks.items()}
    volumes = expand_paths(data.train, config.resolve)
    if data.validation:
        train_paths, validation_paths = volumes, expand_paths(data.validation, config.resolve)
    elif volumes and not data.validation_pairs:
        train_paths, validation_paths = split_subjects(volumes, data.validation_fraction, config.seed)
    else:
        train_paths, validation_paths = volumes, []
    if not train_paths and not data.pairs:
        raise InputError("no training volumes: list high-resolution volumes in data.train or pairs in data.pairs")
    if not validation_paths and not data.validation_pairs:
        raise InputError("no validation data: list volumes in data.validation, real pairs in data.validation_pairs,"
                         " or give at least 2 volumes in data.train")

    def volume_item(path: Path, validation: bool) -> _Item:
        return _Item(path, mask=masks.get(path.name), exclusions=tuple(exclusions.get(path.name, [])),
                     validation=validation)

    return [*(volume_item(p, False) for p in train_paths),
            *_pair_items(config, data.pairs, "pairs", False, exclusions),
            *(volume_item(p, True) for p in validation_paths),
            *_pair_items(config, data.validation_pairs, "validation_pairs", True, exclusions)]


def load_training_data(
    config: TrainConfig,
    scale: tuple[int, int, int],
    normalization: NormalizationSettings,
    spec: DegradationSpec,
    *,
    show_progress: bool = False,
    log: Callable[[str], None] = print,
) -> LoadedData:
    """Read every subject (with a progress bar when ``show_progress``), draw the fixed validation inputs, and check
    them against the patch size and the scale.

    Raises:
        InputError: unreadable or too small volumes, a validation input equal to its target.
        ConfigError: malformed pair or exclusion entries.
    """
    data = config.data
    items = plan_items(config)
    pairs = sum(item.low is not None and bool(item.register) for item in items)
    log(f"loading {len(items)} volume(s)" + (f", registering {pairs} real pair(s)" if pairs else ""))
    started = time.time()
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc="loading data", unit="volume", file=sys.stderr, disable=None,
                   dynamic_ncols=True)
    common = {"normalization": normalization, "crop_foreground": data.crop_foreground, "n4": data.n4,
              "foreground": data.foreground}
    loaded = LoadedData([], [])

    def read(item: _Item) -> Subject:
        subject = load_subject(item.high, scale, low_path=item.low, register_low=item.register, mask_path=item.mask,
                               exclusions=item.exclusions, **common)
        if bar is not None:
            bar.set_postfix_str(item.high.name, refresh=False)
            bar.update(1)
        return subject

    # Reading, masking and registering release the GIL (zlib, numpy, SimpleITK), so volumes load side by side;
    # results are taken in plan order, so the subjects and their validation draws do not depend on the timing.
    workers = max(1, min(len(items), os.cpu_count() or 1, LOAD_WORKERS))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        subjects = list(pool.map(read, items))
    for item, subject in zip(items, subjects):
        if item.validation:
            refresh_subject(subject, spec, validation_rng(config.seed, len(loaded.validation)), normalization,
                            mark_excluded=False)
            _check_validation(subject, scale)
            loaded.validation.append(subject)
        else:
            loaded.train.append(subject)
    if bar is not None:
        bar.close()
    patch = tuple(data.patch_size)
    for subject in loaded.train:
        if any(p > n for p, n in zip(patch, subject.low_grid.shape)):
            raise InputError(f"training volume {subject.name} ({subject.low_grid.shape} low-resolution voxels) "
                             f"is smaller than data.patch_size {list(patch)}")
    real = sum(s.real_low is not None for s in loaded.validation)
    log(f"loaded {len(loaded.train)} training and {len(loaded.validation)} validation subject(s)"
        + (f" ({real} real pair(s))" if real else "") + f" in {time.time() - started:.1f} s")
    return loaded


def _check_validation(subject: Subject, scale: tuple[int, int, int]) -> None:
    baseline = subject.baseline.astype(np.float32)  # type: ignore[union-attr]
    target = subject.target.astype(np.float32)  # type: ignore[union-attr]
    if not np.isfinite(psnr(baseline, target, subject.mask_high)):
        raise InputError(
            f"validation input of {subject.name} equals its target (scale {','.join(map(str, scale))} without "
            "noise), so the baseline would score an infinite PSNR: hold out real pairs in data.validation_pairs "
            "or add noise in data.degradation"
        )
