"""Mixed precision for training and per-scan adaptation: the autocast type, region and the gradient scaler of the
float16 path.

``run.amp`` trains under ``torch.autocast`` with the device's half type (:func:`training_dtype`): bfloat16 where the
GPU supports it, float16 on older CUDA GPUs (Maxwell / Pascal, e.g. the Titan X of seed 002), and bfloat16 on CPUs
with bfloat16 instructions (AVX512-BF16, AMX: AMD Zen 4 and later, Intel Cooper Lake / Sapphire Rapids and later),
where oneDNN runs the 3D convolutions of a training step about twice as fast as in float32
(``benchmarks/bench_training.py``); other CPUs and MPS train in float32. The weights, the optimiser state, the
B-spline baseline the residual networks add to and the loss stay float32 (autocast only runs the convolutions and
matrix products in half precision). bfloat16 keeps float32's exponent range and needs nothing more. float16's
smallest normal number is about 6e-5, so small gradients underflow to zero; the standard remedy (Micikevicius et
al., "Mixed Precision Training", ICLR 2018; ``torch.amp.GradScaler``) multiplies the loss by a large factor before
the backward pass, divides the gradients by it before the optimiser step, skips steps whose gradients overflowed and
adapts the factor. :func:`grad_scaler` returns a scaler that is enabled exactly on that float16 path (a disabled
scaler passes every call through, so the other paths are unchanged); its ``state_dict`` goes into the resumable
state.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from .device import DeviceChoice, cpu_has_bfloat16


def training_dtype(choice: DeviceChoice, amp: bool) -> torch.dtype | None:
    """The autocast type of training on ``choice`` (``None``: float32).

    Args:
        choice: the training device.
        amp: ``run.amp``; ``False`` always trains in float32.

    Returns:
        CUDA: :attr:`.DeviceChoice.autocast_dtype` (bfloat16 or float16); CPU: bfloat16 when
        :func:`cpu_has_bfloat16`, else ``None``; MPS: ``None``.
    """
    if not amp:
        return None
    if choice.device.type == "cpu":
        return torch.bfloat16 if cpu_has_bfloat16() else None
    return choice.autocast_dtype


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """``torch.autocast`` on ``device`` with ``dtype``; a no-op context when ``dtype`` is ``None`` (float32)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A gradient scaler for ``device``, enabled exactly when training autocasts to float16.

    Returns:
        ``torch.amp.GradScaler`` (disabled for bfloat16 and float32: ``scale`` returns its input and ``step``
        calls the optimiser's ``step``).
    """
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
