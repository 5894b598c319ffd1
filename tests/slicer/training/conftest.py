"""Shared fixture of the Slicer training logic tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from MRISuperResLib.engine import model_zoo


@pytest.fixture(autouse=True)
def private_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Registered model folders go to a private settings folder, not the user's."""
    monkeypatch.setenv(model_zoo.CONFIG_DIR_VARIABLE, str(tmp_path / "settings"))
    monkeypatch.delenv(model_zoo.MODEL_PATH_VARIABLE, raising=False)
    return tmp_path / "settings"
