"""Small building blocks shared by the model families (beyond what MONAI provides)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class ConvBlock(nn.Sequential):
    """A convolution (optionally transposed) with "same" padding, optionally followed by a ReLU.

    The module layout and parameter names are those of MONAI's ``monai.networks.blocks.Convolution`` with
    ``conv_only=True`` (child ``conv``) or with ``act="RELU", norm=None`` (children ``conv`` and ``adn.A``), so
    model files hold the same tensor names, and the arithmetic is the same ``torch.nn`` convolution. The block is
    written here because importing MONAI loads every MONAI subpackage (about 4 s on a 2-core CPU): the engine
    pays that on every ``enhance`` process for one layer type; training keeps using MONAI's losses, metrics and
    networks. A test checks that this block and MONAI's give identical names and outputs.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: channel counts.
        kernel_size: odd kernel edge (int or per axis); padding keeps the size (``(k - 1) // 2``).
        relu: append a ReLU (MONAI's ``adn`` with ``A``).
        transposed: a transposed convolution with ``stride``, ``padding`` and ``output_padding`` as given.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        *,
        relu: bool = False,
        transposed: bool = False,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | None = None,
        output_padding: int | Sequence[int] = 0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        kernel = (kernel_size,) * spatial_dims if isinstance(kernel_size, int) else tuple(kernel_size)
        same = tuple((k - 1) // 2 for k in kernel)
        if transposed:
            layer: nn.Module = (nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d)(
                in_channels, out_channels, kernel, stride=stride, padding=same if padding is None else padding,
                output_padding=output_padding,
            )
        else:
            layer = (nn.Conv3d if spatial_dims == 3 else nn.Conv2d)(
                in_channels, out_channels, kernel, stride=stride, padding=same if padding is None else padding
            )
        self.add_module("conv", layer)
        if relu:
            activation = nn.Sequential()
            activation.add_module("A", nn.ReLU())
            self.add_module("adn", activation)


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


#: Coarse voxels of context that make an in-network B-spline upsampling of a tile equal (to float32 precision)
#: the upsampling of the whole volume: the exact prefilter's impulse response falls by ``2 - sqrt(3)`` per voxel,
#: ``0.268**10 < 2e-6``, plus the cubic kernel's own 2-voxel support.
BSPLINE_HALO = 12


def check_integer_factors(scale: Sequence[float], who: str) -> tuple[int, int, int]:
    """``scale`` as three integer factors >= 1, or a ``ValueError`` naming ``who``."""
    factors = tuple(scale)
    if len(factors) != 3 or any(float(s) != int(s) or int(s) < 1 for s in factors):
        raise ValueError(f"{who} needs three integer factors >= 1, got {factors}")
    return tuple(int(s) for s in factors)  # type: ignore[return-value]


def upsample_stages(factors: Sequence[int]) -> list[tuple[int, ...]]:
    """Split per-axis integer factors into successive strides, x2 at a time where a factor is even.

    ``(2, 2, 2) -> [(2, 2, 2)]``; ``(1, 1, 4) -> [(1, 1, 2), (1, 1, 2)]`` (as SRDenseNet's two x2 deconvolutions
    for x4); ``(3, 3, 3) -> [(3, 3, 3)]``; ``(1, 1, 1) -> []``.
    """
    remaining = [int(f) for f in factors]
    stages = []
    while any(r > 1 for r in remaining):
        stride = tuple(1 if r == 1 else (2 if r % 2 == 0 else r) for r in remaining)
        stages.append(stride)
        remaining = [r // s for r, s in zip(remaining, stride)]
    return stages


def transposed_conv_geometry(stride: int) -> tuple[int, int, int]:
    """``(kernel, padding, output_padding)`` of a transposed convolution that enlarges ``n`` to exactly ``n*stride``.

    Stride 2 gives SRDenseNet's 3-wide kernel (Tong et al. 2017); in general the kernel is ``2*stride - 1`` wide so
    every output sees the two nearest inputs; stride 1 is a plain 3-wide convolution.
    """
    if stride == 1:
        return 3, 1, 0
    padding = stride // 2
    return 2 * stride - 1, padding, 1 - stride + 2 * padding


def fine_voxel_positions(n_in: int, n_out: int, dtype: torch.dtype = torch.float64,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """Continuous coarse index of every fine voxel centre along one axis (cell-centred grids).

    Fine voxel ``q`` of ``n_out`` covering the same extent as ``n_in`` coarse voxels sits at coarse index
    ``(q + 0.5) * n_in / n_out - 0.5`` (see :mod:`MRISuperResLib.imaging.geometry`).
    """
    q = torch.arange(n_out, dtype=dtype, device=device)
    return (q + 0.5) * (n_in / n_out) - 0.5
