"""The engine's model file format: one ``.safetensors`` file with JSON metadata in its header.

A model file never executes code: tensors are read with ``safetensors`` (a plain header + raw buffers), and
pickled PyTorch checkpoints are refused with an explanation. The header's ``__metadata__`` holds:

* ``format`` = ``"mrisuperres-model"`` and ``format_version``;
* ``metadata`` -- JSON: ``name``, ``version``, ``family``, ``config`` (the family's constructor arguments),
  ``scales`` (list of per-axis scales, or ``"any"``), ``normalization`` (percentiles and clipping),
  ``degradation`` (the forward model it was trained for), ``description``, ``training``, ``metrics``, ``license``,
  ``created``, ``engine_version`` and ``weights_sha256`` (checksum of the tensors, checked on every load).

Loaded, the metadata is a :class:`~.model_metadata.ModelMetadata` (typed attributes; other keys kept as they were).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .. import models
from ..errors import ModelError
# The header format and its torch-free reader live in .model_header (model lists must not import torch).
from .model_header import FORMAT_NAME, FORMAT_VERSION, MODEL_EXTENSION, read_metadata  # noqa: F401
from .model_metadata import ModelMetadata
from ..version import __version__

@dataclass
class LoadedModel:
    """A ready-to-run network and what is known about it.

    Attributes:
        network: the model in eval mode on the CPU.
        metadata: the file's metadata (see the module docstring); its ``scales`` are the supported per-axis
            scales, ``None`` for any scale >= 1.
        path: where it was loaded from.
        file_sha256: SHA-256 of the whole file (hex), reported in provenance.
    """

    network: nn.Module
    metadata: ModelMetadata
    path: Path
    file_sha256: str

    @property
    def name(self) -> str:
        return self.metadata.name or self.path.stem

    @property
    def residual_to_baseline(self) -> bool:
        return bool(getattr(self.network, "residual_to_baseline", False))


def file_checksum(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_checksum(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over tensor names, dtypes, shapes and bytes, in name order (independent of file layout)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _flops_or_none(family: str, config: dict[str, Any]) -> float | None:
    # Stored so that listings read the cost from the header without building the network; arbitrary-scale
    # models are counted at scale 2.
    try:
        return float(models.config_flops_per_output_voxel(family, config))
    except Exception:  # a family the counter cannot trace: the listing shows "?"
        return None


def save_model(
    network: nn.Module,
    path: str | os.PathLike,
    *,
    name: str,
    family: str,
    config: dict[str, Any],
    version: str = "0.1.0",
    description: str = "",
    normalization: dict[str, Any] | None = None,
    degradation: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    license: str = "Apache-2.0",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save ``network``'s weights and metadata to ``path`` (a ``.safetensors`` file), atomically."""
    path = Path(path)
    if path.suffix != MODEL_EXTENSION:
        raise ValueError(f"model files end in {MODEL_EXTENSION}, got {path.name}")
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    scales = models.supported_scales(family, config)
    metadata = {
        "name": name,
        "version": version,
        "family": family,
        "config": config,
        "scales": "any" if scales is None else [list(s) for s in scales],
        "min_input_size": models.family_spec(family).min_input_size(config),
        "normalization": normalization or {"lower_percentile": 1.0, "upper_percentile": 99.0, "clip": True},
        "degradation": degradation or {"kind": "kspace"},
        "description": description,
        "training": training or {},
        "metrics": metrics or {},
        "license": license,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "engine_version": __version__,
        "parameters": models.parameter_count(network),
        "flops_per_output_voxel": _flops_or_none(family, config),
        "weights_sha256": weights_checksum(state),
        **(extra or {}),
    }
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "metadata": json.dumps(metadata)}
    temporary = path.with_name(f".{path.name}.partial")
    try:
        save_file(state, str(temporary), metadata=header)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load_model_file(path: str | os.PathLike) -> LoadedModel:
    """Load a model file: check its format and checksum, build its family from the config, load the weights.

    Raises:
        ModelError: any problem with the file, its metadata, its checksum or a config/weights mismatch.
    """
    path = Path(path)
    try:
        metadata = ModelMetadata.from_header(read_metadata(path))
    except ValueError as error:
        raise ModelError(f"model file {path} has unreadable metadata ({error}); export it again") from None
    try:
        from safetensors.torch import load_file

        state = load_file(str(path))
    except Exception as error:
        raise ModelError(f"model file {path} is corrupted ({error}); export it again") from None
    expected = metadata.weights_sha256
    if expected and weights_checksum(state) != expected:
        raise ModelError(f"model file {path} is corrupted: its weights do not match their checksum; export it again")
    family = metadata.family
    config = dict(metadata.config)
    try:
        network = models.create(family, **config)
    except (TypeError, ValueError) as error:
        raise ModelError(f"model file {path} has a config its family {family!r} cannot build: {error}") from None
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise ModelError(
            f"model file {path}: its config does not match its weights ({first[:200]}); export it again"
        ) from None
    network.eval()
    return LoadedModel(network, metadata, path, file_checksum(path))
