"""Shipped models and choosing a model by name, path or scale (MRISuperResLib.model_zoo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import make_tiny_model

from MRISuperResLib import model_zoo
from MRISuperResLib.errors import ModelError
from MRISuperResLib.model_zoo import WEIGHTS_FOLDER, load_model, resolve_model, shipped_models


def test_shipped_models_have_metadata() -> None:
    entries = shipped_models()
    assert entries
    for entry in entries:
        assert entry.path.parent == WEIGHTS_FOLDER
        assert entry.metadata["family"] == "edsr3d"
        assert entry.metadata["weights_sha256"]
        assert entry.scales
        assert entry.name == entry.metadata["name"]
    assert [e.name for e in entries] == sorted(e.name for e in entries)


def test_default_for_isotropic_x2_is_a_shipped_model() -> None:
    entry = resolve_model("default", (2.0, 2.0, 2.0))
    assert entry.path.parent == WEIGHTS_FOLDER
    assert entry.supports((2.0, 2.0, 2.0))
    assert entry.name in {e.name for e in shipped_models()}


def test_shipped_default_loads_and_is_marked_shipped() -> None:
    loaded = load_model("default", (2.0, 2.0, 2.0))
    assert loaded.metadata["shipped"] is True
    assert loaded.residual_to_baseline


def test_shipped_model_loads_by_its_name() -> None:
    name = shipped_models()[0].name
    assert load_model(name, shipped_models()[0].scales[0]).name == name


def test_load_with_a_scale_the_model_cannot_do_names_the_supported_scales() -> None:
    entry = resolve_model("default", (2.0, 2.0, 2.0))
    with pytest.raises(ModelError, match=r"cannot do scale 1,1,4; it supports 2\b"):
        load_model(entry.name, (1.0, 1.0, 4.0))


def test_default_without_a_shipped_model_for_the_scale_lists_shipped_scales() -> None:
    with pytest.raises(ModelError, match=r"no shipped model does scale 7.*edsr3d-x2-untrained \(2\)"):
        load_model("default", (7.0, 7.0, 7.0))


def test_unknown_model_name_lists_the_shipped_names() -> None:
    names = [e.name for e in shipped_models()]
    with pytest.raises(ModelError, match="unknown model 'no-such-model'") as error:
        load_model("no-such-model", (2.0, 2.0, 2.0))
    assert all(name in str(error.value) for name in names)


def test_a_model_path_loads_as_path_and_as_text(tmp_path: Path) -> None:
    path = make_tiny_model(tmp_path / "tiny-x2.safetensors")
    assert load_model(path, (2.0, 2.0, 2.0)).path == path
    assert load_model(str(path), (2.0, 2.0, 2.0)).name == "tiny-x2"
    assert "shipped" not in load_model(path, (2.0, 2.0, 2.0)).metadata


def test_a_relative_model_path_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tiny_model(tmp_path / "tiny-x2.safetensors")
    monkeypatch.chdir(tmp_path)
    assert load_model("tiny-x2.safetensors", (2.0, 2.0, 2.0)).name == "tiny-x2"


def test_a_model_path_with_the_wrong_scale_is_refused(tmp_path: Path) -> None:
    path = make_tiny_model(tmp_path / "tiny-x114.safetensors", scale=(1, 1, 4))
    with pytest.raises(ModelError, match="supports 1,1,4"):
        load_model(path, (2.0, 2.0, 2.0))


def test_a_missing_model_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors", (2.0, 2.0, 2.0))
    with pytest.raises(ModelError, match="does not exist"):
        load_model(f"models{os.sep}missing-folder-model", (2.0, 2.0, 2.0))


def test_default_prefers_the_model_marked_default_for_the_kind_of_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tiny_model(tmp_path / "a-plain.safetensors", scale=(1, 1, 4))
    make_tiny_model(tmp_path / "b-preferred.safetensors", scale=(1, 1, 4), extra={"default_for": ["anisotropic"]})
    monkeypatch.setattr(model_zoo, "WEIGHTS_FOLDER", tmp_path)
    assert resolve_model("default", (1.0, 1.0, 4.0)).name == "b-preferred"


def test_default_falls_back_to_any_model_supporting_the_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tiny_model(tmp_path / "a-x2.safetensors", scale=(2, 2, 2), extra={"default_for": ["isotropic"]})
    make_tiny_model(tmp_path / "b-x114.safetensors", scale=(1, 1, 4))
    monkeypatch.setattr(model_zoo, "WEIGHTS_FOLDER", tmp_path)
    assert resolve_model("default", (1.0, 1.0, 4.0)).name == "b-x114"
    assert resolve_model("default", (2.0, 2.0, 2.0)).name == "a-x2"
