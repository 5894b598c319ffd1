"""What a model's low-resolution data are: the forward model per axis and the simulation's noise and bias.

A :class:`DegradationSpec` is stored in model metadata (``degradation``), read from training configs
(``data.degradation``) and built from the command line (``--kind``, :func:`parse_kind`). Its kinds are checked
against :data:`~.base.REGISTRY`; its dictionary form follows its dataclass fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields

import numpy as np

from .base import DEFAULT_KIND, REGISTRY, ForwardModel, degrade_axes, forward_model_class, known_kinds


@dataclass(frozen=True)
class DegradationSpec:
    """How low-resolution data relate to high-resolution data.

    Attributes:
        kind: a registered kind (``KINDS``), or three of them, one per axis ``(i, j, k)`` (e.g. k-space truncation
            in-plane and a box slice profile through-plane: ``("kspace", "kspace", "box")``).
        fwhm: for ``"gaussian"``, the profile's full width at half maximum in coarse voxels (1.0 = one voxel).
        gap: for ``"box"`` and ``"gaussian"``, the gap between slices as a fraction of the coarse spacing
            (the profile's width shrinks to ``1 - gap`` voxels); ``0`` for contiguous slices.
        noise: ``(low, high)`` standard deviation of complex Gaussian k-space noise, as a fraction of the coarse
            volume's 99th-percentile intensity; :func:`~.simulate.simulate` draws one level per sample uniformly.
        bias: amplitude of a smooth multiplicative bias field applied before acquisition (0.2 = up to +-20 %).

    Raises:
        ValueError: an unknown kind (the message lists the known ones) or a value out of range.
    """

    kind: str | tuple[str, str, str] = DEFAULT_KIND
    fwhm: float = 1.0
    gap: float = 0.0
    noise: tuple[float, float] = (0.0, 0.0)
    bias: float = 0.0

    def __post_init__(self) -> None:
        kinds = (self.kind,) * 3 if isinstance(self.kind, str) else tuple(self.kind)
        if len(kinds) != 3 or any(k not in REGISTRY for k in kinds):
            raise ValueError(f"degradation kind {self.kind!r} is not one of {', '.join(known_kinds())} "
                             "(or three of them)")
        if not isinstance(self.kind, str):
            object.__setattr__(self, "kind", kinds)
        noise = (float(self.noise), float(self.noise)) if np.isscalar(self.noise) else tuple(map(float, self.noise))
        if len(noise) != 2 or not 0.0 <= noise[0] <= noise[1]:
            raise ValueError(f"noise must be a level or a (low, high) range with 0 <= low <= high, got {self.noise!r}")
        object.__setattr__(self, "noise", noise)
        if not 0.0 <= self.gap < 1.0:
            raise ValueError(f"gap must be in [0, 1), got {self.gap}")
        if self.fwhm <= 0 or self.bias < 0:
            raise ValueError("fwhm must be positive and bias non-negative")

    @property
    def kinds(self) -> tuple[str, str, str]:
        """The kind along each axis ``(i, j, k)``."""
        return (self.kind,) * 3 if isinstance(self.kind, str) else self.kind  # type: ignore[return-value]

    @property
    def models(self) -> tuple[ForwardModel, ForwardModel, ForwardModel]:
        """The forward model along each axis ``(i, j, k)``, its parameters taken from the fields of this spec
        with the same names (``fwhm``, ``gap``)."""
        return tuple(_model(kind, self) for kind in self.kinds)  # type: ignore[return-value]

    @classmethod
    def from_dict(cls, data: Mapping[str, object] | None) -> "DegradationSpec":
        """Build from model metadata or a config: missing keys take the field defaults, ``float`` fields are
        converted, a list ``kind`` becomes a tuple.

        Raises:
            ValueError: an unknown key (the message lists the valid ones) or an invalid value.
        """
        data = dict(data or {})
        names = [f.name for f in fields(cls)]
        unknown = set(data) - set(names)
        if unknown:
            raise ValueError(f"unknown degradation setting(s) {', '.join(sorted(unknown))}; valid: {', '.join(names)}")
        values: dict[str, object] = {}
        for field in fields(cls):
            value = data.get(field.name, field.default if field.default is not MISSING else field.default_factory())
            if field.type == "float":
                value = float(value)  # type: ignore[arg-type]
            elif not isinstance(value, str) and not np.isscalar(value):
                value = tuple(value)  # type: ignore[arg-type]
            values[field.name] = value
        return cls(**values)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready values by field name (tuples as lists)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


def parse_kind(text: str) -> str | tuple[str, ...]:
    """``--kind`` text: one kind (``"box"``) or three comma-separated, one per axis ``i,j,k``
    (``"kspace,kspace,box"``); checked when it builds a :class:`DegradationSpec`."""
    kinds = text.split(",")
    return kinds[0] if len(kinds) == 1 else tuple(kinds)


def degrade(array: np.ndarray, shape: Sequence[int], spec: DegradationSpec,
            precision: type[np.floating] = np.float64) -> np.ndarray:
    """Apply the deterministic forward model of ``spec`` and sample on the cell-centred grid of ``shape``.

    Noise and bias are not applied (see :func:`~.simulate.simulate`).

    Args:
        array: fine volume ``[i, j, k]``.
        shape: coarse shape; each entry at most the fine one (equal means that axis is left alone).
        spec: which forward model.
        precision: the arithmetic's float type (see :func:`~.base.degrade_axes`).

    Returns:
        float32 array of ``shape``.

    Raises:
        ValueError: ``shape`` is larger than the input, or a kind of ``spec`` is not registered.
    """
    return degrade_axes(array, shape, spec.models, precision)


def _model(kind: str, spec: DegradationSpec) -> ForwardModel:
    model = forward_model_class(kind)
    return model(**{f.name: getattr(spec, f.name) for f in fields(model)})
