"""2.5D attention residual U-Net (seed 002, section 2.1 and appendix tables) and its WGAN-GP patch critic.

The thesis's generator works on 2D slices: its input is ``n`` neighbouring slices (3 or 5) as channels, its
output the centre slice. Built from:

* residual blocks ``(GroupNorm, SiLU, conv) x 2 + AdaDM`` with a 1x1 convolution on the skip path when the
  channel count changes (section 2.1.2, figure 20);
* AdaDM (Liu et al. 2021, section 2.1.1): the residual ``h`` is rescaled by ``exp(w * log(std(x)) + b)``, ``std``
  taken per sample over the block input ``x``, to give back the edge contrast normalisation takes away;
* a U-Net (section 2.1.3, figure 21): a first convolution to ``channels``; per stage ``res_blocks`` residual
  blocks (the first sets ``channels * channel_mult[stage]``), the features kept for the skip connection, then
  2x2 max-pooling; a bottleneck of two residual blocks with self-attention between them (section 2.1.5); on the
  way up nearest-neighbour x2 upsampling, concatenation with the stage's features, ``res_blocks`` residual
  blocks; finally (GroupNorm,) SiLU and a convolution to one channel;
* attention blocks as the thesis used them from Pinaya's / Ho's code, which is MONAI's
  :class:`monai.networks.nets.diffusion_model_unet.SpatialTransformer`: GroupNorm, 1x1 projection, self-attention,
  a second attention that is cross-attention to the context where configured (else self-attention), a GEGLU
  feed-forward, 1x1 projection, residual. Cross-attention (``cross_attention_stages``, 1-based as in the thesis's
  table 2; stage ``len(channel_mult) + 1`` is the bottleneck) follows every residual block of those stages and
  attends to a context vector (age, sex, diagnosis, slice position, ...). Without a context the model uses a
  learned "unknown context" vector, so one model runs with or without conditioning.
* ``drop_last_norm``: the thesis's own suggestion (section 5) to remove the last normalisation layer, which blurs
  edges.

Inside the engine's volume contract (:class:`UNet25D`): the coarse input is first upsampled to the fine grid with
cubic B-spline (:func:`~MRISuperResLib.processing.bspline.bspline_upsample`, integer per-axis factors, the same
interpolation as the engine's baseline); the 2D network then runs on every slice along ``slice_axis``, with the
``input_slices`` slices centred on it as channels (edge slices replicated), and the output slices are restacked.
The network predicts a residual the engine adds to the B-spline baseline. The default ``slice_axis`` is the first
axis with the *smallest* factor, so the planes the 2D convolutions see contain the axes being super-resolved:
for ``(1, 1, 4)`` (thick slices along k) slices are taken along i and the network restores detail along k within
(j, k) planes; for isotropic scales slices are taken along k, as in the thesis (axial slices). Planes are padded
(edge replication) to a multiple of ``2 ** len(channel_mult)`` and cropped back.

Tiling: GroupNorm, AdaDM and the bottleneck attention use statistics of the whole plane, so no finite halo makes
tiles match whole-volume inference exactly (they do when one tile spans whole planes, e.g. ``--tile`` at least
the volume size). ``halo`` (default 16 input voxels) is the context each tile gets; it covers the B-spline
prefilter and the convolutions near the tile faces.

Thesis configurations (table 2): "U-net" 64 channels, ``(1, 2, 2, 2, 2)``, 16 groups, 3 residual blocks,
cross-attention at stages 3-5, 3 input slices (the registry's seed configuration, with a 4-value context: age,
sex, diagnosis, slice position; 15.2 M parameters); "U-net UNC" 128, ``(1, 2, 2, 2)``, 32 groups (44.8 M); GAN
generator 256, ``(1, 2, 2, 2, 2)``, 64 groups, 4 residual blocks, no cross-attention (188 M). Critic (table 3): 256
channels, 4 layers, doubling per layer as the thesis describes (178 M parameters).

MONAI blocks used: ``Convolution`` (all convolutions), ``SpatialTransformer`` (self- and cross-attention blocks),
``PatchDiscriminator`` (the critic, with layer normalisation and LeakyReLU 0.2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import PatchDiscriminator
from monai.networks.nets.diffusion_model_unet import SpatialTransformer
from monai.utils import OptionalImportError
from torch import nn
from torch.nn import functional as F

from ..processing.bspline import bspline_upsample
from .layers import check_integer_factors


def _conv2d(in_channels: int, out_channels: int, kernel_size: int = 3) -> Convolution:
    return Convolution(2, in_channels, out_channels, kernel_size=kernel_size, conv_only=True)


class AdaDM(nn.Module):
    """Adaptive Deviation Modulator: ``h * exp(w * log(std(x)) + b)`` with ``std`` per sample over ``x``.

    ``w`` starts at 1 and ``b`` at 0: the normalised residual is rescaled to the input's deviation.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))
        self.eps = eps

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        std = x.flatten(1).float().std(dim=1, unbiased=False).view(-1, *([1] * (h.dim() - 1)))
        return h * torch.exp(self.weight * torch.log(std + self.eps) + self.bias).to(h.dtype)


class ResBlock2d(nn.Module):
    """``skip(x) + AdaDM(conv(SiLU(GN(conv(SiLU(GN(x)))))), x)`` (figure 20); ``skip`` is a 1x1 conv or identity."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, adadm: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=1e-6)
        self.conv1 = _conv2d(in_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=1e-6)
        self.conv2 = _conv2d(out_channels, out_channels)
        self.act = nn.SiLU()
        self.adadm = AdaDM() if adadm else None
        self.skip = nn.Identity() if in_channels == out_channels else _conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.act(self.norm2(h)))
        if self.adadm is not None:
            h = self.adadm(h, x)
        return self.skip(x) + h


def _attention(channels: int, heads: int, groups: int, context_dim: int | None) -> SpatialTransformer:
    if channels % heads:
        raise ValueError(f"attention_heads ({heads}) must divide the channels of every attention stage ({channels})")
    try:
        return SpatialTransformer(
            spatial_dims=2, in_channels=channels, num_attention_heads=heads, num_head_channels=channels // heads,
            norm_num_groups=groups, cross_attention_dim=context_dim, use_flash_attention=True,
        )
    except OptionalImportError:
        raise ImportError(
            "the 2.5D U-Net's attention blocks (MONAI's SpatialTransformer) need the einops package: pip install einops"
        ) from None


class _Stage(nn.Module):
    """Residual blocks, each followed by a cross-attention block when the stage has one."""

    def __init__(self, channels_in: int, channels: int, blocks: int, groups: int, adadm: bool,
                 cross_attention: bool, heads: int, context_dim: int | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock2d(channels_in if b == 0 else channels, channels, groups, adadm) for b in range(blocks)
        )
        self.attention = nn.ModuleList(
            _attention(channels, heads, groups, context_dim) for _ in range(blocks)
        ) if cross_attention else None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        for index, block in enumerate(self.blocks):
            x = block(x)
            if self.attention is not None:
                x = self.attention[index](x, context=context)
        return x


class AttentionResUNet2d(nn.Module):
    """The thesis's 2D attention residual U-Net: ``(N, input_slices, H, W)`` -> ``(N, 1, H, W)``.

    Args:
        input_slices: neighbouring slices given as channels (3 or 5 in the thesis).
        channels: channels after the first convolution (``n_channels``).
        channel_mult: per-stage channel multipliers; its length is the number of stages (= downsamplings).
        res_blocks: residual blocks per stage (``n_res``).
        groups: GroupNorm groups (``n_groups``; 1 is layer normalisation); must divide ``channels``.
        attention_heads: heads in every attention block (the thesis used 1).
        self_attention: self-attention block between the bottleneck's two residual blocks.
        cross_attention_stages: 1-based stages with cross-attention after each residual block; stage
            ``len(channel_mult) + 1`` is the bottleneck (its attention block then attends to the context).
        context_dim: length of the context vector (0: no conditioning).
        drop_last_norm: leave out the GroupNorm before the last convolution.
        adadm: use AdaDM in the residual blocks.
        zero_output: start the last convolution at zero (an untrained residual model then adds nothing).
    """

    def __init__(
        self,
        input_slices: int = 3,
        channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2, 2, 2),
        res_blocks: int = 3,
        groups: int = 16,
        attention_heads: int = 1,
        self_attention: bool = True,
        cross_attention_stages: Sequence[int] = (),
        context_dim: int = 0,
        drop_last_norm: bool = False,
        adadm: bool = True,
        zero_output: bool = True,
    ) -> None:
        super().__init__()
        mult = [int(m) for m in channel_mult]
        stages = len(mult)
        cross = sorted({int(s) for s in cross_attention_stages})
        if input_slices < 1 or input_slices % 2 == 0:
            raise ValueError(f"input_slices must be odd (the output is the centre slice), got {input_slices}")
        if not mult or min(mult) < 1 or res_blocks < 1 or channels < 1:
            raise ValueError("channel_mult needs at least one stage; multipliers, res_blocks, channels must be >= 1")
        if groups < 1 or channels % groups:
            raise ValueError(f"groups ({groups}) must divide channels ({channels})")
        if cross and (cross[0] < 1 or cross[-1] > stages + 1):
            raise ValueError(f"cross_attention_stages must be within 1..{stages + 1} (the last is the bottleneck)")
        if cross and context_dim < 1:
            raise ValueError("cross-attention needs a context: set context_dim to the context vector's length")
        self.stages, self.input_slices, self.context_dim = stages, input_slices, int(context_dim)
        context = self.context_dim or None
        self.conv_in = _conv2d(input_slices, channels)
        widths = [channels * m for m in mult]
        self.down = nn.ModuleList()
        previous = channels
        for stage, width in enumerate(widths):
            self.down.append(_Stage(previous, width, res_blocks, groups, adadm, stage + 1 in cross,
                                    attention_heads, context))
            previous = width
        bottom = widths[-1]
        self.middle1 = ResBlock2d(bottom, bottom, groups, adadm)
        bottleneck_cross = stages + 1 in cross
        self.middle_cross = bottleneck_cross
        self.middle_attention = (
            _attention(bottom, attention_heads, groups, context if bottleneck_cross else None)
            if self_attention or bottleneck_cross else None
        )
        self.middle2 = ResBlock2d(bottom, bottom, groups, adadm)
        self.up = nn.ModuleList()
        deeper = bottom
        for stage in reversed(range(stages)):
            width = widths[stage]
            self.up.append(_Stage(deeper + width, width, res_blocks, groups, adadm, stage + 1 in cross,
                                  attention_heads, context))
            deeper = width
        self.out_norm = nn.Identity() if drop_last_norm else nn.GroupNorm(groups, channels, eps=1e-6)
        self.out_act = nn.SiLU()
        self.conv_out = _conv2d(channels, 1)
        if zero_output:
            nn.init.zeros_(self.conv_out.conv.weight)
            nn.init.zeros_(self.conv_out.conv.bias)
        # The learned context used when none is given ("unknown patient"), so conditioning stays optional.
        self.null_context = nn.Parameter(torch.zeros(1, 1, self.context_dim)) if self.context_dim else None

    @property
    def size_multiple(self) -> int:
        """Plane edges must be multiples of this (one 2x2 max-pooling per stage)."""
        return 2**self.stages

    def _context_tokens(self, context: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if self.null_context is None:
            return None
        if context is None:
            return self.null_context.expand(batch, 1, self.context_dim)
        context = context.to(self.null_context.dtype)
        if context.dim() == 2:
            context = context[:, None, :]
        if context.shape[0] != batch or context.shape[-1] != self.context_dim:
            raise ValueError(f"context must be (batch={batch}, {self.context_dim}) or (batch, tokens, "
                             f"{self.context_dim}), got {tuple(context.shape)}")
        return context

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(N, input_slices, H, W)`` with ``H, W`` multiples of :attr:`size_multiple`; ``context``
        ``(N, context_dim)`` or ``(N, tokens, context_dim)`` or ``None``."""
        tokens = self._context_tokens(context, x.shape[0])
        h = self.conv_in(x)
        skips = []
        for stage in self.down:
            h = stage(h, tokens)
            skips.append(h)
            h = F.max_pool2d(h, 2)
        h = self.middle1(h)
        if self.middle_attention is not None:
            h = self.middle_attention(h, context=tokens if self.middle_cross else None)
        h = self.middle2(h)
        for stage in self.up:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = stage(torch.cat([h, skips.pop()], dim=1), tokens)
        return self.conv_out(self.out_act(self.out_norm(h)))


class UNet25D(nn.Module):
    """The 2.5D attention residual U-Net inside the volume contract (see the module docstring).

    Args:
        scale: integer factors per axis ``(i, j, k)``; the input is B-spline upsampled by them first.
        slice_axis: axis the slices are taken along; ``None``: the first axis with the smallest factor.
        input_slices, channels, channel_mult, res_blocks, groups, attention_heads, self_attention,
            cross_attention_stages, context_dim, drop_last_norm, adadm: see :class:`AttentionResUNet2d`.
        halo: context voxels (input grid) each tile gets in tiled inference (see the module docstring).
        slice_position_index: the entry of the context vector that holds the slice position (seed 002's
            conditioning); :meth:`forward` writes every slice's own position there. ``None``: no such entry.
    """

    family = "unet25d"
    residual_to_baseline = True
    #: Slices processed at once (bounds memory; the result does not depend on it).
    plane_batch = 32

    def __init__(
        self,
        scale: Sequence[int] = (2, 2, 2),
        slice_axis: int | None = None,
        input_slices: int = 3,
        channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2, 2, 2),
        res_blocks: int = 3,
        groups: int = 16,
        attention_heads: int = 1,
        self_attention: bool = True,
        cross_attention_stages: Sequence[int] = (),
        context_dim: int = 0,
        drop_last_norm: bool = False,
        adadm: bool = True,
        halo: int = 16,
        slice_position_index: int | None = None,
    ) -> None:
        super().__init__()
        self.scale = check_integer_factors(scale, "UNet25D")
        if slice_position_index is not None and not 0 <= int(slice_position_index) < max(int(context_dim), 1):
            raise ValueError(f"slice_position_index {slice_position_index} is outside the context (context_dim "
                             f"{context_dim})")
        self.slice_position_index = None if slice_position_index is None else int(slice_position_index)
        if slice_axis is None:
            slice_axis = self.scale.index(min(self.scale)) if len(set(self.scale)) > 1 else 2
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
        self.slice_axis = int(slice_axis)
        self.halo = int(halo)
        self.network = AttentionResUNet2d(
            input_slices, channels, channel_mult, res_blocks, groups, attention_heads, self_attention,
            cross_attention_stages, context_dim, drop_last_norm, adadm,
        )

    @property
    def receptive_radius(self) -> int:
        """The halo tiled inference uses (the network is not strictly local: see the module docstring)."""
        return self.halo

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                slice_positions: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, 1, i, j, k)`` -> residual ``(batch, 1, i*s_i, j*s_j, k*s_k)``.

        ``context`` ``(batch, dim)``: the conditioning vector (``None``: the learned "unknown" context).
        ``slice_positions`` ``(batch, slices)`` or ``(slices,)``: the position in ``[0, 1]`` of every output slice
        along ``slice_axis`` within its whole volume, written into entry ``slice_position_index`` of each slice's
        context; ``None``: the input is taken as the whole volume, ``(index + 0.5) / slices``.
        """
        fine = bspline_upsample(x, self.scale)
        axis = 2 + self.slice_axis
        volume = fine[:, 0].movedim(axis - 1, 1)  # (batch, slices, a, b)
        batch, slices, size_a, size_b = volume.shape
        half = self.network.input_slices // 2
        index = torch.arange(slices, device=x.device)[:, None] + torch.arange(-half, half + 1, device=x.device)
        index = index.clamp(0, slices - 1)  # edge slices replicated
        multiple = self.network.size_multiple
        pad_a, pad_b = -size_a % multiple, -size_b % multiple
        if context is not None and context.dim() == 2:
            context = context[:, None, :]
        if context is not None and self.slice_position_index is not None:
            if slice_positions is None:
                slice_positions = (torch.arange(slices, device=x.device, dtype=torch.float32) + 0.5) / slices
            slice_positions = slice_positions.to(x.device, torch.float32).expand(batch, slices)
            # One context per slice: (batch, slices, tokens, dim) with the slice's own position.
            context = context[:, None].repeat(1, slices, 1, 1)
            context[..., self.slice_position_index] = slice_positions[:, :, None]
        outputs = []
        for start in range(0, slices, self.plane_batch):
            rows = index[start:start + self.plane_batch]
            planes = volume[:, rows].reshape(-1, rows.shape[1], size_a, size_b)  # (batch*n, slices_in, a, b)
            if pad_a or pad_b:
                planes = F.pad(planes, (0, pad_b, 0, pad_a), mode="replicate")
            if context is None:
                plane_context = None
            elif context.dim() == 4:  # per-slice contexts
                plane_context = context[:, start:start + rows.shape[0]].reshape(-1, *context.shape[2:])
            else:
                plane_context = context.repeat_interleave(rows.shape[0], dim=0)
            out = self.network(planes, plane_context)[:, :, :size_a, :size_b]
            outputs.append(out.reshape(batch, rows.shape[0], size_a, size_b))
        stacked = torch.cat(outputs, dim=1)  # (batch, slices, a, b)
        return stacked.movedim(1, axis - 1)[:, None]


class PatchDiscriminator2d(nn.Module):
    """The thesis's patch critic for WGAN-GP training (figure 30, table 3), on 2D slices.

    MONAI's :class:`~monai.networks.nets.PatchDiscriminator`: a 4x4 stride-2 convolution with LeakyReLU(0.2), then
    ``layers`` (convolution, layer normalisation, LeakyReLU(0.2)) with stride 2 but the last, doubling the channels
    each time, and a final convolution to one score per patch. Layer normalisation is GroupNorm with one group
    (normalises each sample over channels and space; no batch statistics, as the gradient penalty of WGAN-GP
    requires). The critic value is the mean of the patch scores.

    Input ``(N, in_channels, H, W)`` gives scores ``(N, 1, ~H / 2**layers, ~W / 2**layers)``. A volume batch
    ``(N, in_channels, i, j, k)`` is scored slice by slice along ``slice_axis`` (as the thesis's critic saw
    slices): scores ``(N, 1, slices, h, w)``.

    Args:
        in_channels: 1 for the slice alone; more to also show the critic the input slices (conditional critic).
        channels: channels of the first convolution (table 3: 256; the last layer then has 256 * 2**layers).
        layers: normalised convolution layers (table 3: 4).
        slice_axis: for volume input, the axis slices are taken along (0, 1 or 2; default 2, k).
    """

    def __init__(self, in_channels: int = 1, channels: int = 256, layers: int = 4, slice_axis: int = 2) -> None:
        super().__init__()
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
        self.slice_axis = int(slice_axis)
        self.net = PatchDiscriminator(
            spatial_dims=2, channels=channels, in_channels=in_channels, out_channels=1, num_layers_d=layers,
            kernel_size=4, activation=("LEAKYRELU", {"negative_slope": 0.2}), norm=("GROUP", {"num_groups": 1}),
            bias=True, padding=1, last_conv_kernel_size=4,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return self.net(x)[-1]
        moved = x.movedim(2 + self.slice_axis, 1)  # (N, slices, C, a, b)
        batch, slices = moved.shape[:2]
        scores = self.net(moved.reshape(batch * slices, *moved.shape[2:]))[-1]
        return scores.reshape(batch, slices, *scores.shape[1:]).movedim(1, 2)
