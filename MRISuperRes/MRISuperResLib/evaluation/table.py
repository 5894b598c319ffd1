"""The tables of ``mrisuperres evaluate``: Markdown, CSV and JSON of the same rows.

Rows are grouped by acquisition (forward model and noise level), one per volume, then the mean of the group's
volumes. PSNR is in dB with the reference's 1-99 percentile range as peak; PSNR and SSIM are inside the head mask,
whole-volume PSNR in brackets (Markdown) or in ``*_whole`` columns (CSV, JSON). DICE, when computed, follows as a
second table: one row per volume, acquisition and label.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from ..imaging.geometry import Scale, format_scale

if TYPE_CHECKING:
    from .evaluate import VolumeScores

#: Numeric per-volume fields, in table order.
FIELDS = ("psnr_zerofill", "psnr_baseline", "psnr_sr", "psnr_zerofill_whole", "psnr_baseline_whole",
          "psnr_sr_whole", "ssim_zerofill", "ssim_baseline", "ssim_sr", "ssim_zerofill_whole", "ssim_baseline_whole",
          "ssim_sr_whole", "consistency_nrmse")
#: Methods with DICE, in table order (``reference``: the segmentation model applied to the reference itself).
DICE_METHODS = ("zerofill", "baseline", "sr", "reference")


def _groups(scores: list[VolumeScores]) -> list[tuple[str, list[VolumeScores]]]:
    groups: dict[str, list[VolumeScores]] = {}
    for score in scores:
        groups.setdefault(score.condition, []).append(score)
    return list(groups.items())


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def mean_row(scores: list[VolumeScores]) -> dict[str, float]:
    """The mean of each numeric field over ``scores`` (NaN values left out), with the gains."""
    row = {key: _mean([getattr(s, key) for s in scores]) for key in FIELDS}
    row["gain"] = row["psnr_sr"] - row["psnr_baseline"]
    row["gain_zerofill"] = row["psnr_sr"] - row["psnr_zerofill"]
    return row


def _number(value: float, digits: int, sign: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _row(name: str, condition: str, r: dict[str, float]) -> str:
    psnrs = " | ".join(f"{_number(r[f'psnr_{m}'], 2)} ({_number(r[f'psnr_{m}_whole'], 2)})"
                       for m in ("zerofill", "baseline", "sr"))
    ssims = " | ".join(_number(r[f"ssim_{m}"], 4) for m in ("zerofill", "baseline", "sr"))
    return (f"| {name} | {condition} | {psnrs} | {_number(r['gain'], 2, True)} | "
            f"{_number(r['gain_zerofill'], 2, True)} | {ssims} | {_number(r['consistency_nrmse'], 4)} |")


def _volume_row(score: VolumeScores) -> dict[str, float]:
    return {**{key: getattr(score, key) for key in FIELDS}, "gain": score.gain, "gain_zerofill": score.gain_zerofill}


def scores_table(scores: list[VolumeScores], model_name: str, scale: Scale) -> str:
    """A Markdown table: per acquisition, one row per volume and the mean; then the DICE table when computed.

    The first line describes the table, the second is empty, the table starts on the third.
    """
    lines = [
        (f"model {model_name}, scale {format_scale(scale)}; PSNR in dB inside the head mask (whole volume in "
         "brackets), SSIM inside the head mask; zero-fill = Fourier zero-filling, B-spline = cubic B-spline"),
        "",
        ("| volume | acquisition | PSNR zero-fill | PSNR B-spline | PSNR SR | gain vs B-spline | gain vs zero-fill | "
         "SSIM zero-fill | SSIM B-spline | SSIM SR | consistency NRMSE |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for condition, group in _groups(scores):
        lines += [_row(s.name, condition, _volume_row(s)) for s in group]
        if len(group) > 1:
            lines.append(_row(f"**mean** ({len(group)} volumes)", condition, mean_row(group)))
    moved = sorted({f"{s.name}: scored on the reference grid ({s.alignment})" for s in scores
                    if s.alignment != "same grid"})
    if moved:
        lines += ["", *moved]
    if any(s.dice for s in scores):
        lines += ["", dice_table(scores)]
    return "\n".join(lines)


def dice_table(scores: list[VolumeScores]) -> str:
    """Markdown DICE table: per acquisition, volume and label; the mean over volumes per label when several."""
    methods = [m for m in DICE_METHODS if any(m in s.dice for s in scores)]
    titles = {"zerofill": "zero-fill", "baseline": "B-spline", "sr": "SR", "reference": "reference (ceiling)"}
    lines = ["| volume | acquisition | label | " + " | ".join(f"DICE {titles[m]}" for m in methods) + " |",
             "|---|---|---|" + "---|" * len(methods)]
    for condition, group in _groups(scores):
        group = [s for s in group if s.dice]
        labels = sorted({label for s in group for per in s.dice.values() for label in per})
        for s in group:
            for label in labels:
                cells = [_number(s.dice.get(m, {}).get(label, float("nan")), 4) for m in methods]
                lines.append(f"| {s.name} | {condition} | {label} | " + " | ".join(cells) + " |")
            cells = [_number(_mean(list(s.dice.get(m, {}).values())), 4) for m in methods]
            lines.append(f"| {s.name} | {condition} | mean | " + " | ".join(cells) + " |")
        if len(group) > 1:
            for label in [*labels, "mean"]:
                cells = []
                for m in methods:
                    per = [s.dice.get(m, {}) for s in group]
                    values = [_mean(list(d.values())) if label == "mean" else d.get(label, float("nan")) for d in per]
                    cells.append(_number(_mean(values), 4))
                lines.append(f"| **mean** ({len(group)} volumes) | {condition} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities become ``None``; dict keys become strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def scores_json(scores: list[VolumeScores], model_name: str, scale: Scale) -> dict[str, Any]:
    """The table as a JSON-ready dict: ``volumes`` (every row, with ``gain`` and ``gain_zerofill``) and ``means``
    (one per acquisition, with its ``condition`` and volume count). NaN (not computed) is ``null``."""
    volumes = [{**asdict(s), "gain": s.gain, "gain_zerofill": s.gain_zerofill} for s in scores]
    means = [{"condition": condition, "volumes": len(group), **mean_row(group)} for condition, group in _groups(scores)]
    return _plain({"model": model_name, "scale": list(scale), "volumes": volumes, "means": means})


def scores_csv(scores: list[VolumeScores]) -> str:
    """The table as CSV: one row per volume and acquisition, then a ``mean`` row per acquisition; DICE columns
    ``dice_<method>_<label>`` when computed. Empty cells for values not computed."""
    dice_columns = sorted({f"dice_{m}_{label}" for s in scores for m, per in s.dice.items() for label in per},
                          key=lambda c: (DICE_METHODS.index(c.split("_")[1]), int(c.rsplit("_", 1)[1])))
    columns = ["volume", "condition", "noise", "alignment", *FIELDS, "gain", "gain_zerofill", *dice_columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()

    def cell(value: Any) -> Any:
        return "" if isinstance(value, float) and not math.isfinite(value) else value

    for condition, group in _groups(scores):
        for s in group:
            dice = {f"dice_{m}_{label}": v for m, per in s.dice.items() for label, v in per.items()}
            row = {"volume": s.name, "condition": condition, "noise": s.noise, "alignment": s.alignment,
                   **_volume_row(s), **dice}
            writer.writerow({k: cell(v) for k, v in row.items()})
        if len(group) > 1:
            dice = {c: _mean([s.dice.get(c.split("_")[1], {}).get(int(c.rsplit("_", 1)[1]), float("nan"))
                              for s in group]) for c in dice_columns}
            row = {"volume": "mean", "condition": condition, "noise": _mean([s.noise for s in group]),
                   "alignment": "", **mean_row(group), **dice}
            writer.writerow({k: cell(v) for k, v in row.items()})
    return buffer.getvalue()
