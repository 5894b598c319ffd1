"""The safetensors model file format (MRISuperResLib.engine.checkpoint)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from helpers import make_tiny_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from MRISuperResLib import models
from MRISuperResLib.engine import checkpoint
from MRISuperResLib.engine.checkpoint import load_model_file, read_metadata, save_model, weights_checksum
from MRISuperResLib.errors import ModelError


@pytest.fixture()
def no_torch_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any unpickling through torch.load fail the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load must never be called on a model file")

    monkeypatch.setattr(torch, "load", refuse)


def header_and_data_offset(path: Path) -> tuple[dict, int]:
    """The safetensors JSON header and the offset where tensor data start."""
    raw = path.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + length]), 8 + length


def rewrite_metadata(source: Path, target: Path, change) -> Path:
    """Copy ``source``'s tensors to ``target`` with its MRISuperRes metadata passed through ``change``."""
    with safe_open(str(source), framework="pt") as handle:
        header = dict(handle.metadata())
    metadata = json.loads(header["metadata"])
    change(metadata)
    header["metadata"] = json.dumps(metadata)
    save_file(load_file(str(source)), str(target), metadata=header)
    return target


def test_saved_model_reloads_with_identical_outputs_and_metadata(tmp_path: Path) -> None:
    path = make_tiny_model(tmp_path / "tiny.safetensors", scale=(1, 2, 3), description="a test model")
    loaded = load_model_file(path)
    torch.manual_seed(0)  # make_tiny_model's seed: rebuilds the same random network independently
    reference = models.create("edsr3d", **loaded.metadata.config)
    torch.nn.init.normal_(reference.tail.conv.weight, std=0.05)
    reference.eval()
    x = torch.rand(1, 1, 6, 5, 4)
    with torch.inference_mode():
        assert torch.equal(loaded.network(x), reference(x))
    assert loaded.metadata.family == "edsr3d"
    assert loaded.metadata.config["scale"] == [1, 2, 3]
    assert loaded.metadata.config["channels"] == 8
    assert loaded.metadata.to_header()["scales"] == [[1.0, 2.0, 3.0]]
    assert loaded.metadata.scales == [(1.0, 2.0, 3.0)]
    assert loaded.metadata.description == "a test model"
    assert loaded.name == "tiny"
    assert loaded.residual_to_baseline
    assert not loaded.network.training
    assert len(loaded.file_sha256) == 64


def test_save_then_load_keeps_every_weight_exactly(tmp_path: Path) -> None:
    path = make_tiny_model(tmp_path / "tiny.safetensors")
    loaded = load_model_file(path)
    stored = load_file(str(path))
    for name, tensor in loaded.network.state_dict().items():
        assert torch.equal(tensor, stored[name])
    assert loaded.metadata.weights_sha256 == weights_checksum(stored)
    assert loaded.metadata.parameters == sum(p.numel() for p in loaded.network.parameters())


def test_save_refuses_other_extensions(tmp_path: Path) -> None:
    network = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=".safetensors"):
        save_model(network, tmp_path / "model.pt", name="m", family="edsr3d", config={})
    assert list(tmp_path.iterdir()) == []


def test_save_leaves_no_partial_file(tmp_path: Path) -> None:
    make_tiny_model(tmp_path / "tiny.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]


@pytest.mark.parametrize("name", ["model.safetensors", "model.pt"])
@pytest.mark.parametrize("zip_format", [True, False])
def test_pickled_checkpoint_is_refused_without_unpickling(tmp_path: Path, no_torch_load, name: str,
                                                          zip_format: bool) -> None:
    path = tmp_path / name
    torch.save({"weight": torch.zeros(3)}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(ModelError, match="pickle"):
        load_model_file(path)
    with pytest.raises(ModelError, match="pickle"):
        read_metadata(path)


def test_missing_model_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_model_file(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("keep", [0, 4, 20, 0.5, 0.999])
def test_truncated_model_file_is_refused_as_corrupted(tmp_path: Path, keep: float) -> None:
    path = make_tiny_model(tmp_path / "tiny.safetensors")
    raw = path.read_bytes()
    size = int(len(raw) * keep) if isinstance(keep, float) else keep
    path.write_bytes(raw[:size])
    with pytest.raises(ModelError, match="corrupted"):
        load_model_file(path)


def test_garbage_model_file_is_refused_as_corrupted(tmp_path: Path) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + bytes(64))
    with pytest.raises(ModelError, match="corrupted"):
        load_model_file(path)


def test_flipped_bytes_in_the_weights_fail_the_checksum(tmp_path: Path) -> None:
    path = make_tiny_model(tmp_path / "tiny.safetensors")
    _header, offset = header_and_data_offset(path)
    raw = bytearray(path.read_bytes())
    assert len(raw) - offset > 100
    middle = offset + (len(raw) - offset) // 2
    raw[middle : middle + 4] = bytes(b ^ 0xFF for b in raw[middle : middle + 4])
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="checksum"):
        load_model_file(path)


def test_metadata_config_that_does_not_match_the_weights_is_refused(tmp_path: Path) -> None:
    source = make_tiny_model(tmp_path / "tiny.safetensors")

    def widen(metadata: dict) -> None:
        metadata["config"]["channels"] = 16

    path = rewrite_metadata(source, tmp_path / "widened.safetensors", widen)
    with pytest.raises(ModelError, match="does not match"):
        load_model_file(path)


def test_metadata_config_the_family_cannot_build_is_refused(tmp_path: Path) -> None:
    source = make_tiny_model(tmp_path / "tiny.safetensors")

    def break_config(metadata: dict) -> None:
        metadata["config"]["dropout"] = 0.5

    path = rewrite_metadata(source, tmp_path / "broken.safetensors", break_config)
    with pytest.raises(ModelError, match="cannot build"):
        load_model_file(path)


def test_metadata_with_unknown_family_is_refused(tmp_path: Path) -> None:
    source = make_tiny_model(tmp_path / "tiny.safetensors")
    path = rewrite_metadata(source, tmp_path / "alien.safetensors", lambda m: m.update(family="srgan"))
    with pytest.raises(ModelError, match="srgan"):
        load_model_file(path)


def test_plain_safetensors_file_without_mrisuperres_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(ModelError, match="without MRISuperRes metadata"):
        load_model_file(path)


def test_unreadable_metadata_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path),
              metadata={"format": checkpoint.FORMAT_NAME, "format_version": "1", "metadata": "{oops"})
    with pytest.raises(ModelError, match="unreadable metadata"):
        load_model_file(path)


def test_weights_checksum_depends_on_names_values_and_shapes() -> None:
    state = {"a": torch.arange(6, dtype=torch.float32), "b": torch.ones(2)}
    base = weights_checksum(state)
    assert weights_checksum(dict(reversed(list(state.items())))) == base
    assert weights_checksum({"a": state["a"].view(2, 3), "b": state["b"]}) != base
    assert weights_checksum({"c": state["a"], "b": state["b"]}) != base
    changed = state["a"].clone()
    changed[3] += 1e-3
    assert weights_checksum({"a": changed, "b": state["b"]}) != base
