"""Typed model metadata (MRISuperResLib.engine.model_metadata): attributes for the keys the engine reads, and
an exact round trip to the header's JSON for every key, known or not."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
from helpers import make_tiny_model

from MRISuperResLib.engine.checkpoint import load_model_file, read_metadata, save_model
from MRISuperResLib.engine.model_metadata import ModelMetadata
from MRISuperResLib.engine.model_zoo import WEIGHTS_FOLDER
from MRISuperResLib.errors import ModelError


@pytest.mark.parametrize("path", sorted(WEIGHTS_FOLDER.glob("*.safetensors")), ids=lambda p: p.stem)
def test_shipped_headers_round_trip_exactly(path: Path) -> None:
    header = read_metadata(path)
    metadata = ModelMetadata.from_header(header)
    assert json.dumps(metadata.to_header()) == json.dumps(header)  # same keys, order and JSON values
    assert json.dumps(copy.deepcopy(metadata).to_header()) == json.dumps(header)
    assert metadata.family == "edsr3d" and metadata.scales and metadata.consistency_threshold > 0
    typed = {f.name for f in dataclasses.fields(ModelMetadata)}
    # Keys the engine does not read (e.g. the old default flag of the older files) are kept, and only those.
    assert set(metadata.extra) == set(header) - typed


def test_unknown_keys_survive_a_change_and_absent_keys_are_not_invented() -> None:
    header = {"name": "mine", "site": {"scanner": "X", "field_T": 3}, "scales": [[2, 2, 2]], "mine_only": [1, 2]}
    metadata = ModelMetadata.from_header(header)
    assert metadata.scales == [(2.0, 2.0, 2.0)] and metadata.min_input_size == 1 and not metadata.mask_background
    assert metadata.extra == {"site": {"scanner": "X", "field_T": 3}, "mine_only": [1, 2]}
    assert metadata.to_header() == header and list(metadata.to_header()) == list(header)
    metadata.description = "changed"
    metadata.extra["added"] = True
    assert metadata.to_header() == {**header, "description": "changed", "added": True}
    assert ModelMetadata.from_header({"scales": "any"}).to_header() == {"scales": "any"}
    assert ModelMetadata(name="n").to_header() == {"name": "n"}
    with pytest.raises(ValueError, match="'scales' is unreadable"):
        ModelMetadata.from_header({"scales": [[2, 2]]})


def test_a_users_own_keys_survive_loading_and_saving_again(tmp_path: Path) -> None:
    path = make_tiny_model(tmp_path / "mine.safetensors", extra={"site": "hospital A", "protocol": {"TR": 2.3}})
    loaded = load_model_file(path)
    assert loaded.metadata.extra == {"site": "hospital A", "protocol": {"TR": 2.3}}
    header = loaded.metadata.to_header()
    assert header == read_metadata(path)
    standard = {"name", "family", "config", "description", "normalization", "degradation", "training", "metrics"}
    again = save_model(loaded.network, tmp_path / "again.safetensors", name="again", family=loaded.metadata.family,
                       config=loaded.metadata.config, extra={k: v for k, v in header.items() if k not in standard})
    assert load_model_file(again).metadata.extra == {"site": "hospital A", "protocol": {"TR": 2.3}}


def test_a_model_file_with_unreadable_scales_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = make_tiny_model(tmp_path / "tiny.safetensors")
    header = read_metadata(path)
    header["scales"] = [["two"]]
    meta = {"format": "mrisuperres-model", "format_version": "1", "metadata": json.dumps(header)}
    save_file(load_file(str(path)), str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ModelError, match="unreadable metadata"):
        load_model_file(tmp_path / "bad.safetensors")
