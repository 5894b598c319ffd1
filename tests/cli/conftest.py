"""Fixtures of the command-line tests: the SIGTERM handler restored after each test, and a small input layout."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from helpers import write_smooth


@pytest.fixture(autouse=True)
def _restore_sigterm():
    """``cli.main`` installs a SIGTERM handler; keep the test process's own handler afterwards."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture()
def layout(tmp_path: Path) -> dict[str, Path]:
    """``in/t1.nii.gz`` (12x14x10 smooth float32, 2 mm) and an empty ``out/`` folder."""
    (tmp_path / "out").mkdir()
    return {"root": tmp_path, "input": write_smooth(tmp_path / "in" / "t1.nii.gz"), "out": tmp_path / "out"}
