"""Data consistency: does the super-resolved volume agree with what the scanner measured?

The result is degraded with the model's own forward model (:mod:`.degradation`) back onto the input grid and
compared voxel by voxel with the input. The map is the absolute disagreement in the input's intensity units;
the score is the root-mean-square disagreement divided by the input's normalisation range (``high - low``
percentiles), i.e. in normalised units: 0 means the result explains the input exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .degradation import DegradationSpec, degrade


@dataclass(frozen=True)
class ConsistencyReport:
    """Disagreement between a fine volume degraded to the input grid and the input.

    Attributes:
        map: ``|degrade(fine) - input|`` on the input grid, float32, intensity units.
        nrmse: RMS of the disagreement divided by the normalisation range (unitless).
    """

    map: np.ndarray
    nrmse: float


def consistency_report(
    fine: np.ndarray, measured: np.ndarray, spec: DegradationSpec, intensity_range: float,
    predicted: np.ndarray | None = None,
) -> ConsistencyReport:
    """Compare ``degrade(fine)`` with ``measured`` (both ``[i, j, k]``; ``fine`` on the upsampled grid).

    The forward model runs in float32: its error (about 1e-6 of the intensity range) is far below any
    disagreement the map is read for, and it halves the memory traffic of the largest arrays of a run.
    ``predicted`` is ``degrade(fine)`` when the caller has already computed it.
    """
    if predicted is None:
        predicted = degrade(fine, tuple(measured.shape), spec, np.float32)  # type: ignore[arg-type]
    difference = predicted - measured.astype(np.float32)
    nrmse = float(np.sqrt(np.mean(np.square(difference, dtype=np.float64))) / intensity_range)
    return ConsistencyReport(np.abs(difference).astype(np.float32), nrmse)
