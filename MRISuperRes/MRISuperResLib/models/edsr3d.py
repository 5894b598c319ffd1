"""EDSR-style 3D residual network (seed 001; Lim et al. 2017, adapted to volumes).

Structure: head convolution -> ``blocks`` residual blocks (conv-ReLU-conv, output scaled by ``res_scale``) and a
body convolution with a long skip, all at the input's resolution -> learned sub-pixel upsampler for integer
per-axis factors (convolution to ``upsample_features * r_i*r_j*r_k`` channels, :class:`AnisotropicPixelShuffle3d`,
convolution to one channel at the output resolution) -> global skip.

Global skip (``global_skip``):

* ``"baseline"`` -- the network returns only a residual; the engine adds the cubic B-spline upsampling of the
  whole input (computed exactly once, the same volume as the baseline output), so the difference map *is* the
  network's contribution.
* ``"trilinear"`` -- the network adds a trilinear upsampling of its input itself.
* ``"none"`` -- the network output is the result.

Upsampler (``upsampler``):

* ``"subpixel"`` -- EDSR's: the body runs at the input's resolution and a learned sub-pixel layer upsamples.
* ``"bspline"`` -- the seed's variant that refines an already-interpolated volume: the input is first upsampled
  with cubic B-spline (the engine's baseline interpolation) and a scale-1 network (head, blocks, tail) runs on the
  fine grid. Costs ``s_i*s_j*s_k`` times more per voxel, but sees the interpolated volume the user would otherwise
  get. A scale of ``(1, 1, 1)`` (either upsampler) is the same scale-1 network for volumes the user interpolated.

The seed configuration is 9 blocks x 64 channels x 3^3 kernels: 2.99 M parameters at x2 with the sub-pixel
upsampler (2.0 M of them in the residual blocks), 2.55 M at (1, 1, 4), 2.11 M for the refining variant.

Layers: :class:`~.layers.ConvBlock` (MONAI ``Convolution``'s layout and tensor names, without importing MONAI).
MONAI's ``SubpixelUpsample`` shuffles by one factor on every axis; :class:`~.layers.AnisotropicPixelShuffle3d` allows per-axis factors such as ``(1, 1, 4)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..processing.bspline import bspline_upsample
from .layers import BSPLINE_HALO, AnisotropicPixelShuffle3d, ConvBlock, check_integer_factors, trilinear_upsample

GLOBAL_SKIPS = ("baseline", "trilinear", "none")
UPSAMPLERS = ("subpixel", "bspline")


def _conv(in_channels: int, out_channels: int, kernel_size: int) -> ConvBlock:
    return ConvBlock(3, in_channels, out_channels, kernel_size)


class ResidualBlock3d(nn.Module):
    """EDSR residual block: ``x + res_scale * conv(relu(conv(x)))`` (no normalisation layers)."""

    def __init__(self, channels: int, kernel_size: int = 3, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels, kernel_size), nn.ReLU(inplace=True), _conv(channels, channels, kernel_size)
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class EDSR3D(nn.Module):
    """EDSR-like 3D super-resolution network for integer per-axis scales.

    Args:
        scale: integer factors per axis in image index order ``(i, j, k)``, e.g. ``(2, 2, 2)`` or ``(1, 1, 4)``.
        channels: feature channels in the body (seed: 64).
        blocks: number of residual blocks (seed: 9).
        kernel_size: convolution kernel edge (seed: 3).
        res_scale: residual scaling inside blocks (EDSR uses 0.1 for deep/wide models; 1.0 for small ones).
        upsample_features: channels per output voxel after the pixel shuffle (``channels`` reproduces EDSR).
        global_skip: ``"baseline"``, ``"trilinear"`` or ``"none"`` (see the module docstring).
        in_channels: input channels (1 for a single MR contrast).
        upsampler: ``"subpixel"`` or ``"bspline"`` (refine an interpolated volume; see the module docstring).
    """

    family = "edsr3d"

    def __init__(
        self,
        scale: Sequence[int] = (2, 2, 2),
        channels: int = 64,
        blocks: int = 9,
        kernel_size: int = 3,
        res_scale: float = 1.0,
        upsample_features: int = 64,
        global_skip: str = "baseline",
        in_channels: int = 1,
        upsampler: str = "subpixel",
    ) -> None:
        super().__init__()
        self.scale = check_integer_factors(scale, "EDSR3D")
        if global_skip not in GLOBAL_SKIPS:
            raise ValueError(f"global_skip must be one of {GLOBAL_SKIPS}, got {global_skip!r}")
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"upsampler must be one of {UPSAMPLERS}, got {upsampler!r}")
        self.global_skip = global_skip
        self.upsampler = upsampler
        self.kernel_size = kernel_size
        self.head = _conv(in_channels, channels, kernel_size)
        self.body = nn.Sequential(
            *[ResidualBlock3d(channels, kernel_size, res_scale) for _ in range(blocks)],
            _conv(channels, channels, kernel_size),
        )
        if upsampler == "subpixel":
            factor = self.scale[0] * self.scale[1] * self.scale[2]
            self.upsample = nn.Sequential(
                _conv(channels, upsample_features * factor, kernel_size), AnisotropicPixelShuffle3d(self.scale)
            )
            self.tail = _conv(upsample_features, 1, kernel_size)
        else:
            self.upsample = nn.Identity()
            self.tail = _conv(channels, 1, kernel_size)
        if global_skip != "none":
            # Start as "no correction": an untrained network returns its skip path unchanged.
            nn.init.zeros_(self.tail.conv.weight)
            nn.init.zeros_(self.tail.conv.bias)

    @property
    def receptive_radius(self) -> int:
        """Input voxels on each side that can influence an output voxel (head, body, upsampler, tail)."""
        radius = self.kernel_size // 2
        if self.upsampler == "bspline":
            # head + 2 per block + body conv + tail, all on the fine grid, then the B-spline's own context.
            fine = radius * (2 * len(self.body) + 1)
            return -(-fine // min(self.scale)) + (BSPLINE_HALO if max(self.scale) > 1 else 0)
        convolutions_at_input_resolution = 2 * len(self.body) + 1  # head + 2 per block + body conv + upsampler
        return radius * convolutions_at_input_resolution + -(-radius // min(self.scale))

    @property
    def residual_to_baseline(self) -> bool:
        """True when the engine must add the B-spline baseline to the output."""
        return self.global_skip == "baseline"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsampler == "bspline":
            features = self.head(bspline_upsample(x, self.scale) if max(self.scale) > 1 else x)
            features = features + self.body(features)
            out = self.tail(features)
            if self.global_skip == "trilinear":
                out = out + trilinear_upsample(x[:, :1], self.scale)
            return out
        features = self.head(x)
        features = features + self.body(features)
        out = self.tail(self.upsample(features))
        if self.global_skip == "trilinear":
            out = out + trilinear_upsample(x[:, :1], self.scale)
        return out


GROWABLE = ("channels", "blocks")


def _fixed_settings(model: EDSR3D) -> dict[str, object]:
    """The settings growth must keep, read from the network (``res_scale`` only when it has residual blocks)."""
    settings: dict[str, object] = {"scale": model.scale, "kernel_size": model.kernel_size,
                                   "global_skip": model.global_skip, "upsampler": model.upsampler,
                                   "in_channels": model.head.conv.in_channels}
    blocks = [block for block in model.body if isinstance(block, ResidualBlock3d)]
    if blocks:
        settings["res_scale"] = blocks[0].res_scale
    return settings


def grow_state_dict(network: EDSR3D, state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Weights for ``network`` (wider and/or deeper) that compute exactly what ``state`` (an EDSR3D of ``config``) does.

    Function-preserving growth (Net2Net, Chen et al. 2016; zero-initialised residual branches as in Goyal et al.
    2017): the old tensors fill the leading channels; weights *from* new channels are zero, so the old channels
    never see them, while weights *into* new channels keep ``network``'s fresh initialisation, so they learn from the
    first step; new residual blocks go after the old ones with their second convolution zero, an identity at the
    start. Training then only has to add what the extra capacity can give.

    Args:
        network: the grown EDSR3D; every setting but ``channels`` and ``blocks`` must equal ``config``'s.
        state: the smaller model's state dict (``config``'s tensor names and shapes).
        config: the smaller model's constructor arguments.

    Returns:
        A full state dict for ``network``.

    Raises:
        ValueError: ``network`` is not an EDSR3D, differs in another setting, or is narrower or shallower.
    """
    if not isinstance(network, EDSR3D):
        raise ValueError(f"only an edsr3d model can be grown, this one is a {type(network).__name__}")
    old = EDSR3D(**config)
    kept, grown_kept = _fixed_settings(old), _fixed_settings(network)
    for name in kept.keys() & grown_kept.keys():
        if grown_kept[name] != kept[name]:
            raise ValueError(f"the grown model's {name} {grown_kept[name]!r} differs from {kept[name]!r}; "
                             f"only {' and '.join(GROWABLE)} may grow")
    old_blocks, new_blocks = len(old.body) - 1, len(network.body) - 1
    old_channels, new_channels = old.head.conv.out_channels, network.head.conv.out_channels
    if new_blocks < old_blocks or new_channels < old_channels:
        raise ValueError(f"the model can only grow: {old_channels} channels x {old_blocks} blocks "
                         f"cannot become {new_channels} x {new_blocks}")
    if old.upsampler == "bspline" and new_channels != old_channels:
        raise ValueError("with upsampler 'bspline' the output convolution reads the body's channels directly, so "
                         "channels cannot grow; grow blocks only")
    if network.tail.conv.in_channels != old.tail.conv.in_channels:
        raise ValueError("the grown model's upsample_features differs; only channels and blocks may grow")
    old.load_state_dict(state)
    grown = {name: tensor.detach().clone() for name, tensor in network.state_dict().items()}
    body_conv = f"body.{old_blocks}."
    for name, tensor in old.state_dict().items():
        target = f"body.{new_blocks}." + name[len(body_conv):] if name.startswith(body_conv) else name
        into = grown[target]
        if into.ndim > 1 and into.shape[1] > tensor.shape[1]:
            into[:, tensor.shape[1]:] = 0  # nothing flows from a new channel into the old function
        into[tuple(slice(0, size) for size in tensor.shape)] = tensor
    for block in range(old_blocks, new_blocks):
        grown[f"body.{block}.body.2.conv.weight"].zero_()
        grown[f"body.{block}.body.2.conv.bias"].zero_()
    return grown
