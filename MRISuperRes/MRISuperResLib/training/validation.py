"""Validation of a network being trained: mean PSNR / SSIM against the targets (and those of the B-spline
baseline), and the consistency threshold calibrated on the validation inputs for the final model.

Validation inputs are the ``(low, baseline, target, mask, excluded)`` arrays of
:func:`.builders.validation_arrays`: the coarse input, its cubic B-spline upsampling, the true fine volume, the
foreground mask (PSNR is computed inside it) and the excluded slices (SSIM leaves them out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine.conditioning import slice_positions
from ..engine.device import DeviceChoice
from ..engine.inference import run_tiled
from ..evaluation.metrics import psnr, ssim
from .data import Subject

#: The consistency threshold is this many times the largest consistency NRMSE on the validation inputs.
CONSISTENCY_MARGIN = 1.5


@dataclass
class Validation:
    """Mean validation metrics of the model and of the B-spline baseline (PSNR in dB inside the foreground)."""

    psnr: float
    ssim: float
    baseline_psnr: float
    baseline_ssim: float


def validate(network: nn.Module, inputs: Sequence[tuple[np.ndarray, ...]], device: DeviceChoice, residual: bool,
             conditions: Sequence[dict[str, Any]] | None = None) -> Validation:
    """Whole-volume (or cropped) inference on every validation input; mean PSNR / SSIM vs the targets.

    Fixed-scale networks run tiled (:func:`~MRISuperResLib.engine.inference.run_tiled`, with each input's
    ``conditions``: context and slice positions); arbitrary-scale ones in one pass onto the target's grid. A
    ``residual`` network's output is added to the baseline. The network is left in training mode.
    """
    network.eval()
    arbitrary_scale = bool(getattr(network, "arbitrary_scale", False))
    scores = []
    for index, (low, baseline, target, mask, excluded) in enumerate(inputs):
        if arbitrary_scale:
            with torch.inference_mode():
                out = network(torch.from_numpy(low)[None, None].to(device.device),
                              target.shape)[0, 0].float().cpu().numpy()
        else:
            out = run_tiled(network, low, device, **(conditions[index] if conditions else {}))
        prediction = baseline + out if residual else out
        scores.append((psnr(prediction, target, mask), ssim(prediction, target, excluded),
                       psnr(baseline, target, mask), ssim(baseline, target, excluded)))
    network.train()
    means = np.mean(np.asarray(scores), axis=0)
    return Validation(*(float(v) for v in means))


def validation_condition(subject: Subject, context: np.ndarray, shape: tuple[int, ...], slice_axis: int,
                         scale: Sequence[int]) -> dict[str, Any]:
    """Context and slice positions of a validation input of ``shape`` (coarse voxels): the central crop of
    ``subject`` (or all of it), whose fine slices along ``slice_axis`` sit at their positions in the whole volume."""
    size, factor = subject.low_grid.shape[slice_axis], scale[slice_axis]
    start = max(0, (size - shape[slice_axis]) // 2)
    whole = slice_positions(subject.high_grid.shape[slice_axis])
    return {"context": context, "slice_positions": whole[start * factor:(start + shape[slice_axis]) * factor]}


def calibrate_consistency(model, subjects: Sequence[Subject], scale: Sequence[int], device: str,  # type: ignore[no-untyped-def]
                          contexts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Consistency NRMSE of ``model`` (a loaded model file) on each whole validation subject, run through
    ``enhance`` (with the subject's raw context values from ``contexts`` when conditioned); the threshold above
    which ``enhance`` warns is :data:`CONSISTENCY_MARGIN` times the largest of them."""
    from ..engine.enhance import enhance_volume
    from ..imaging.volume import Volume

    values = []
    for subject in subjects:
        low = Volume(subject.low.astype(np.float32), subject.low_grid)  # type: ignore[union-attr]
        context = contexts.get(subject.name) if contexts is not None else None
        result = enhance_volume(low, model, scale, device=device, context=context)
        values.append(result.consistency_nrmse)
    return {"threshold": CONSISTENCY_MARGIN * max(values), "validation_values": values,
            "rule": "1.5 x the largest consistency NRMSE on the validation inputs"}
