"""Models shipped with the engine (in ``MRISuperResLib/weights/``) and choosing one by name, path or scale."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import MODEL_EXTENSION, LoadedModel, load_model_file, read_metadata
from .errors import ModelError
from .geometry import Scale, format_scale

WEIGHTS_FOLDER = Path(__file__).resolve().parent / "weights"

#: The name that asks for the shipped model suited to the requested scale.
DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class ModelEntry:
    """A model file and its metadata, without the network."""

    name: str
    path: Path
    metadata: dict[str, Any]

    @property
    def scales(self) -> list[tuple[float, float, float]] | None:
        scales = self.metadata.get("scales", "any")
        return None if scales == "any" else [tuple(float(s) for s in scale) for scale in scales]  # type: ignore[misc]

    def supports(self, scale: Scale) -> bool:
        return self.scales is None or any(_same_scale(s, scale) for s in self.scales)

    def scales_text(self) -> str:
        return "any" if self.scales is None else " ".join(format_scale(s) for s in self.scales)


def _same_scale(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(abs(x - y) < 1e-6 for x, y in zip(a, b))


def shipped_models() -> list[ModelEntry]:
    """The models shipped in the weights folder, sorted by name."""
    entries = []
    for path in sorted(WEIGHTS_FOLDER.glob(f"*{MODEL_EXTENSION}")):
        metadata = read_metadata(path)
        entries.append(ModelEntry(str(metadata.get("name", path.stem)), path, metadata))
    return entries


def resolve_model(model: str | os.PathLike, scale: Scale) -> ModelEntry:
    """Find the model file for a shipped name, ``"default"`` or a path.

    ``"default"`` picks the shipped model marked ``default_for`` the kind of scale requested
    (``"isotropic"`` or ``"anisotropic"``) that supports ``scale``, else any shipped model supporting it.

    Raises:
        ModelError: unknown name, missing file, or no shipped model for that scale.
    """
    text = str(model)
    shipped = shipped_models()
    if text == DEFAULT_MODEL:
        kind = "isotropic" if scale[0] == scale[1] == scale[2] else "anisotropic"
        candidates = [e for e in shipped if e.supports(scale)]
        preferred = [e for e in candidates if kind in e.metadata.get("default_for", [])]
        if preferred or candidates:
            return (preferred or candidates)[0]
        available = "; ".join(f"{e.name} ({e.scales_text()})" for e in shipped) or "none"
        raise ModelError(
            f"no shipped model does scale {format_scale(scale)}; shipped models and their scales: {available}"
        )
    by_name = {e.name: e for e in shipped}
    if text in by_name:
        return by_name[text]
    path = Path(text).expanduser()
    if path.suffix == MODEL_EXTENSION or path.exists() or os.sep in text:
        return ModelEntry(path.stem, path, read_metadata(path))
    raise ModelError(
        f"unknown model {text!r}; use one of: {', '.join(by_name) or 'none shipped'}, or a path to a .safetensors file"
    )


def check_scale(entry: ModelEntry | LoadedModel, scale: Scale) -> None:
    """Raise :class:`ModelError` when the model cannot produce ``scale``."""
    scales = entry.scales
    if scales is not None and not any(_same_scale(s, scale) for s in scales):
        name = entry.name
        raise ModelError(
            f"model {name} cannot do scale {format_scale(scale)}; it supports "
            f"{' or '.join(format_scale(s) for s in scales)}: pick one of those or another model (mrisuperres models)"
        )


def load_model(model: str | os.PathLike = DEFAULT_MODEL, scale: Scale = (2.0, 2.0, 2.0)) -> LoadedModel:
    """Resolve ``model`` (name, ``"default"`` or path), check it supports ``scale`` and load it on the CPU."""
    entry = resolve_model(model, scale)
    check_scale(entry, scale)
    loaded = load_model_file(entry.path)
    if entry.path.parent == WEIGHTS_FOLDER:
        loaded.metadata.setdefault("shipped", True)
    return loaded
