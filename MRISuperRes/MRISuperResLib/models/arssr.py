"""ArSSR: arbitrary-scale super-resolution with an implicit decoder (seed 004; Wu et al. 2021).

A convolutional encoder turns the low-resolution volume into a feature map (``feature_dim`` channels on the input
grid). The intensity at any point is then decoded by an MLP from the feature vector trilinearly interpolated at
that point plus 3 coordinates. One model therefore produces any scale, isotropic or not (``3.2``, ``1,1,4``,
``1.5,1.5,3``).

Encoders (the reference implementation's, in 3D):

* ``"rdn"`` -- residual dense network (Zhang et al. 2018): two shallow convolutions, ``rdn_blocks`` residual
  dense blocks of ``rdn_layers`` densely connected convolutions (growth ``rdn_growth``) with 1x1 local fusion and
  local residual, global 1x1 + 3x3 fusion with global residual, output convolution (defaults 64 / 64 / 8 / 3);
* ``"rescnn"`` -- residual CNN (Du et al. 2020): three groups of six conv-ReLU with residuals (64 channels);
* ``"srresnet"`` -- SRResNet body (Ledig et al. 2017): 18 residual blocks conv-ReLU-conv (64 channels).

Decoder (:class:`MLPDecoder`): two stages of ``decoder_depth / 2`` fully connected layers (``decoder_width``
wide, ReLU), the first stage's output added to its input before the second (the reference's skip). Paper
defaults: depth 8, width 256, feature dimension 128.

Query coordinates. Every fine voxel centre ``q`` maps to the continuous coarse index
``c = (q + 0.5) * n_in / n_out - 0.5`` per axis (cell-centred grids, :mod:`MRISuperResLib.imaging.geometry`); the
features are interpolated there (trilinear, edge values held beyond the outermost voxel centres, as
``align_corners=False`` interpolation does). The 3 coordinates given to the decoder are the offset of ``c`` from
its nearest coarse voxel centre, doubled to ``[-1, 1]``: the sub-voxel phase that, with the interpolated feature,
locates the query. The reference feeds coordinates normalised to the whole training patch instead; those make the
output depend on where a patch or tile starts, so tiles could not join and a whole-volume run would see
coordinates unlike any seen in training. The offset keeps the model translation-equivariant and tiles exact.

Output: with ``global_skip="baseline"`` (default) a residual the engine adds to the cubic B-spline upsampling
(no final ReLU, a residual can be negative); with ``"none"`` the intensity itself, through the reference's final
ReLU.

Running: :meth:`ArSSR.encode` once per volume or tile, then :meth:`ArSSR.query` on points in chunks
(``forward(x, output_shape)`` does both for a whole input; :func:`MRISuperResLib.engine.inference.run_tiled_implicit`
for large volumes). The reference re-runs the encoder for every output slice; here it runs once.

Layers: :class:`~.layers.ConvBlock` (MONAI ``Convolution``'s layout and tensor names, without importing MONAI)
for every convolution (with its ReLU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .layers import ConvBlock, fine_voxel_positions

ENCODERS = ("rdn", "rescnn", "srresnet")
GLOBAL_SKIPS = ("baseline", "none")

#: Query points decoded at once by :meth:`ArSSR.forward` (bounds the decoder's memory).
DEFAULT_CHUNK_POINTS = 1 << 17


def _conv(in_channels: int, out_channels: int, kernel_size: int = 3, relu: bool = False) -> ConvBlock:
    return ConvBlock(3, in_channels, out_channels, kernel_size, relu=relu)


class _DenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.conv = _conv(in_channels, growth, relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(x)], dim=1)


class ResidualDenseBlock(nn.Module):
    """``layers`` densely connected conv-ReLU, 1x1 local feature fusion back to ``growth`` maps, local residual."""

    def __init__(self, in_channels: int, growth: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[_DenseLayer(in_channels + growth * i, growth) for i in range(layers)])
        self.fusion = _conv(in_channels + growth * layers, growth, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fusion(self.layers(x))


class RDNEncoder(nn.Module):
    """Residual dense network encoder (reference defaults: 64 features, growth 64, 8 blocks of 3 layers)."""

    def __init__(self, feature_dim: int = 128, features: int = 64, growth: int = 64, blocks: int = 8,
                 layers: int = 3) -> None:
        super().__init__()
        if features != growth:
            # The local residual adds a block's input (``features`` maps for the first) to ``growth`` maps.
            raise ValueError(f"rdn_features ({features}) must equal rdn_growth ({growth})")
        self.shallow1 = _conv(1, features)
        self.shallow2 = _conv(features, features)
        self.blocks = nn.ModuleList(ResidualDenseBlock(features if b == 0 else growth, growth, layers)
                                    for b in range(blocks))
        self.fusion = nn.Sequential(_conv(growth * blocks, features, 1), _conv(features, features))
        self.output = _conv(features, feature_dim)
        self.convolutions_3x3 = 2 + blocks * layers + 1 + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.shallow1(x)
        h = self.shallow2(shallow)
        local = []
        for block in self.blocks:
            h = block(h)
            local.append(h)
        return self.output(self.fusion(torch.cat(local, dim=1)) + shallow)


class ResCNNEncoder(nn.Module):
    """Residual CNN encoder: conv-ReLU, three residual groups of ``group_layers`` conv-ReLU, output conv.

    As in the reference, the (one-channel) input is added to every output feature channel.
    """

    def __init__(self, feature_dim: int = 128, features: int = 64, groups: int = 3, group_layers: int = 6) -> None:
        super().__init__()
        self.start = _conv(1, features, relu=True)
        self.groups = nn.ModuleList(
            nn.Sequential(*[_conv(features, features, relu=True) for _ in range(group_layers)]) for _ in range(groups)
        )
        self.end = _conv(features, feature_dim)
        self.convolutions_3x3 = 1 + groups * group_layers + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.start(x)
        for group in self.groups:
            h = h + group(h)
        return x + self.end(h)


class _ResBlock(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(features, features, relu=True), _conv(features, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNetEncoder(nn.Module):
    """SRResNet body: conv, ``blocks`` residual blocks conv-ReLU-conv, conv, conv to ``feature_dim``."""

    def __init__(self, feature_dim: int = 128, features: int = 64, blocks: int = 18) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv(1, features), *[_ResBlock(features) for _ in range(blocks)], _conv(features, features),
            _conv(features, feature_dim),
        )
        self.convolutions_3x3 = 1 + 2 * blocks + 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class MLPDecoder(nn.Module):
    """The reference decoder: ``stage_two(z + stage_one(z))`` with ``z`` = feature vector and 3 coordinates.

    Each stage has ``depth // 2`` linear layers (``width`` wide) with ReLU after each, except that the final ReLU of
    the second stage is kept only when ``final_relu`` (the output is an intensity, not a residual).
    """

    def __init__(self, in_features: int, depth: int = 8, width: int = 256, final_relu: bool = True) -> None:
        super().__init__()
        per_stage = depth // 2
        if per_stage < 2 or depth % 2:
            raise ValueError(f"decoder_depth must be even and >= 4 (two stages of depth/2 layers), got {depth}")

        def stage(out_features: int, last_relu: bool) -> nn.Sequential:
            sizes = [in_features] + [width] * (per_stage - 1) + [out_features]
            layers: list[nn.Module] = []
            for index in range(per_stage):
                layers.append(nn.Linear(sizes[index], sizes[index + 1]))
                if index < per_stage - 1 or last_relu:
                    layers.append(nn.ReLU())
            return nn.Sequential(*layers)

        self.stage_one = stage(in_features, True)
        self.stage_two = stage(1, final_relu)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.stage_two(z + self.stage_one(z))


class ArSSR(nn.Module):
    """Arbitrary-scale implicit super-resolution (see the module docstring).

    Args:
        encoder: ``"rdn"``, ``"rescnn"`` or ``"srresnet"``.
        feature_dim: channels of the feature map (paper: 128).
        decoder_depth: linear layers of the decoder, two stages of half each (paper: 8).
        decoder_width: decoder width (paper: 256).
        features: encoder body channels (reference: 64).
        rdn_blocks, rdn_layers: RDN residual dense blocks and layers per block (reference: 8, 3; growth =
            ``features``).
        rescnn_layers: conv-ReLU layers per ResCNN group (reference: 6; three groups).
        srresnet_blocks: SRResNet residual blocks (reference: 18).
        global_skip: ``"baseline"`` (residual to the engine's B-spline upsampling) or ``"none"``.
    """

    family = "arssr"
    arbitrary_scale = True

    def __init__(
        self,
        encoder: str = "rdn",
        feature_dim: int = 128,
        decoder_depth: int = 8,
        decoder_width: int = 256,
        features: int = 64,
        rdn_blocks: int = 8,
        rdn_layers: int = 3,
        rescnn_layers: int = 6,
        srresnet_blocks: int = 18,
        global_skip: str = "baseline",
    ) -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if global_skip not in GLOBAL_SKIPS:
            raise ValueError(f"global_skip must be one of {GLOBAL_SKIPS}, got {global_skip!r}")
        self.global_skip = global_skip
        self.feature_dim = int(feature_dim)
        self.encoder: nn.Module
        if encoder == "rdn":
            self.encoder = RDNEncoder(feature_dim, features, features, rdn_blocks, rdn_layers)
        elif encoder == "rescnn":
            self.encoder = ResCNNEncoder(feature_dim, features, 3, rescnn_layers)
        else:
            self.encoder = SRResNetEncoder(feature_dim, features, srresnet_blocks)
        self.decoder = MLPDecoder(feature_dim + 3, decoder_depth, decoder_width, final_relu=global_skip == "none")
        if global_skip == "baseline":
            last = self.decoder.stage_two[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    @property
    def residual_to_baseline(self) -> bool:
        """True when the engine must add the B-spline baseline to the output."""
        return self.global_skip == "baseline"

    @property
    def receptive_radius(self) -> int:
        """Input voxels each side that influence a query: the encoder's 3x3 convolutions plus the trilinear
        neighbour."""
        return int(self.encoder.convolutions_3x3) + 1

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map ``(batch, feature_dim, i, j, k)`` of the input ``(batch, 1, i, j, k)``."""
        return self.encoder(x)

    def query(self, features: torch.Tensor, positions: torch.Tensor,
              offsets: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the intensity at continuous indices of ``features``' grid.

        Args:
            features: ``(batch, feature_dim, i, j, k)`` from :meth:`encode`.
            positions: ``(batch, points, 3)`` continuous ``(i, j, k)`` indices on the features' grid (voxel
                centres at integers); positions beyond the outermost centres take the edge values.
            offsets: ``(batch, points, 3)`` decoder coordinates; ``None`` computes them from ``positions``
                (tiled inference passes the ones computed on the whole volume's grid, so both agree bit for bit).

        Returns:
            ``(batch, points)`` decoded values.
        """
        sizes = torch.tensor(features.shape[2:], dtype=positions.dtype, device=positions.device)
        grid = ((2.0 * positions + 1.0) / sizes - 1.0).flip(-1)  # grid_sample wants (x, y, z) = (k, j, i)
        # Interpolation in float32 even under autocast: half-precision coordinates would be off by a fraction of a
        # voxel on a window of a hundred voxels.
        no_autocast = (torch.autocast(features.device.type, enabled=False)
                       if features.device.type in ("cuda", "cpu", "mps") else contextlib.nullcontext())
        with no_autocast:
            sampled = F.grid_sample(
                features.float(), grid[:, None, None].float(), mode="bilinear", padding_mode="border",
                align_corners=False,
            )[:, :, 0, 0, :].transpose(1, 2)  # (batch, points, feature_dim)
        if offsets is None:
            offsets = decoder_offsets(positions)
        z = torch.cat([sampled, offsets.to(sampled.dtype)], dim=-1)
        return self.decoder(z)[..., 0]

    def forward(self, x: torch.Tensor, output_shape: Sequence[int] | None = None,
                chunk_points: int = DEFAULT_CHUNK_POINTS, *, positions: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, 1, i, j, k)`` -> ``(batch, 1, *output_shape)`` on the cell-centred fine grid.

        With ``positions`` ``(batch, points, 3)`` (continuous indices on ``x``'s grid) instead of ``output_shape``,
        only those points are decoded: ``(batch, points)`` (arbitrary-scale training on drawn coordinates, seed
        004; through ``forward`` so that distributed training synchronises the gradients).
        """
        features = self.encode(x)
        if positions is not None:
            return self.query(features, positions)
        if output_shape is None:
            raise ValueError("give output_shape or positions")
        positions = fine_grid_positions(x.shape[2:], output_shape, device=x.device)  # (points, 3) float64
        batch = x.shape[0]
        outputs = []
        for start in range(0, positions.shape[0], chunk_points):
            chunk = positions[start:start + chunk_points]
            offsets = decoder_offsets(chunk)
            outputs.append(self.query(features, chunk.expand(batch, -1, -1), offsets.expand(batch, -1, -1)))
        return torch.cat(outputs, dim=1).reshape(batch, 1, *[int(n) for n in output_shape])


def decoder_offsets(positions: torch.Tensor) -> torch.Tensor:
    """The decoder's coordinates: twice the offset of each position from its nearest voxel centre, in [-1, 1]."""
    return (2.0 * (positions - torch.floor(positions + 0.5))).float()


def fine_grid_positions(shape_in: Sequence[int], shape_out: Sequence[int],
                        starts: Sequence[int] = (0, 0, 0), stops: Sequence[int] | None = None,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """Coarse continuous indices ``(points, 3)`` (float64, C order) of the fine voxels ``starts..stops``.

    The fine grid has ``shape_out`` voxels over the extent of ``shape_in`` coarse voxels.
    """
    stops = tuple(shape_out) if stops is None else tuple(stops)
    axes = [
        fine_voxel_positions(int(n_in), int(n_out), device=device)[int(a):int(b)]
        for n_in, n_out, a, b in zip(shape_in, shape_out, starts, stops)
    ]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
