"""Model metadata from the safetensors header alone (:mod:`MRISuperResLib.engine.model_header`), without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from MRISuperResLib.errors import ModelError
from MRISuperResLib.engine.model_header import read_metadata
from MRISuperResLib.engine.model_zoo import shipped_models


def test_a_shipped_model_reads_without_importing_torch() -> None:
    path = shipped_models()[0].path
    code = ("import sys; from MRISuperResLib.engine.model_header import read_metadata; "
            f"m = read_metadata({str(path)!r}); print(m['family'], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2] / "MRISuperRes").stdout.split()
    assert out == [read_metadata(path)["family"], "False"]


@pytest.mark.parametrize("cut", [4, 8, 100, -10])
def test_a_truncated_model_file_is_refused_as_corrupted(tmp_path: Path, cut: int) -> None:
    data = shipped_models()[0].path.read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:cut])
    with pytest.raises(ModelError, match="corrupted or not a safetensors file"):
        read_metadata(path)
