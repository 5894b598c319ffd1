"""Small building blocks shared by the model families (beyond what MONAI provides)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class AnisotropicPixelShuffle3d(nn.Module):
    """Rearrange ``C * r_i * r_j * r_k`` channels into an ``(r_i, r_j, r_k)``-times larger 3D grid.

    MONAI's ``SubpixelUpsample`` shuffles by one factor on every axis; through-plane super-resolution needs
    per-axis factors such as ``(1, 1, 4)``. Channel layout: ``c * (r_i*r_j*r_k) + (a*r_j + b)*r_k + d`` becomes
    output voxel ``(i*r_i + a, j*r_j + b, k*r_k + d)`` of channel ``c`` (as ``torch.nn.PixelShuffle`` in 2D).
    """

    def __init__(self, factors: Sequence[int]) -> None:
        super().__init__()
        self.factors = tuple(int(f) for f in factors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r_i, r_j, r_k = self.factors
        batch, channels, size_i, size_j, size_k = x.shape
        out_channels = channels // (r_i * r_j * r_k)
        x = x.view(batch, out_channels, r_i, r_j, r_k, size_i, size_j, size_k)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)
        return x.reshape(batch, out_channels, size_i * r_i, size_j * r_j, size_k * r_k)


def trilinear_upsample(x: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """Cell-centred trilinear upsampling by integer per-axis factors (``align_corners=False``)."""
    size = [n * f for n, f in zip(x.shape[2:], factors)]
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)
