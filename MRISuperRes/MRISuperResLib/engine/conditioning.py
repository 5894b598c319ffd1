"""Conditioning context for cross-attention models (seed 002: age, sex, diagnosis, slice position).

A conditioned model attends to a context vector built from named *variables*:

* ``numeric`` -- one entry, ``(value - offset) / scale`` (e.g. age with offset 50 and scale 20 years);
* ``categorical`` -- a one-hot block over the listed ``categories`` (e.g. sex ``[F, M]``); values are matched
  case-insensitively;
* ``slice_position`` -- one entry the 2.5D network fills itself for every slice it processes: the slice's
  centre along the network's slice axis as a fraction of the whole volume, ``(index + 0.5) / slices`` in
  ``[0, 1]`` (fine grid). The user never gives it.

The encoding (variables, their order, offsets, scales, categories) is written into the model file's metadata
(``conditioning``) by training and read back by ``enhance``, so the same values always give the same vector. In
a training config it is ``data.context``::

    context:
      variables:
        age: {kind: numeric, offset: 50, scale: 20}
        sex: {kind: categorical, categories: [F, M]}
        slice_position: {kind: slice_position}
      subjects:                      # by volume file name
        sub01_T1w.nii.gz: {age: 63, sex: F}

At ``enhance`` time the values come as ``age=63,sex=F`` (:func:`parse_context`) or a mapping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, ModelError
from .model_metadata import ModelMetadata

NUMERIC, CATEGORICAL, SLICE_POSITION = "numeric", "categorical", "slice_position"
KINDS = (NUMERIC, CATEGORICAL, SLICE_POSITION)


class ContextError(InputError):
    """The conditioning values given do not fit the model (missing, unknown, or not of the variable's kind)."""


@dataclass(frozen=True)
class Variable:
    """One conditioning variable and its encoding (see the module docstring)."""

    name: str
    kind: str
    offset: float = 0.0
    scale: float = 1.0
    categories: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"context variable {self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == CATEGORICAL and len(self.categories) < 2:
            raise ValueError(f"context variable {self.name}: a categorical variable needs at least 2 categories")
        if self.kind == NUMERIC and not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"context variable {self.name}: scale must be a positive number, got {self.scale}")

    @property
    def width(self) -> int:
        """Entries this variable takes in the context vector."""
        return len(self.categories) if self.kind == CATEGORICAL else 1

    def describe(self) -> str:
        if self.kind == CATEGORICAL:
            return f"{self.name} (one of {'/'.join(self.categories)})"
        return f"{self.name} (number)" if self.kind == NUMERIC else self.name

    def encode(self, value: Any) -> list[float]:
        """The entries of ``value``; raises :class:`ContextError` for a value of the wrong kind."""
        if self.kind == CATEGORICAL:
            text = str(value).strip().lower()
            lowered = [c.lower() for c in self.categories]
            if text not in lowered:
                raise ContextError(f"context {self.name}={value} is not one of {', '.join(self.categories)}")
            return [1.0 if c == text else 0.0 for c in lowered]
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ContextError(f"context {self.name}={value} is not a number") from None
        if not math.isfinite(number):
            raise ContextError(f"context {self.name}={value} is not a finite number")
        return [(number - self.offset) / self.scale]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == NUMERIC:
            data.update(offset=self.offset, scale=self.scale)
        if self.kind == CATEGORICAL:
            data["categories"] = list(self.categories)
        return data


@dataclass(frozen=True)
class ContextSpec:
    """The ordered variables of a conditioned model and how each is encoded."""

    variables: tuple[Variable, ...]

    def __post_init__(self) -> None:
        names = [v.name for v in self.variables]
        if not names:
            raise ValueError("a context needs at least one variable")
        if len(set(names)) != len(names):
            raise ValueError(f"context variables repeat a name: {names}")
        if sum(v.kind == SLICE_POSITION for v in self.variables) > 1:
            raise ValueError("a context has at most one slice_position variable")

    @property
    def dim(self) -> int:
        """Length of the context vector (the network's ``context_dim``)."""
        return sum(v.width for v in self.variables)

    @property
    def given(self) -> list[Variable]:
        """The variables a user gives (all but the slice position)."""
        return [v for v in self.variables if v.kind != SLICE_POSITION]

    @property
    def slice_position_index(self) -> int | None:
        """Index of the slice-position entry in the vector (``None`` when there is none)."""
        index = 0
        for variable in self.variables:
            if variable.kind == SLICE_POSITION:
                return index
            index += variable.width
        return None

    def encode(self, values: Mapping[str, Any], where: str = "") -> np.ndarray:
        """The context vector ``(dim,)`` float32 of one subject (slice position entry 0.5, filled per slice later).

        Raises:
            ContextError: a variable is missing, a name is unknown, or a value does not fit its variable.
        """
        known = {v.name for v in self.given}
        unknown = sorted(set(values) - known)
        missing = [v.name for v in self.given if v.name not in values]
        place = f" for {where}" if where else ""
        if unknown:
            raise ContextError(f"unknown context variable(s) {', '.join(unknown)}{place}; this model is conditioned "
                               f"on {self.usage()}")
        if missing:
            raise ContextError(f"context{place} lacks {', '.join(missing)}: this model is conditioned on {self.usage()}"
                               f"; give them, e.g. --context {self.example()}")
        vector: list[float] = []
        for variable in self.variables:
            vector += [0.5] if variable.kind == SLICE_POSITION else variable.encode(values[variable.name])
        return np.asarray(vector, dtype=np.float32)

    def usage(self) -> str:
        """The variables a user gives, described in one line."""
        return ", ".join(v.describe() for v in self.given) or "the slice position only"

    def example(self) -> str:
        parts = []
        for variable in self.given:
            sample = variable.categories[0] if variable.kind == CATEGORICAL else f"{variable.offset:g}"
            parts.append(f"{variable.name}={sample}")
        return ",".join(parts)

    def to_metadata(self) -> dict[str, Any]:
        """What a model file stores (``conditioning`` metadata)."""
        return {"variables": [v.to_dict() for v in self.variables], "dim": self.dim,
                "slice_position_index": self.slice_position_index}

    @classmethod
    def from_metadata(cls, data: Mapping[str, Any]) -> "ContextSpec":
        """Read a model file's ``conditioning`` metadata (raises :class:`ModelError` when malformed)."""
        try:
            return cls(tuple(Variable(str(v["name"]), str(v["kind"]), float(v.get("offset", 0.0)),
                                      float(v.get("scale", 1.0)), tuple(str(c) for c in v.get("categories", ())))
                             for v in data["variables"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ModelError(f"the model's conditioning metadata is malformed ({error}); re-train or re-save it") from None

    @classmethod
    def from_config(cls, variables: Mapping[str, Any]) -> "ContextSpec":
        """From a training config's ``data.context.variables`` mapping ``{name: {kind, offset, scale,
        categories}}``; raises ``ValueError`` with the problem."""
        if not isinstance(variables, Mapping) or not variables:
            raise ValueError("data.context.variables must map variable names to {kind: ...}")
        parsed = []
        for name, settings in variables.items():
            settings = settings or {}
            if not isinstance(settings, Mapping):
                raise ValueError(f"data.context.variables.{name} must be a mapping such as {{kind: numeric}}")
            unknown = set(settings) - {"kind", "offset", "scale", "categories"}
            if unknown:
                raise ValueError(f"data.context.variables.{name}: unknown key(s) {', '.join(sorted(unknown))}; "
                                 "valid: kind, offset, scale, categories")
            kind = str(settings.get("kind", SLICE_POSITION if name == SLICE_POSITION else NUMERIC))
            parsed.append(Variable(str(name), kind, float(settings.get("offset", 0.0)),
                                   float(settings.get("scale", 1.0)),
                                   tuple(str(c) for c in settings.get("categories", ()))))
        return cls(tuple(parsed))


def model_context_spec(metadata: ModelMetadata | Mapping[str, Any]) -> ContextSpec | None:
    """The conditioning of a model file (``None`` for an unconditioned model); ``metadata`` typed or the header's
    map."""
    data = ModelMetadata.coerce(metadata).conditioning
    return ContextSpec.from_metadata(data) if data else None


def parse_context(text: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """``"age=63,sex=F"`` (or a mapping, or ``None``) -> ``{"age": "63", "sex": "F"}``.

    Raises:
        ContextError: an item without ``=`` or a name given twice.
    """
    if text is None:
        return {}
    if isinstance(text, Mapping):
        return {str(k): v for k, v in text.items()}
    values: dict[str, Any] = {}
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ContextError(f"context item {item!r} is not name=value; write e.g. --context age=63,sex=F")
        if name.strip() in values:
            raise ContextError(f"context variable {name.strip()} is given twice")
        values[name.strip()] = value.strip()
    return values


def context_for_model(metadata: ModelMetadata | Mapping[str, Any], values: str | Mapping[str, Any] | None,
                      model_name: str = "the model") -> np.ndarray | None:
    """The context vector for a model and the user's values, checked.

    Returns ``None`` for an unconditioned model given no values.

    Raises:
        ContextError: values given to an unconditioned model, or missing / unknown / ill-typed values for a
            conditioned one (one line listing the model's variables).
    """
    given = parse_context(values)
    spec = model_context_spec(metadata)
    if spec is None:
        if given:
            raise ContextError(f"{model_name} is not conditioned on a context; remove --context "
                               f"({', '.join(given)})")
        return None
    return spec.encode(given, model_name)


def slice_positions(count: int, flipped: bool = False) -> np.ndarray:
    """Slice positions ``(index + 0.5) / count`` of ``count`` slices, reversed when the axis was flipped."""
    positions = (np.arange(count, dtype=np.float32) + 0.5) / np.float32(count)
    return positions[::-1].copy() if flipped else positions


def subject_contexts(spec: ContextSpec, subjects: Mapping[str, Mapping[str, Any]], names: Sequence[str]
                     ) -> list[np.ndarray]:
    """Context vectors of the named training volumes (in order) from ``data.context.subjects`` (keyed by file
    name).

    Raises:
        ContextError: a volume without an entry, or an entry that does not fit ``spec``.
    """
    vectors = []
    for name in names:
        if name not in subjects:
            raise ContextError(f"data.context.subjects has no entry for {name}; give its {spec.usage()}")
        vectors.append(spec.encode(subjects[name] or {}, name))
    return vectors


def check_context_config(context: Mapping[str, Any], family: str, model_config: Mapping[str, Any]) -> ContextSpec:
    """Check a training config's ``data.context`` against the model; returns its :class:`ContextSpec`.

    Raises:
        ValueError: unknown keys, bad variables, a model without cross-attention, or a ``context_dim`` that
            differs from the variables' width.
    """
    if not isinstance(context, Mapping):
        raise ValueError("must be a mapping {variables: ..., subjects: ...}")
    unknown = set(context) - {"variables", "subjects"}
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}; valid: variables, subjects")
    spec = ContextSpec.from_config(context.get("variables") or {})
    subjects = context.get("subjects") or {}
    if not isinstance(subjects, Mapping):
        raise ValueError("subjects must map volume file names to {variable: value}")
    if family != "unet25d" or not model_config.get("cross_attention_stages"):
        raise ValueError("only a model with cross-attention takes a context: family unet25d with "
                         "cross_attention_stages in model.config")
    dim = model_config.get("context_dim")
    if dim not in (None, 0, spec.dim):
        raise ValueError(f"the variables make a context of {spec.dim} values but model.config.context_dim is {dim}; "
                         "leave context_dim out (it follows from the variables)")
    for name, values in subjects.items():
        try:
            spec.encode(values or {}, str(name))
        except ContextError as error:
            raise ValueError(str(error)) from None
    return spec
