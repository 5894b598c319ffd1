"""SRDenseNet (seed 003: De Leeuw Den Bouter et al. 2022, after Tong et al. 2017, "SRDenseNet_All").

Structure, as the seed describes it: a 3x3 convolution for low-level features -> ``blocks`` dense blocks of
``layers`` convolutions each producing ``growth`` feature maps (every layer sees the concatenated outputs of the
layers before it in its block; the first sees the block's input), so a block yields ``layers * growth`` maps
(8 x 16 = 128) -> the low-level features and the output of *every* block concatenated (the "_All" skip
connections, 128 x 9 = 1152 maps) -> 1x1 bottleneck to ``bottleneck`` (256) maps -> transposed convolutions to the
high-resolution grid (``bottleneck`` maps each; x2 per stage, 3-wide kernels, as Tong et al.'s two deconvolutions
for x4) -> a final 3x3 convolution to one channel. Every layer but the last is followed by a ReLU. No
normalisation layers.

Two forms (``spatial_dims``):

* ``2`` -- the paper's: a 2D network applied slice by slice through the volume. Slices are taken along
  ``slice_axis`` and the network upsamples within them, so the factor along ``slice_axis`` must be 1:
  ``(2, 2, 1)`` with slices along k; ``(1, 1, 4)`` (thick slices along k) with slices along i, i.e. the network
  works on (j, k) planes with in-plane factors ``(1, 4)``. By default ``slice_axis`` is the first axis whose
  factor is 1. A scale with no factor 1 (``(2, 2, 2)``) needs the 3D form.
* ``3`` -- the same architecture with 3D convolutions: any integer per-axis scale.

Global skip: with ``global_skip="baseline"`` (default) the network returns a residual the engine adds to the
cubic B-spline upsampling of the input (the reconstruction layer starts at zero, so an untrained network returns
the baseline); with ``"none"`` its output is the result, as in the paper.

Seed configuration (2D): 8 blocks x 8 layers, growth 16, bottleneck 256; 1.55 M parameters at x2
(one deconvolution) and 2.14 M at x4 (two), the ~2 M reported by Tong et al. for x4.

Layers: :class:`~.layers.ConvBlock` (MONAI ``Convolution``'s layout and tensor names, without importing MONAI)
for every convolution and transposed convolution (with its ReLU).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .layers import ConvBlock, check_integer_factors, transposed_conv_geometry, upsample_stages

GLOBAL_SKIPS = ("baseline", "none")


def _conv(dims: int, in_channels: int, out_channels: int, kernel_size: int, relu: bool = True) -> ConvBlock:
    return ConvBlock(dims, in_channels, out_channels, kernel_size, relu=relu)


class DenseBlock(nn.Module):
    """``layers`` 3x3 convolutions + ReLU; layer ``j > 0`` sees the outputs of layers ``0..j-1`` concatenated.

    Returns the concatenated outputs of all layers (``layers * growth`` channels).
    """

    def __init__(self, dims: int, in_channels: int, growth: int = 16, layers: int = 8, kernel_size: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            _conv(dims, in_channels if j == 0 else growth * j, growth, kernel_size) for j in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [self.layers[0](x)]
        for layer in self.layers[1:]:
            outputs.append(layer(torch.cat(outputs, dim=1)))
        return torch.cat(outputs, dim=1)


class SRDenseNet(nn.Module):
    """SRDenseNet_All for volumes, slice-wise 2D or 3D.

    Args:
        scale: integer factors per axis in image index order ``(i, j, k)``.
        spatial_dims: 2 (slice by slice, the paper's form) or 3.
        slice_axis: for the 2D form, the axis the slices are taken along (its factor must be 1);
            ``None`` picks the first axis with factor 1.
        blocks: dense blocks (seed: 8).
        layers: convolutions per dense block (seed: 8).
        growth: feature maps per convolution (seed: 16).
        low_channels: maps of the low-level convolution; ``None`` gives ``layers * growth`` (128).
        bottleneck: maps after the 1x1 bottleneck and in the deconvolutions (seed: 256).
        kernel_size: convolution kernel edge (seed: 3).
        global_skip: ``"baseline"`` (residual to the engine's B-spline upsampling) or ``"none"``.
    """

    family = "srdensenet"

    def __init__(
        self,
        scale: Sequence[int] = (2, 2, 1),
        spatial_dims: int = 2,
        slice_axis: int | None = None,
        blocks: int = 8,
        layers: int = 8,
        growth: int = 16,
        low_channels: int | None = None,
        bottleneck: int = 256,
        kernel_size: int = 3,
        global_skip: str = "baseline",
    ) -> None:
        super().__init__()
        self.scale = check_integer_factors(scale, "SRDenseNet")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 (slice-wise) or 3, got {spatial_dims}")
        if global_skip not in GLOBAL_SKIPS:
            raise ValueError(f"global_skip must be one of {GLOBAL_SKIPS}, got {global_skip!r}")
        if min(blocks, layers, growth, bottleneck) < 1 or kernel_size % 2 == 0:
            raise ValueError("blocks, layers, growth and bottleneck must be >= 1 and kernel_size odd")
        self.spatial_dims, self.global_skip, self.kernel_size = spatial_dims, global_skip, kernel_size
        if spatial_dims == 2:
            if slice_axis is None:
                candidates = [axis for axis, factor in enumerate(self.scale) if factor == 1]
                if not candidates:
                    raise ValueError(
                        f"the 2D (slice-wise) SRDenseNet upsamples within slices, so one factor must be 1; scale "
                        f"{self.scale} needs spatial_dims=3"
                    )
                slice_axis = candidates[0]
            if slice_axis not in (0, 1, 2) or self.scale[slice_axis] != 1:
                raise ValueError(
                    f"slice_axis {slice_axis} must be 0, 1 or 2 with factor 1 (scale {self.scale}): the 2D network "
                    "does not upsample across slices"
                )
            self.slice_axis: int | None = int(slice_axis)
            factors = tuple(f for axis, f in enumerate(self.scale) if axis != slice_axis)
        else:
            self.slice_axis = None
            factors = self.scale
        dims = spatial_dims
        low = layers * growth if low_channels is None else int(low_channels)
        self.low = _conv(dims, 1, low, kernel_size)
        self.blocks = nn.ModuleList(
            DenseBlock(dims, low if b == 0 else layers * growth, growth, layers, kernel_size) for b in range(blocks)
        )
        self.bottleneck = _conv(dims, low + blocks * layers * growth, bottleneck, 1)
        stages = []
        for stride in upsample_stages(factors):
            geometry = [transposed_conv_geometry(s) for s in stride]
            stages.append(
                ConvBlock(
                    dims, bottleneck, bottleneck, [g[0] for g in geometry], relu=True, transposed=True,
                    stride=stride, padding=[g[1] for g in geometry], output_padding=[g[2] for g in geometry],
                )
            )
        self.upsample = nn.Sequential(*stages)
        self.reconstruction = _conv(dims, bottleneck, 1, kernel_size, relu=False)
        if global_skip == "baseline":
            nn.init.zeros_(self.reconstruction.conv.weight)
            nn.init.zeros_(self.reconstruction.conv.bias)
        self._layers_at_input_resolution = 1 + blocks * layers
        self._in_plane_factors = factors

    @property
    def residual_to_baseline(self) -> bool:
        """True when the engine must add the B-spline baseline to the output."""
        return self.global_skip == "baseline"

    @property
    def receptive_radius(self) -> int:
        """Input voxels each side that can influence an output (low conv, dense layers, deconvolutions, last conv).

        For the 2D form this is the in-plane radius (nothing crosses slices); the tiler applies it on every axis.
        """
        radius = self.kernel_size // 2
        smallest = min(self._in_plane_factors)
        return radius * self._layers_at_input_resolution + len(self.upsample) + math.ceil(radius / smallest)

    def forward_planes(self, x: torch.Tensor) -> torch.Tensor:
        """The bare network on ``(batch, 1, *spatial)`` (2D planes or 3D volumes, per ``spatial_dims``)."""
        low = self.low(x)
        features = [low]
        h = low
        for block in self.blocks:
            h = block(h)
            features.append(h)
        h = self.bottleneck(torch.cat(features, dim=1))
        return self.reconstruction(self.upsample(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, 1, i, j, k)`` -> ``(batch, 1, i*s_i, j*s_j, k*s_k)``."""
        if self.spatial_dims == 3:
            return self.forward_planes(x)
        axis = 2 + int(self.slice_axis)  # type: ignore[arg-type]
        moved = x.movedim(axis, 1)  # (batch, slices, 1, a, b)
        batch, slices = moved.shape[:2]
        planes = self.forward_planes(moved.reshape(batch * slices, 1, *moved.shape[3:]))
        return planes.reshape(batch, slices, 1, *planes.shape[2:]).movedim(1, axis)
