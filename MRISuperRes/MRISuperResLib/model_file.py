"""The model file's header, read without PyTorch: format constants, metadata and the file checksum.

A model file is one ``.safetensors`` file (see :mod:`.checkpoint` for the metadata it holds). Listing models, the
Slicer panel and ``mrisuperres models`` need only the JSON header, so this module imports neither torch nor MONAI:
a listing answers in a fraction of a second instead of paying several seconds of imports.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

from .errors import ModelError

FORMAT_NAME = "mrisuperres-model"
FORMAT_VERSION = "1"
MODEL_EXTENSION = ".safetensors"

_PICKLE_SIGNATURES = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


def file_checksum(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Read a model file's metadata without building the network (and without importing torch).

    Raises:
        ModelError: missing file, pickled checkpoint, or not a valid MRISuperRes model file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; give a shipped model name or a .safetensors path")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(_PICKLE_SIGNATURES):
        raise ModelError(
            f"model file {path} is a pickled PyTorch checkpoint; MRISuperRes never unpickles model files "
            "(they can run code): save the weights as .safetensors with MRISuperResLib.checkpoint.save_model"
        )
    if len(head) < 8 or struct.unpack("<Q", head)[0] > path.stat().st_size:
        raise ModelError(f"model file {path} is corrupted or not a safetensors file; download or export it again")
    from safetensors import safe_open

    try:
        # The "numpy" framework reads the header without importing torch.
        with safe_open(str(path), framework="numpy") as handle:
            header = handle.metadata() or {}
    except Exception as error:  # safetensors raises several internal error types
        raise ModelError(f"model file {path} is corrupted or not a safetensors file ({error}); export it again") from None
    if header.get("format") != FORMAT_NAME:
        raise ModelError(
            f"model file {path} is a safetensors file without MRISuperRes metadata; save it with "
            "MRISuperResLib.checkpoint.save_model so its family and config are known"
        )
    try:
        return json.loads(header["metadata"])
    except (KeyError, json.JSONDecodeError):
        raise ModelError(f"model file {path} has unreadable metadata; export it again") from None
