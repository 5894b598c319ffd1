"""A model file's metadata from its safetensors header alone, without torch (so that listing models is instant).

A ``.safetensors`` file starts with the byte length of its JSON header (8 bytes, little-endian), then the header:
one entry per tensor (``dtype``, ``shape``, ``data_offsets`` into the data that follows) and ``__metadata__``, a
string-to-string map. MRISuperRes model files put ``format`` = ``"mrisuperres-model"``, ``format_version`` and
``metadata`` (JSON; see :mod:`.checkpoint`) there. Loading the weights is :func:`.checkpoint.load_model_file`'s job.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from ..errors import ModelError

FORMAT_NAME = "mrisuperres-model"
FORMAT_VERSION = "1"
MODEL_EXTENSION = ".safetensors"

#: First bytes of pickled PyTorch checkpoints (protocols 2-5, and the zip container of ``torch.save``).
PICKLE_SIGNATURES = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")

#: Largest header accepted (safetensors' own limit).
MAX_HEADER_BYTES = 100_000_000


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Read a model file's metadata without building the network (and without importing torch).

    Raises:
        ModelError: missing file, pickled checkpoint, or not a valid MRISuperRes model file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; give a shipped model name or a .safetensors path")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if head.startswith(PICKLE_SIGNATURES):
            raise ModelError(
                f"model file {path} is a pickled PyTorch checkpoint; MRISuperRes never unpickles model files "
                "(they can run code): save the weights as .safetensors with MRISuperResLib.engine.checkpoint.save_model"
            )
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 2 <= length <= min(size - 8, MAX_HEADER_BYTES):
            raise ModelError(f"model file {path} is corrupted or not a safetensors file; download or export it again")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
        data_bytes = size - 8 - length
        for name, tensor in header.items():
            if name != "__metadata__" and not 0 <= tensor["data_offsets"][0] <= tensor["data_offsets"][1] <= data_bytes:
                raise ValueError(f"tensor {name} lies outside the file")
        metadata = header.get("__metadata__") or {}
        if not isinstance(metadata, dict):
            raise ValueError("__metadata__ is not a map")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        raise ModelError(f"model file {path} is corrupted or not a safetensors file ({error}); export it again") from None
    if metadata.get("format") != FORMAT_NAME:
        raise ModelError(
            f"model file {path} is a safetensors file without MRISuperRes metadata; save it with "
            "MRISuperResLib.engine.checkpoint.save_model so its family and config are known"
        )
    try:
        return json.loads(metadata["metadata"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise ModelError(f"model file {path} has unreadable metadata; export it again") from None
