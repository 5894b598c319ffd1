"""Model registry: every network family builds from a config dict.

Public API:

* :data:`FAMILIES` -- the family names: ``"edsr3d"``, ``"srdensenet"``, ``"unet25d"``, ``"arssr"``.
* :func:`create` -- ``create(family, **config) -> torch.nn.Module`` (the config is the family class's keyword
  arguments; it is what a checkpoint stores).
* :func:`supported_scales` -- the per-axis scales a configured family produces (``None``: any scale >= 1).
* :func:`seed_config` / :func:`small_config` -- the configuration of the user's documents (GPU-sized) and a small
  one fast enough for the CPU, for a family and scale.
* :func:`parameter_count`, :func:`flops_per_output_voxel`, :func:`config_flops_per_output_voxel` -- size and cost.
* :func:`create_discriminator` -- the 2.5D U-Net's WGAN-GP patch critic, also ``create("patch_discriminator",
  **config)`` (:data:`CRITICS`). Not an SR family (not in :data:`FAMILIES`, no model file): it is trained alongside
  a generator and never used by ``enhance``.

The model contract (what the engine relies on):

* Input ``(batch, 1, i, j, k)``: normalised intensities on the coarse grid (clipped percentiles, see
  :mod:`MRISuperResLib.processing.normalization`).
* Output ``(batch, 1, round(i*s_i), round(j*s_j), round(k*s_k))`` on the cell-centred fine grid: output voxel
  centre ``q`` sits at coarse continuous index ``(q + 0.5) / s - 0.5`` per axis (:mod:`MRISuperResLib.imaging.geometry`).
* ``residual_to_baseline``: when true the output is a residual the engine adds to the cubic B-spline upsampling
  of the whole input (the baseline output; the network's "global skip"). Every family does this by default
  (B-spline beats trilinear by ~1.7 dB at x2, and the difference map is then exactly the network's contribution).
* ``receptive_radius``: input voxels each side that can influence an output; the tiler uses it as the halo so
  tiles join exactly (the 2.5D U-Net is not strictly local; see :mod:`.unet25d`).
* Fixed-scale families take ``forward(x)`` and their registry ``scales`` list the configured scale.
  Arbitrary-scale families (ArSSR) set the class attribute ``arbitrary_scale = True`` and take
  ``forward(x, output_shape)`` (the fine grid shape of that input); their ``scales`` are ``None``, written as
  ``"any"`` in checkpoints, and the engine runs them with :func:`MRISuperResLib.engine.inference.run_tiled_implicit`,
  which needs two more methods: ``encode(x)`` (feature map on the input grid, run once per block) and
  ``query(features, positions, offsets)`` (values at continuous coarse indices, run in bounded chunks).
* Extra inputs are optional keyword arguments: the 2.5D U-Net's ``forward(x, context=None)`` takes the
  conditioning vector (age, sex, ...); the engine never passes it.

The 2.5D U-Net's attention blocks (MONAI's ``SpatialTransformer``) need the ``einops`` package.

Families (see each module for the architecture and the seed it follows):

========== ================================================= ======================== ==========================
family     what                                              scales                   MONAI blocks
========== ================================================= ======================== ==========================
edsr3d     EDSR-like 3D ResNet, sub-pixel or B-spline        integer per axis         Convolution
           upsampling (seed 001)
srdensenet SRDenseNet_All, 2D slice-wise or 3D (seed 003)    integer per axis (2D:    Convolution (incl.
                                                             one axis factor 1)       transposed)
unet25d    2.5D attention residual U-Net, GroupNorm, SiLU,   integer per axis         Convolution,
           AdaDM, self-/cross-attention (seed 002)                                    SpatialTransformer,
                                                                                      PatchDiscriminator
arssr      implicit decoder on RDN / ResCNN / SRResNet       any >= 1, anisotropic    Convolution
           features (seed 004)
========== ================================================= ======================== ==========================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from importlib import import_module

#: Each family's class, as ``module:Class``. Imported on first use, so that running an EDSR-3D model never
#: loads the 2.5D U-Net's MONAI networks (importing MONAI costs seconds per process).
_CLASSES = {
    "ArSSR": ".arssr",
    "EDSR3D": ".edsr3d",
    "SRDenseNet": ".srdensenet",
    "UNet25D": ".unet25d",
    "PatchDiscriminator2d": ".unet25d",
}


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        return getattr(import_module(_CLASSES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _LazyClass:
    """Builds a family's class, imported on first use (see :data:`_CLASSES`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def resolve(self) -> type[nn.Module]:
        return __getattr__(self.name)

    def __call__(self, **config: Any) -> nn.Module:
        return self.resolve()(**config)


Scale3 = tuple[float, float, float]


@dataclass(frozen=True)
class FamilySpec:
    """How to build one family and what it can do.

    Attributes:
        builder: constructor taking the config as keyword arguments.
        scales: the per-axis integer scales a config supports (``None``: any scale >= 1).
        min_input_size: the smallest input edge (voxels, every axis) a config can process meaningfully.
        description: one line for listings.
        seed: the configuration of the user's documents for a scale (``None`` for arbitrary-scale families).
        small: a small configuration fast enough for the CPU, for a scale.
        config_keys: the keyword arguments the builder takes (the keys a config may hold).
    """

    builder: Callable[..., nn.Module]
    scales: Callable[[dict[str, Any]], list[Scale3] | None]
    min_input_size: Callable[[dict[str, Any]], int]
    description: str
    seed: Callable[[Sequence[int] | None], dict[str, Any]] = field(default=lambda scale: {})
    small: Callable[[Sequence[int] | None], dict[str, Any]] = field(default=lambda scale: {})
    config_keys: frozenset[str] = frozenset()


def _fixed_scale(config: dict[str, Any]) -> list[Scale3]:
    scale = config.get("scale", (2, 2, 2))
    return [tuple(float(s) for s in scale)]  # type: ignore[list-item]


def _scale_list(scale: Sequence[int] | None, default: Sequence[int] = (2, 2, 2)) -> list[int]:
    return [int(s) for s in (default if scale is None else scale)]


def _srdensenet_dims(scale: Sequence[int] | None) -> int:
    """The paper's 2D form when one axis keeps its resolution, else the 3D form."""
    return 2 if 1 in _scale_list(scale, (2, 2, 1)) else 3


_REGISTRY: dict[str, FamilySpec] = {
    "edsr3d": FamilySpec(
        builder=_LazyClass("EDSR3D"),
        scales=_fixed_scale,
        min_input_size=lambda config: 4,
        description="EDSR-style 3D residual network with sub-pixel (or B-spline) upsampling (seed 001)",
        seed=lambda scale: {"scale": _scale_list(scale), "channels": 64, "blocks": 9, "kernel_size": 3,
                            "res_scale": 1.0, "upsample_features": 64},
        small=lambda scale: {"scale": _scale_list(scale), "channels": 16, "blocks": 2, "kernel_size": 3,
                             "upsample_features": 8},
        config_keys=frozenset({"scale", "channels", "blocks", "kernel_size", "res_scale", "upsample_features",
                               "global_skip", "in_channels", "upsampler"}),
    ),
    "srdensenet": FamilySpec(
        builder=_LazyClass("SRDenseNet"),
        scales=lambda config: _fixed_scale({"scale": config.get("scale", (2, 2, 1))}),
        min_input_size=lambda config: 2,
        description="SRDenseNet_All, dense blocks + deconvolution, 2D slice-wise or 3D (seed 003)",
        seed=lambda scale: {"scale": _scale_list(scale, (2, 2, 1)), "spatial_dims": _srdensenet_dims(scale),
                            "blocks": 8, "layers": 8, "growth": 16, "bottleneck": 256},
        small=lambda scale: {"scale": _scale_list(scale, (2, 2, 1)), "spatial_dims": _srdensenet_dims(scale),
                             "blocks": 2, "layers": 3, "growth": 8, "bottleneck": 32},
        config_keys=frozenset({"scale", "spatial_dims", "slice_axis", "blocks", "layers", "growth",
                               "low_channels", "bottleneck", "kernel_size", "global_skip"}),
    ),
    "unet25d": FamilySpec(
        builder=_LazyClass("UNet25D"),
        scales=_fixed_scale,
        min_input_size=lambda config: 2,
        description="2.5D attention residual U-Net (GroupNorm, SiLU, AdaDM, self/cross-attention) (seed 002)",
        seed=lambda scale: {"scale": _scale_list(scale), "input_slices": 3, "channels": 64,
                            "channel_mult": [1, 2, 2, 2, 2], "res_blocks": 3, "groups": 16, "attention_heads": 1,
                            "cross_attention_stages": [3, 4, 5], "context_dim": 4},
        small=lambda scale: {"scale": _scale_list(scale), "input_slices": 3, "channels": 16,
                             "channel_mult": [1, 2], "res_blocks": 1, "groups": 4, "attention_heads": 1},
        config_keys=frozenset({"scale", "slice_axis", "input_slices", "channels", "channel_mult", "res_blocks",
                               "groups", "attention_heads", "self_attention", "cross_attention_stages",
                               "context_dim", "drop_last_norm", "adadm", "halo", "slice_position_index"}),
    ),
    "arssr": FamilySpec(
        builder=_LazyClass("ArSSR"),
        scales=lambda config: None,
        min_input_size=lambda config: 2,
        description="ArSSR implicit decoder on RDN/ResCNN/SRResNet features, any scale (seed 004)",
        seed=lambda scale: {"encoder": "rdn", "feature_dim": 128, "decoder_depth": 8, "decoder_width": 256},
        small=lambda scale: {"encoder": "rdn", "feature_dim": 16, "decoder_depth": 4, "decoder_width": 32,
                             "features": 16, "rdn_blocks": 2, "rdn_layers": 2},
        config_keys=frozenset({"encoder", "feature_dim", "decoder_depth", "decoder_width", "features",
                               "rdn_blocks", "rdn_layers", "rescnn_layers", "srresnet_blocks", "global_skip"}),
    ),
}

#: Names of the registered model families.
FAMILIES: tuple[str, ...] = tuple(_REGISTRY)

#: Critics for adversarial training, built by :func:`create` too (keyword arguments of their class).
_CRITICS: dict[str, Callable[..., nn.Module]] = {"patch_discriminator": _LazyClass("PatchDiscriminator2d")}
CRITICS: tuple[str, ...] = tuple(_CRITICS)


def family_spec(family: str) -> FamilySpec:
    """The registry entry of ``family``; ``ValueError`` naming the known families otherwise."""
    try:
        return _REGISTRY[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; known families: {', '.join(FAMILIES)}") from None


def family_class(family: str) -> type[nn.Module]:
    """The class that builds ``family`` (imported now); ``ValueError`` naming the known families otherwise."""
    builder = family_spec(family).builder
    return builder.resolve() if isinstance(builder, _LazyClass) else builder  # type: ignore[return-value]


def create(family: str, **config: Any) -> nn.Module:
    """Build an untrained model of ``family`` (or critic of :data:`CRITICS`) from its config (keyword arguments
    of its class)."""
    if family in _CRITICS:
        return _CRITICS[family](**config)
    return family_spec(family).builder(**config)


def supported_scales(family: str, config: dict[str, Any]) -> list[Scale3] | None:
    """Per-axis scales ``(s_i, s_j, s_k)`` the configured model produces; ``None`` means any scale >= 1."""
    return family_spec(family).scales(config)


def seed_config(family: str, scale: Sequence[int] | None = None) -> dict[str, Any]:
    """The configuration of the user's documents for ``family`` at integer ``scale`` (JSON-ready)."""
    return family_spec(family).seed(scale)


def small_config(family: str, scale: Sequence[int] | None = None) -> dict[str, Any]:
    """A small configuration of ``family`` fast enough for the CPU, at integer ``scale`` (JSON-ready)."""
    return family_spec(family).small(scale)


def is_arbitrary_scale(model: nn.Module) -> bool:
    """True for models taking ``forward(x, output_shape)``."""
    return bool(getattr(model, "arbitrary_scale", False))


def create_discriminator(in_channels: int = 1, channels: int = 256, layers: int = 4,
                         slice_axis: int = 2) -> nn.Module:
    """The WGAN-GP patch critic of the 2.5D U-Net (seed 002, table 3: 256 channels, 4 layers).

    Same as ``create("patch_discriminator", ...)``; see :class:`.unet25d.PatchDiscriminator2d`.
    """
    return _CRITICS["patch_discriminator"](in_channels=in_channels, channels=channels, layers=layers,
                                           slice_axis=slice_axis)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops_per_output_voxel(model: nn.Module, scale: Sequence[float] | None = None, probe: int = 16) -> float:
    """Floating-point operations per output voxel, counted by ``torch.utils.flop_counter`` on a ``probe``^3 input.

    The probe lives on the model's device; a model built on ``device="meta"`` is counted without computing or
    allocating anything. ``scale`` sets the output grid of arbitrary-scale models (default 2); fixed-scale models
    use their own. Convolutions, linear layers and attention are counted (one multiply-add = 2 FLOPs).
    """
    from torch.utils.flop_counter import FlopCounterMode

    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    x = torch.zeros(1, 1, probe, probe, probe, device=device)
    counter = FlopCounterMode(display=False)
    # The counter's module tracker hooks tensors that require grad; a parameter used directly as a module input
    # (the U-Net's learned null context) would trip it, so parameters are frozen while counting.
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in trainable:
            p.requires_grad_(False)
        with torch.inference_mode(), counter:
            if is_arbitrary_scale(model):
                factors = (2.0, 2.0, 2.0) if scale is None else tuple(float(s) for s in scale)
                out = model(x, [max(1, round(probe * s)) for s in factors])
            else:
                out = model(x)
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return counter.get_total_flops() / out[0, 0].numel()


def config_flops_per_output_voxel(family: str, config: dict[str, Any], scale: Sequence[float] | None = None,
                                  probe: int = 16) -> float:
    """:func:`flops_per_output_voxel` of a configured family, built on the meta device (fast, no memory)."""
    with torch.device("meta"):
        model = create(family, **config)
    return flops_per_output_voxel(model.eval(), scale, probe)


__all__ = [
    "FAMILIES", "CRITICS", "FamilySpec", "family_class", "create", "create_discriminator", "family_spec", "supported_scales",
    "seed_config", "small_config", "is_arbitrary_scale", "parameter_count", "flops_per_output_voxel",
    "config_flops_per_output_voxel", "ArSSR", "EDSR3D", "SRDenseNet", "UNet25D", "PatchDiscriminator2d",
]
