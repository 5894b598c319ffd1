"""Model registry: every network family builds from a config dict.

Public API:

* :data:`FAMILIES` -- the family names.
* :func:`create` -- ``create(family, **config) -> torch.nn.Module``.
* :func:`supported_scales` -- the per-axis scales a configured family can produce.

Every model built here follows one contract: input ``(batch, 1, i, j, k)`` in normalised intensities on the
low-resolution grid; output ``(batch, 1, i*s_i, j*s_j, k*s_k)`` on the cell-centred fine grid. When the model's
``residual_to_baseline`` attribute is true, the output is a residual the engine adds to the cubic B-spline
upsampling of the input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .edsr3d import EDSR3D


@dataclass(frozen=True)
class FamilySpec:
    """How to build one family and what it can do.

    Attributes:
        builder: constructor taking the config as keyword arguments.
        scales: the per-axis integer scales a config supports (``None``: any scale >= 1).
        min_input_size: the smallest input edge (voxels, every axis) a config can process meaningfully.
        description: one line for listings.
    """

    builder: Callable[..., nn.Module]
    scales: Callable[[dict[str, Any]], list[tuple[float, float, float]] | None]
    min_input_size: Callable[[dict[str, Any]], int]
    description: str


def _fixed_scale(config: dict[str, Any]) -> list[tuple[float, float, float]]:
    scale = config.get("scale", (2, 2, 2))
    return [tuple(float(s) for s in scale)]  # type: ignore[list-item]


_REGISTRY: dict[str, FamilySpec] = {
    "edsr3d": FamilySpec(
        builder=EDSR3D,
        scales=_fixed_scale,
        min_input_size=lambda config: 4,
        description="EDSR-style 3D residual network with sub-pixel upsampling (seed 001)",
    ),
}

#: Names of the registered model families.
FAMILIES: tuple[str, ...] = tuple(_REGISTRY)


def family_spec(family: str) -> FamilySpec:
    """The registry entry of ``family``; ``ValueError`` naming the known families otherwise."""
    try:
        return _REGISTRY[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; known families: {', '.join(FAMILIES)}") from None


def create(family: str, **config: Any) -> nn.Module:
    """Build an untrained model of ``family`` from its config (keyword arguments of the family's class)."""
    return family_spec(family).builder(**config)


def supported_scales(family: str, config: dict[str, Any]) -> list[tuple[float, float, float]] | None:
    """Per-axis scales ``(s_i, s_j, s_k)`` the configured model produces; ``None`` means any scale >= 1."""
    return family_spec(family).scales(config)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops_per_output_voxel(model: nn.Module, scale: tuple[float, float, float], probe: int = 16) -> float:
    """Floating-point operations per output voxel, counted by ``torch.utils.flop_counter`` on a probe input."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 1, probe, probe, probe)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        out = model(x)
    return counter.get_total_flops() / out[0, 0].numel()
