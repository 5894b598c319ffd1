"""The catalogue of shipped models: ``weights/models.json``, a text manifest beside the model files.

Each entry names one shipped model: ``name``, ``file`` (in the weights folder), ``sha256`` (of the whole file,
compared with the checksum every load computes), ``card`` (its Markdown model card), ``scales`` (as in the model's
header: a list of per-axis scales ``[s_i, s_j, s_k]``, or ``"any"``) and ``default_for``: the kinds of scale the
model is the default for.

Kinds (:data:`DEFAULT_KINDS`): ``"isotropic"`` (the same scale on every axis, e.g. 2), ``"anisotropic"`` (per-axis
scales, e.g. thick slices 1,1,4) and ``"arbitrary"`` (the fallback for scales no fixed-scale model covers). A mark
holds for the model's own scales, in any axis order: the x2 model marked ``isotropic`` is the default at 2, each
thick-slice model marked ``anisotropic`` is the default for its slice factor. Two models marked for the same kind
that share a scale of that kind are a conflict (:func:`default_conflicts`); ``"default"`` then refuses to choose.
The file's layout is ``weights/models.schema.json`` (JSON Schema). ``scripts/ship_model.py`` edits the manifest
(:func:`mark_default` moves a mark from the previous default). Torch-free.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..imaging.geometry import Scale, format_scale

MANIFEST_NAME = "models.json"
SCHEMA_NAME = "models.schema.json"

ISOTROPIC, ANISOTROPIC, ARBITRARY = "isotropic", "anisotropic", "arbitrary"
#: The kinds of scale a shipped model can be marked the default for.
DEFAULT_KINDS = (ISOTROPIC, ANISOTROPIC, ARBITRARY)

_FIELDS = ("name", "file", "sha256", "card", "scales", "default_for", "voxel_mm")


def scale_kind(scale: Scale) -> str:
    """``"isotropic"`` when the three per-axis factors are equal, else ``"anisotropic"``."""
    return ISOTROPIC if scale[0] == scale[1] == scale[2] else ANISOTROPIC


def _same_up_to_order(a: Scale, b: Scale) -> bool:
    return all(abs(x - y) < 1e-6 for x, y in zip(sorted(a), sorted(b)))


@dataclass(frozen=True)
class ManifestEntry:
    """One shipped model in the manifest (see the module docstring for the fields).

    Attributes:
        scales: per-axis scales ``(s_i, s_j, s_k)``, or ``None`` for any scale (``"any"`` in the file).
        default_for: kinds from :data:`DEFAULT_KINDS`; empty when the model is chosen by name only.
        voxel_mm: ``(smallest, largest)`` high-resolution voxel edge (mm) of its training volumes, for files that
            do not record it themselves (``training.voxel_mm``); ``None`` when unknown.
    """

    name: str
    file: str
    sha256: str
    card: str | None = None
    scales: tuple[tuple[float, float, float], ...] | None = None
    default_for: tuple[str, ...] = ()
    voxel_mm: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.scales is not None:
            object.__setattr__(self, "scales", tuple(tuple(float(s) for s in scale) for scale in self.scales))
        object.__setattr__(self, "default_for", tuple(self.default_for))

    def supports(self, scale: Scale) -> bool:
        """True when ``scale`` is one of the entry's scales in some axis order (any scale for ``"any"``)."""
        return self.scales is None or any(_same_up_to_order(s, scale) for s in self.scales)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str) -> ManifestEntry:
        """Raises:
            ModelError: a missing or mistyped field (``where`` names the entry in the message)."""
        try:
            unknown = sorted(set(values) - set(_FIELDS))
            if unknown:
                raise ValueError(f"unknown field {unknown[0]!r} (fields: {', '.join(_FIELDS)})")
            for key in ("name", "file", "sha256"):
                if not isinstance(values.get(key), str) or not values[key]:
                    raise ValueError(f"{key!r} must be a non-empty string")
            scales_value = values.get("scales", "any")
            scales = None if scales_value == "any" else tuple(
                (float(s[0]), float(s[1]), float(s[2])) for s in scales_value if len(s) == 3)
            if scales is not None and len(scales) != len(scales_value):
                raise ValueError("'scales' must be \"any\" or a list of [i, j, k] scales")
            default_for = tuple(str(kind) for kind in values.get("default_for", []))
            wrong = [kind for kind in default_for if kind not in DEFAULT_KINDS]
            if wrong:
                raise ValueError(f"'default_for' {wrong[0]!r} is not one of {', '.join(DEFAULT_KINDS)}")
            card = values.get("card")
            voxel_mm = values.get("voxel_mm")
            if voxel_mm is not None:
                if (not isinstance(voxel_mm, list) or len(voxel_mm) != 2
                        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in voxel_mm)
                        or not 0 < voxel_mm[0] <= voxel_mm[1] < math.inf):
                    raise ValueError("'voxel_mm' must be [smallest, largest] voxel edge in mm")
                voxel_mm = (float(voxel_mm[0]), float(voxel_mm[1]))
            return cls(values["name"], values["file"], values["sha256"].lower(), str(card) if card else None,
                       scales, default_for, voxel_mm)
        except (TypeError, ValueError) as error:
            raise ModelError(f"{where}: {error}; fix the entry or reinstall the extension") from None

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {"name": self.name, "file": self.file, "sha256": self.sha256}
        if self.card:
            values["card"] = self.card
        values["scales"] = "any" if self.scales is None else [list(s) for s in self.scales]
        values["default_for"] = list(self.default_for)
        if self.voxel_mm is not None:
            values["voxel_mm"] = list(self.voxel_mm)
        return values


def read_manifest(folder: Path) -> list[ManifestEntry]:
    """The entries of ``folder/models.json``, in file order.

    Raises:
        ModelError: the manifest is missing, not JSON, or has a malformed entry or a name or file listed twice.
    """
    path = folder / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"the shipped model catalogue {path} is missing; reinstall the extension") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ModelError(f"the shipped model catalogue {path} is unreadable ({error}); "
                         "reinstall the extension") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise ModelError(f"the shipped model catalogue {path} has no \"models\" list; reinstall the extension")
    entries = [ManifestEntry.from_dict(item if isinstance(item, dict) else {}, f"{path} entry {index + 1}")
               for index, item in enumerate(models)]
    for key in ("name", "file"):
        seen: set[str] = set()
        for entry in entries:
            value = getattr(entry, key)
            if value in seen:
                raise ModelError(f"{path} lists the {key} {value!r} twice; keep one entry")
            seen.add(value)
    return entries


def write_manifest(folder: Path, entries: list[ManifestEntry]) -> Path:
    """Write ``folder/models.json`` (entries sorted by name, 2-space indents, atomically); returns its path.

    Raises:
        ModelError: two entries are marked default for the same kind of scale at a shared scale.
        OSError: the file cannot be written.
    """
    conflicts = default_conflicts(entries)
    if conflicts:
        raise ModelError(conflicts[0])
    path = folder / MANIFEST_NAME
    # One field per line, each value on that line: a change of default is a one-line diff.
    items = [",\n".join(f"      {json.dumps(key)}: {json.dumps(value)}" for key, value in e.to_dict().items())
             for e in sorted(entries, key=lambda e: e.name)]
    models = ",\n".join("    {\n" + item + "\n    }" for item in items)
    text = f'{{\n  "$schema": {json.dumps("./" + SCHEMA_NAME)},\n  "models": [\n{models}\n  ]\n}}\n'
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text, encoding="utf-8", newline="\n")
    os.replace(temporary, path)
    return path


def _shared_scale(a: ManifestEntry, b: ManifestEntry, kind: str) -> str | None:
    """A scale of ``kind`` both entries do (``"any"`` when both do every scale), else ``None``."""
    if a.scales is None and b.scales is None:
        return "any"
    fixed, other = (a, b) if a.scales is not None else (b, a)
    for scale in fixed.scales or ():
        if (kind == ARBITRARY or scale_kind(scale) == kind) and other.supports(scale):
            return format_scale(scale)
    return None


def default_conflicts(entries: list[ManifestEntry]) -> list[str]:
    """One message per pair of entries marked default for the same kind of scale at a scale both do."""
    messages = []
    for index, a in enumerate(entries):
        for b in entries[index + 1:]:
            for kind in a.default_for:
                shared = _shared_scale(a, b, kind) if kind in b.default_for else None
                if shared is not None:
                    messages.append(
                        f"shipped models {a.name} and {b.name} are both marked default_for {kind} at scale {shared} "
                        f"in weights/{MANIFEST_NAME}; keep one mark (scripts/ship_model.py --default-for moves it)")
    return messages


def mark_default(entries: list[ManifestEntry], entry: ManifestEntry) -> tuple[list[ManifestEntry], list[str]]:
    """Add or replace ``entry`` (same name) and take its ``default_for`` kinds off every other entry that would
    conflict with it (see :func:`default_conflicts`).

    Returns:
        The new entry list and the names of the models whose mark was removed.
    """
    result, unmarked = [], []
    for other in entries:
        if other.name == entry.name:
            continue
        clashing = {kind for kind in entry.default_for
                    if kind in other.default_for and _shared_scale(entry, other, kind) is not None}
        if clashing:
            other = replace(other, default_for=tuple(k for k in other.default_for if k not in clashing))
            unmarked.append(other.name)
        result.append(other)
    return [*result, entry], unmarked
