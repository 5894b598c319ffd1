"""What every output carries: which model made it, how, when, and that it was not acquired."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any, Protocol

from ..version import __version__
from .geometry import Scale, format_scale

AI_NOTICE = "AI-generated, not acquired"

#: Prefix of provenance keys in NRRD / MetaImage headers and Slicer node attributes.
KEY_PREFIX = "MRISuperRes."


class ModelIdentity(Protocol):
    """What provenance needs of a model (a :class:`~MRISuperResLib.engine.checkpoint.LoadedModel` is one)."""

    name: str
    file_sha256: str
    metadata: Mapping[str, Any]


def make_provenance(model: ModelIdentity, scale: Scale, role: str, source: str, device: str) -> dict[str, str]:
    """Provenance of one output.

    Args:
        model: the model that produced the result.
        scale: per-axis scale ``(s_i, s_j, s_k)``.
        role: ``"super-resolved"``, ``"baseline"``, ``"difference"``, ``"consistency"`` or ``"uncertainty"``.
        source: name of the input (file name or node name).
        device: where inference ran.
    """
    provenance = {
        "software": "MRISuperRes",
        "engine_version": __version__,
        "role": role,
        "model": model.name,
        "model_version": str(model.metadata.version or ""),
        "model_family": str(model.metadata.family),
        "model_sha256": model.file_sha256,
        "scale": format_scale(scale),
        "source": source,
        "device": device,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "notice": AI_NOTICE if role != "baseline" else "interpolated from the input, not acquired",
    }
    adapted = model.metadata.adapted
    if adapted and role != "baseline":
        # A model fine-tuned on this very input (see adapt.py): say so on everything it produced.
        provenance["adaptation"] = (
            f"{'adapted to this input' if adapted.get('this_run') else 'adapted to input ' + str(adapted.get('input'))}: "
            f"fine-tuned from {adapted.get('from')} (SHA-256 "
            f"{str(adapted.get('from_sha256', ''))[:12]}) on input SHA-256 {str(adapted.get('input_sha256', ''))[:12]}, "
            f"{adapted.get('steps')} steps, held-back L1 {float(adapted.get('held_back_l1_before', 0)):.5f} -> "
            f"{float(adapted.get('held_back_l1_after', 0)):.5f}")
    return provenance


def header_fields(provenance: dict[str, Any]) -> dict[str, str]:
    """Key/values for file headers (``MRISuperRes.model`` ...)."""
    return {f"{KEY_PREFIX}{key}": str(value) for key, value in provenance.items()}


def short_description(provenance: dict[str, Any]) -> str:
    """One line of at most 79 characters for NIfTI ``descrip`` / DICOM SeriesDescription.

    The notice comes first so that a long model name can never push it out of the field.
    """
    text = f"{provenance['notice']}; MRISuperRes {provenance['role']} x{provenance['scale']} {provenance['model']}"
    return text[:79]
