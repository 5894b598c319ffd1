"""Image-quality metrics for super-resolution against a reference (ground truth) volume.

PSNR uses the reference's clipped range as peak (the thesis's choice, seed 002 section 3.2: very bright voxels
make the plain maximum fluctuate): ``data_range = p99 - p1`` of the reference. SSIM is MONAI's 3D SSIM on
volumes normalised by that same range. An optional mask restricts PSNR to the foreground.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import SSIMMetric


@dataclass(frozen=True)
class Quality:
    """PSNR (dB) and SSIM (unitless, at most 1) of one volume against its reference."""

    psnr: float
    ssim: float


def reference_range(reference: np.ndarray, lower: float = 1.0, upper: float = 99.0) -> tuple[float, float]:
    """The ``(low, high)`` percentiles of ``reference`` used as its intensity range."""
    low, high = np.percentile(reference, [lower, upper])
    return float(low), float(max(high, low + 1e-6))


def psnr(estimate: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB with the reference's 1-99 percentile range as peak."""
    low, high = reference_range(reference)
    error = np.asarray(estimate, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    if mask is not None:
        error = error[mask]
    mse = float(np.mean(np.square(error)))
    return float("inf") if mse == 0 else float(10.0 * np.log10((high - low) ** 2 / mse))


def ssim(estimate: np.ndarray, reference: np.ndarray, exclude: np.ndarray | None = None) -> float:
    """Mean 3D SSIM (Gaussian window 7, sigma 1.5) after scaling both by the reference's range.

    ``exclude`` (boolean, same shape): voxels to leave out (corrupted slices); only the SSIM of windows holding
    none of them is averaged. The values of excluded voxels then play no part (they may be NaN).
    """
    if exclude is not None and exclude.any():
        return _ssim_without(estimate, reference, exclude)
    low, high = reference_range(reference)

    def to_tensor(array: np.ndarray) -> torch.Tensor:
        scaled = (np.asarray(array, dtype=np.float32) - low) / (high - low)
        return torch.from_numpy(np.ascontiguousarray(scaled))[None, None]

    metric = SSIMMetric(spatial_dims=3, data_range=1.0, win_size=7)
    with torch.inference_mode():
        return float(metric(to_tensor(estimate), to_tensor(reference)).mean())


def _ssim_without(estimate: np.ndarray, reference: np.ndarray, exclude: np.ndarray) -> float:
    from monai.metrics.regression import compute_ssim_and_cs

    kept = ~exclude
    low, high = reference_range(np.asarray(reference)[kept])

    def to_tensor(array: np.ndarray) -> torch.Tensor:
        scaled = np.where(kept, (np.asarray(array, dtype=np.float32) - low) / (high - low), 0.0)
        return torch.from_numpy(np.ascontiguousarray(scaled, dtype=np.float32))[None, None]

    with torch.inference_mode():
        ssim_map, _ = compute_ssim_and_cs(to_tensor(estimate), to_tensor(reference), spatial_dims=3,
                                          kernel_size=[7, 7, 7], kernel_sigma=[1.5, 1.5, 1.5], data_range=1.0)
        # A window is usable when it holds no excluded voxel: max-pooling the exclusion over the window (valid).
        touched = torch.nn.functional.max_pool3d(torch.from_numpy(exclude.astype(np.float32))[None, None], 7,
                                                 stride=1)
        usable = touched[0, 0] == 0
        if not bool(usable.any()):
            return float("nan")
        return float(ssim_map[0, 0][usable].mean())


def quality(estimate: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> Quality:
    """PSNR and SSIM of ``estimate`` against ``reference`` (same shape)."""
    if estimate.shape != reference.shape:
        raise ValueError(f"shapes differ: {estimate.shape} vs {reference.shape}")
    return Quality(psnr(estimate, reference, mask), ssim(estimate, reference))
