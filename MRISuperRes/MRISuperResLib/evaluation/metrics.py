"""Image-quality metrics for super-resolution against a reference (ground truth) volume.

PSNR uses the reference's clipped range as peak (the thesis's choice, seed 002 section 3.2: very bright voxels
make the plain maximum fluctuate): ``data_range = p99 - p1`` of the reference. SSIM is MONAI's 3D SSIM on
volumes normalised by that same range. An optional mask restricts PSNR and SSIM to the foreground (for SSIM:
the mean of the SSIM map over the mask's voxels). DICE compares two label maps label by label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics.regression import compute_ssim_and_cs

#: SSIM window: Gaussian, 7 voxels, sigma 1.5 (MONAI's defaults; Wang et al. 2004 use 11 in 2D).
SSIM_WINDOW = 7
SSIM_SIGMA = 1.5


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


def ssim_map(estimate: np.ndarray, reference: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """The 3D SSIM map (Wang et al. 2004; MONAI's Gaussian window of 7, sigma 1.5, K1 0.01, K2 0.03) after scaling
    both volumes by the reference's 1-99 percentile range.

    The window is applied without padding, so the map is ``SSIM_WINDOW - 1`` voxels smaller along each axis: map
    voxel ``m`` belongs to volume voxel ``m + SSIM_WINDOW // 2``. Arrays are ``[i, j, k]``, each axis at least
    ``SSIM_WINDOW`` voxels. ``exclude`` (boolean, same shape): voxels whose values play no part (corrupted slices;
    they may be NaN): the range is taken over the other voxels and they are zeroed; windows that hold one are
    meaningless and left out by :func:`masked_mean_ssim` given the same ``exclude``.

    Raises:
        ValueError: the shapes differ or an axis is shorter than the window.
    """
    if estimate.shape != reference.shape:
        raise ValueError(f"shapes differ: {estimate.shape} vs {reference.shape}")
    if min(reference.shape) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {SSIM_WINDOW} voxels along each axis, got {reference.shape}")
    kept = None if exclude is None or not exclude.any() else ~np.asarray(exclude, dtype=bool)
    low, high = reference_range(np.asarray(reference) if kept is None else np.asarray(reference)[kept])

    def to_tensor(array: np.ndarray) -> torch.Tensor:
        scaled = (np.asarray(array, dtype=np.float32) - low) / (high - low)
        if kept is not None:
            scaled = np.where(kept, scaled, 0.0)
        return torch.from_numpy(np.ascontiguousarray(scaled, dtype=np.float32))[None, None]

    with torch.inference_mode():
        values, _ = compute_ssim_and_cs(to_tensor(estimate), to_tensor(reference), spatial_dims=3,
                                        kernel_size=[SSIM_WINDOW] * 3, kernel_sigma=[SSIM_SIGMA] * 3, data_range=1.0)
    return values[0, 0].numpy()


def masked_mean_ssim(values: np.ndarray, mask: np.ndarray | None, exclude: np.ndarray | None = None) -> float:
    """Mean of an SSIM map from :func:`ssim_map` over the voxels of the volume-sized ``mask`` (``None``: all),
    leaving out every window that holds a voxel of ``exclude`` (boolean, volume-sized; ``None``: none).

    Mask voxels within ``SSIM_WINDOW // 2`` of the volume's faces have no SSIM value and are left out; nothing left
    gives NaN.
    """
    usable = np.ones(values.shape, dtype=bool)
    if mask is not None:
        half = SSIM_WINDOW // 2
        usable &= np.asarray(mask, dtype=bool)[tuple(slice(half, n - half) for n in mask.shape)]
    if exclude is not None and np.any(exclude):
        # A window is usable when it holds no excluded voxel: max-pooling the exclusion over the window (valid).
        touched = torch.nn.functional.max_pool3d(torch.from_numpy(np.asarray(exclude, dtype=np.float32))[None, None],
                                                 SSIM_WINDOW, stride=1)
        usable &= touched[0, 0].numpy() == 0
    if mask is None and (exclude is None or not np.any(exclude)):
        return float(values.mean())
    return float(values[usable].mean()) if usable.any() else float("nan")


def ssim(estimate: np.ndarray, reference: np.ndarray, exclude: np.ndarray | None = None, *,
         mask: np.ndarray | None = None) -> float:
    """Mean 3D SSIM (see :func:`ssim_map`) over the whole volume, or over ``mask`` (boolean ``[i, j, k]``: the
    voxels to score, e.g. the head), leaving out the windows that hold a voxel of ``exclude`` (boolean, same shape:
    corrupted slices, whose values play no part and may be NaN)."""
    return masked_mean_ssim(ssim_map(estimate, reference, exclude), mask, exclude)


def dice(segmentation: np.ndarray, truth: np.ndarray, labels: list[int] | None = None) -> dict[int, float]:
    """DICE overlap ``2 |A & B| / (|A| + |B|)`` of each label between two label maps of the same shape.

    Args:
        segmentation: integer label map ``[i, j, k]`` to score.
        truth: the reference label map.
        labels: labels to score; ``None``: every non-zero label of ``truth``.

    Returns:
        ``{label: DICE in [0, 1]}``; a label absent from both maps scores NaN.
    """
    if segmentation.shape != truth.shape:
        raise ValueError(f"label maps differ in shape: {segmentation.shape} vs {truth.shape}")
    if labels is None:
        labels = [int(v) for v in np.unique(truth) if v != 0]
    scores = {}
    for label in labels:
        a, b = segmentation == label, truth == label
        total = int(a.sum()) + int(b.sum())
        scores[int(label)] = 2.0 * float(np.logical_and(a, b).sum()) / total if total else float("nan")
    return scores


def quality(estimate: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> Quality:
    """PSNR and SSIM of ``estimate`` against ``reference`` (same shape), both inside ``mask`` when given."""
    if estimate.shape != reference.shape:
        raise ValueError(f"shapes differ: {estimate.shape} vs {reference.shape}")
    return Quality(psnr(estimate, reference, mask), ssim(estimate, reference, mask=mask))
