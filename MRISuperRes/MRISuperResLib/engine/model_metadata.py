"""A model file's metadata as a typed object (:class:`ModelMetadata`), and back to the header's JSON map.

The header's ``metadata`` entry (see :mod:`.model_header` and :mod:`.checkpoint`) is a JSON object. Each key the
engine reads is a typed attribute here; every other key (a user's own, or one written by an older or newer
engine) is kept in :attr:`ModelMetadata.extra`. ``ModelMetadata.from_header(h).to_header() == h`` for any header
``h``, with the same key order and the same JSON values, so a model file re-saved from its metadata keeps what it
carried. Torch-free: listing models reads only this.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

Scale3 = tuple[float, float, float]

#: Header value of ``scales`` for a model that runs at any scale >= 1 (an arbitrary-scale family).
ANY_SCALE = "any"


def _decode_scales(value: Any) -> list[Scale3] | None:
    if value is None or value == ANY_SCALE:
        return None
    scales = [tuple(float(s) for s in scale) for scale in value]
    if any(len(scale) != 3 for scale in scales):
        raise ValueError("a scale is not three numbers")
    return scales  # type: ignore[return-value]


def _same(value: Any) -> Any:
    return value


def _encode_scales(value: list[Scale3] | None) -> Any:
    return ANY_SCALE if value is None else [list(scale) for scale in value]


#: Header keys stored in a form other than their attribute's: key -> (decode, encode).
_CODECS = {"scales": (_decode_scales, _encode_scales)}


@dataclass
class ModelMetadata:
    """What a model file says about itself (the header's ``metadata`` JSON object, typed).

    A key missing from the header reads as the attribute's default and is not written back unless it is set to
    something else. Written by :func:`.checkpoint.save_model`; see its docstring and :mod:`.checkpoint` for what
    each key means.

    Attributes:
        name: the model's name (``None`` when the file has none: its file stem is used).
        version: the model's version (free text, e.g. ``"0.1.0"``).
        family: the network family (:data:`MRISuperResLib.models.FAMILIES`), ``""`` when missing.
        config: the family's constructor arguments.
        scales: supported per-axis scales ``(s_i, s_j, s_k)``, or ``None`` for any scale >= 1 (header ``"any"``).
        min_input_size: the smallest input size (voxels per axis) the network accepts.
        normalization: intensity normalisation (percentiles, clipping), ``None`` for the engine's default.
        degradation: the forward model it was trained for (:class:`~..processing.degradation.DegradationSpec`
            as a dict), ``None`` when unknown.
        description: one line for listings.
        training: how it was trained (subjects, steps, config ...).
        metrics: validation scores (``metrics["validation"]``: ``psnr``, ``baseline_psnr`` in dB, ``ssim`` ...).
        license: the weights' licence.
        created: ISO 8601 UTC time of saving.
        engine_version: engine version that saved it.
        parameters: number of network parameters.
        flops_per_output_voxel: multiply-adds per output voxel (``None`` when not counted).
        weights_sha256: checksum of the tensors (:func:`.checkpoint.weights_checksum`), checked on every load.
        consistency: the calibrated data-consistency rule (``threshold`` NRMSE, ``validation_values``, ``rule``).
        mask_background: keep the B-spline baseline outside the head unless the user says otherwise.
        conditioning: the context variables (:meth:`.conditioning.ContextSpec.to_metadata`), ``None`` when none.
        adapted: how the model was fine-tuned on one input (:mod:`.adapt`), ``None`` when it was not.
        untrained: the file is an untrained placeholder.
        shipped: set at load time for shipped models (never saved by the engine).
        extra: every other key of the header, unchanged.
    """

    name: str | None = None
    version: str | None = None
    family: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    scales: list[Scale3] | None = None
    min_input_size: int = 1
    normalization: dict[str, Any] | None = None
    degradation: dict[str, Any] | None = None
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    license: str | None = None
    created: str | None = None
    engine_version: str | None = None
    parameters: int | None = None
    flops_per_output_voxel: float | None = None
    weights_sha256: str | None = None
    consistency: dict[str, Any] = field(default_factory=dict)
    mask_background: bool = False
    conditioning: dict[str, Any] | None = None
    adapted: dict[str, Any] | None = None
    untrained: bool = False
    shipped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    #: The header this was read from (kept so that unchanged keys are written back exactly as they were).
    _header: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def trained_voxel_mm(self) -> tuple[float, float] | None:
        """``(smallest, largest)`` high-resolution voxel edge (mm) of the training volumes (``training.voxel_mm``;
        for shipped files without it, the manifest's), ``None`` when unknown."""
        value = self.training.get("voxel_mm") if isinstance(self.training, dict) else None
        try:
            low, high = (float(v) for v in value)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            return None
        return (low, high) if 0 < low <= high else None

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> ModelMetadata:
        """The typed metadata of a header's ``metadata`` JSON object (unknown keys go to ``extra``).

        Nested values (dicts, lists) are shared with ``header``, not copied, so that listing many models stays
        instant; copy the header first when it is to be changed afterwards.

        Raises:
            ValueError: ``scales`` is neither ``"any"`` nor a list of 3-number lists.
        """
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in header.items():
            if key in _TYPED:
                decode = _CODECS.get(key, (_same, None))[0]
                try:
                    values[key] = decode(value)
                except (TypeError, ValueError):
                    raise ValueError(f"model metadata {key!r} is unreadable: {value!r}") from None
            else:
                extra[key] = value
        return cls(**values, extra=extra, _header=dict(header))

    @classmethod
    def coerce(cls, metadata: ModelMetadata | Mapping[str, Any]) -> ModelMetadata:
        """``metadata`` itself, or the typed form of a header map (for public functions that accept either)."""
        return metadata if isinstance(metadata, ModelMetadata) else cls.from_header(metadata)

    def to_header(self) -> dict[str, Any]:
        """The header's ``metadata`` JSON object (a deep copy): the keys read (in their order, unchanged ones with
        their original JSON values), then typed attributes set away from their defaults, then new ``extra`` keys."""
        header: dict[str, Any] = {}
        for key in self._header:
            if key in _TYPED:
                if self._written(key):
                    header[key] = self._encoded(key)
            elif key in self.extra:
                header[key] = copy.deepcopy(self.extra[key])
        for key in _TYPED:
            if key not in self._header and self._written(key):
                header[key] = self._encoded(key)
        for key, value in self.extra.items():
            if key not in header and key not in _TYPED:
                header[key] = copy.deepcopy(value)
        return header

    @property
    def consistency_threshold(self) -> float | None:
        """The calibrated consistency NRMSE above which a result is flagged, ``None`` when not calibrated."""
        value = self.consistency.get("threshold") if isinstance(self.consistency, dict) else None
        return None if value is None else float(value)

    @property
    def validation(self) -> dict[str, Any]:
        """``metrics["validation"]`` (empty when missing)."""
        return (self.metrics or {}).get("validation") or {}

    def _unchanged(self, key: str) -> bool:
        if key not in self._header:
            return False
        decode = _CODECS.get(key, (_same, None))[0]
        try:
            return decode(self._header[key]) == getattr(self, key)
        except (TypeError, ValueError):
            return False

    def _written(self, key: str) -> bool:
        return self._unchanged(key) or getattr(self, key) != _DEFAULTS[key]

    def _encoded(self, key: str) -> Any:
        if self._unchanged(key):
            return copy.deepcopy(self._header[key])
        encode = _CODECS.get(key, (None, copy.deepcopy))[1]
        return encode(getattr(self, key))


def _default(spec: Any) -> Any:
    return spec.default_factory() if spec.default is MISSING else spec.default


#: Header keys with an attribute, in declaration order, and their defaults (a key at its default is not written).
_DEFAULTS = {spec.name: _default(spec) for spec in fields(ModelMetadata) if spec.name not in ("extra", "_header")}
_TYPED = tuple(_DEFAULTS)
