"""The forward-model base class and its registry.

A forward model (a *kind*) says how a scanner measures one axis of a fine volume on a coarser cell-centred grid over
the same extent (see :mod:`...imaging.geometry`). It is deterministic: randomness (noise, bias field, drawn
acquisitions) lives in :mod:`.simulate` and :mod:`.acquisition`. Each kind is a small frozen dataclass in its own
file of this package whose fields are its parameters; defining the subclass with a ``name`` registers it in
:data:`REGISTRY` (``__init_subclass__``, the pattern of TorchIO's transform registry), and the package imports
every file in its folder, so adding a kind is adding one file.

Arrays are indexed ``[i, j, k]``; a model works on one axis at a time (:meth:`ForwardModel.degrade_axis`) and
:func:`degrade_axes` composes one model per axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

#: Every registered forward model by name, filled as the kind modules are imported.
REGISTRY: dict[str, type[ForwardModel]] = {}

#: The kind listed first and used when none is given: k-space truncation, what a scanner does in-plane.
DEFAULT_KIND = "kspace"


@dataclass(frozen=True)
class ForwardModel:
    """A deterministic forward model along one axis; subclasses are frozen dataclasses whose fields are their
    parameters (each a field of :class:`~.spec.DegradationSpec` of the same name, shared by every axis).

    Class attributes of a subclass:
        name: the kind's name (``DegradationSpec.kind``); a subclass without one is abstract and not registered.
        from_kspace: ``True`` for an axis reconstructed from k-space (where scanners apodise and acquire partial
            Fourier, see :mod:`.acquisition`); ``False`` for a slice profile of thick slices.
    """

    name: ClassVar[str] = ""
    from_kspace: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name", "")
        if not name:
            return
        if name in REGISTRY and REGISTRY[name].__qualname__ != cls.__qualname__:
            raise TypeError(f"forward model {name!r} is defined twice ({REGISTRY[name].__module__}, {cls.__module__})")
        REGISTRY[name] = cls

    @property
    def parameters(self) -> dict[str, Any]:
        """The model's parameters by name (its dataclass fields)."""
        return asdict(self)

    def degrade_axis(self, array: np.ndarray, size: int, axis: int) -> np.ndarray:
        """Measure ``array`` along ``axis`` on ``size`` cell-centred samples over the same extent.

        Args:
            array: float64 (or float32) array; ``array.shape[axis]`` is the fine size.
            size: coarse size along ``axis`` (smaller than the fine one).
            axis: the axis to degrade; the others are left alone.

        Returns:
            array of ``array``'s float type, ``array.shape`` with ``size`` along ``axis``.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class SliceProfile(ForwardModel):
    """A forward model that is a linear slice profile: each coarse voxel a weighted sum of the fine voxels
    along the axis (abstract: subclasses give :meth:`weights`)."""

    def weights(self, size_in: int, size_out: int) -> np.ndarray:
        """``(size_out, size_in)`` matrix whose row ``m`` weights the fine voxels for coarse voxel ``m``; rows sum
        to 1 (at the volume's faces the part of the profile outside is dropped)."""
        raise NotImplementedError

    def degrade_axis(self, array: np.ndarray, size: int, axis: int) -> np.ndarray:
        matrix = self.weights(array.shape[axis], size).astype(array.dtype, copy=False)
        return np.moveaxis(np.tensordot(matrix, array, axes=([1], [axis])), 0, axis)

    @staticmethod
    def coarse_centres(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coarse voxel centres ``(size_out, 1)`` and fine voxel lower and upper edges ``(1, size_in)``, all in
        fine-voxel units from the first fine edge (cell-centred grids over the same extent)."""
        ratio = size_in / size_out
        centres = (np.arange(size_out)[:, None] + 0.5) * ratio
        return centres, np.arange(size_in)[None, :], np.arange(size_in)[None, :] + 1.0


def known_kinds() -> tuple[str, ...]:
    """The registered kinds, :data:`DEFAULT_KIND` first, then by name."""
    return tuple(sorted(REGISTRY, key=lambda name: (name != DEFAULT_KIND, name)))


def forward_model_class(kind: str) -> type[ForwardModel]:
    """The registered class of ``kind``.

    Raises:
        ValueError: ``kind`` is not registered (the message lists the known kinds).
    """
    try:
        return REGISTRY[kind]
    except (KeyError, TypeError):
        raise ValueError(f"unknown forward model {kind!r}; known: {', '.join(known_kinds())}") from None


def degrade_axes(array: np.ndarray, shape: Sequence[int], models: Sequence[ForwardModel],
                 precision: type[np.floating] = np.float64) -> np.ndarray:
    """Apply ``models[axis]`` along each axis whose size changes, in axis order, in ``precision``.

    Args:
        array: fine volume ``[i, j, k]``.
        shape: coarse shape; each entry at most the fine one (equal means that axis is left alone).
        models: one forward model per axis.
        precision: the arithmetic's float type: float64 (default) or float32 (half the memory traffic; relative
            error about 1e-6 of the intensity range, for checks such as the consistency map).

    Returns:
        float32 array of ``shape``.

    Raises:
        ValueError: ``shape`` is larger than ``array`` along some axis.
    """
    shape = tuple(int(n) for n in shape)
    if any(c > f for c, f in zip(shape, array.shape)):
        raise ValueError(f"degraded shape {shape} is larger than the input shape {array.shape}")
    result = np.asarray(array, dtype=precision)
    for axis, (size, model) in enumerate(zip(shape, models)):
        if size != result.shape[axis]:
            result = model.degrade_axis(result, size, axis)
    return np.ascontiguousarray(result, dtype=np.float32)
