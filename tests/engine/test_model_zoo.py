"""Shipped models and choosing a model by name, path or scale (MRISuperResLib.engine.model_zoo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import make_tiny_model, manifest_default, write_catalogue

from MRISuperResLib.engine import model_zoo
from MRISuperResLib.errors import ModelError, MRISuperResError
from MRISuperResLib.engine.model_zoo import WEIGHTS_FOLDER, load_model, resolve_model, shipped_models


def test_shipped_models_have_metadata() -> None:
    entries = shipped_models()
    assert entries
    for entry in entries:
        assert entry.path.parent == WEIGHTS_FOLDER
        assert entry.metadata.family == "edsr3d"
        assert entry.metadata.weights_sha256
        assert entry.metadata.scales
        assert entry.name == entry.metadata.name
    assert [e.name for e in entries] == sorted(e.name for e in entries)


def test_default_for_isotropic_x2_is_a_shipped_model() -> None:
    entry = resolve_model("default", (2.0, 2.0, 2.0))
    assert entry.path.parent == WEIGHTS_FOLDER
    assert entry.supports((2.0, 2.0, 2.0))
    assert entry.name in {e.name for e in shipped_models()}


def test_shipped_default_loads_and_is_marked_shipped() -> None:
    loaded = load_model("default", (2.0, 2.0, 2.0))
    assert loaded.metadata.shipped is True
    assert loaded.residual_to_baseline


def test_shipped_model_loads_by_its_name() -> None:
    name = shipped_models()[0].name
    assert load_model(name, shipped_models()[0].metadata.scales[0]).name == name


def test_load_takes_the_scale_as_text_or_one_number_like_the_command_line() -> None:
    assert load_model("default", "1,1,4").name == load_model("default", (1.0, 1.0, 4.0)).name
    assert load_model("default", 2).name == manifest_default((2.0, 2.0, 2.0))
    with pytest.raises(MRISuperResError, match="is not understood"):
        load_model("default", "1,4")


def test_load_with_a_scale_the_model_cannot_do_names_the_supported_scales() -> None:
    entry = resolve_model("default", (2.0, 2.0, 2.0))
    with pytest.raises(ModelError, match=r"cannot do scale 1,1,4; it supports 2\b"):
        load_model(entry.name, (1.0, 1.0, 4.0))


def test_default_without_a_shipped_model_for_the_scale_lists_shipped_scales() -> None:
    with pytest.raises(ModelError, match=rf"no shipped model does scale 7.*{manifest_default((2.0, 2.0, 2.0))} \(2\)"):
        load_model("default", (7.0, 7.0, 7.0))


def test_default_picks_the_x2_brain_model_or_the_thick_slice_model_by_scale() -> None:
    for scale in [(2.0, 2.0, 2.0), (1.0, 1.0, 4.0), (1.0, 1.0, 2.0), (2.0, 1.0, 1.0), (1.0, 3.0, 1.0), (5.0, 1.0, 1.0)]:
        assert resolve_model("default", scale).name == manifest_default(scale)
    for entry in shipped_models():
        assert entry.metadata.mask_background is True and not entry.metadata.untrained
        assert entry.metadata.consistency["threshold"] > 0
        card = entry.path.with_suffix(".md").read_text()
        assert "## Held-out evaluation" in card and "mrisuperres train --config configs/" in card


@pytest.mark.parametrize(
    ("scale", "expected"),
    [((1.0, 1.0, 4.0), (0, 1, 2)), ((4.0, 1.0, 1.0), (1, 2, 0)), ((1.0, 4.0, 1.0), (0, 2, 1)), ((2.0, 2.0, 2.0), None),
     ((1.0, 1.0, 3.0), None)],
)
def test_axis_order_moves_the_thick_axis_to_where_the_model_expects_it(scale, expected) -> None:
    order = model_zoo.axis_order([(1.0, 1.0, 4.0)], scale)
    assert order == expected
    if order is not None:
        assert tuple(scale[a] for a in order) == (1.0, 1.0, 4.0)


def test_axis_order_is_the_identity_for_models_of_any_scale_and_for_supported_scales() -> None:
    assert model_zoo.axis_order(None, (1.0, 3.0, 1.5)) == (0, 1, 2)
    assert model_zoo.axis_order([(2.0, 2.0, 2.0)], (2.0, 2.0, 2.0)) == (0, 1, 2)


def test_default_restores_thick_slices_along_any_axis_with_the_thick_slice_model() -> None:
    for scale in [(4.0, 1.0, 1.0), (1.0, 4.0, 1.0)]:
        entry = resolve_model("default", scale)
        assert entry.name == manifest_default((1.0, 1.0, 4.0)) and entry.supports(scale)


def test_unknown_model_name_lists_the_shipped_names() -> None:
    names = [e.name for e in shipped_models()]
    with pytest.raises(ModelError, match="unknown model 'no-such-model'") as error:
        load_model("no-such-model", (2.0, 2.0, 2.0))
    assert all(name in str(error.value) for name in names)


def test_a_model_path_loads_as_path_and_as_text(tmp_path: Path) -> None:
    path = make_tiny_model(tmp_path / "tiny-x2.safetensors")
    assert load_model(path, (2.0, 2.0, 2.0)).path == path
    assert load_model(str(path), (2.0, 2.0, 2.0)).name == "tiny-x2"
    assert not load_model(path, (2.0, 2.0, 2.0)).metadata.shipped


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
    make_tiny_model(tmp_path / "b-preferred.safetensors", scale=(1, 1, 4))
    write_catalogue(tmp_path, {"b-preferred": ["anisotropic"]})
    monkeypatch.setattr(model_zoo, "WEIGHTS_FOLDER", tmp_path)
    assert resolve_model("default", (1.0, 1.0, 4.0)).name == "b-preferred"


def test_default_falls_back_to_any_model_supporting_the_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tiny_model(tmp_path / "a-x2.safetensors", scale=(2, 2, 2))
    make_tiny_model(tmp_path / "b-x114.safetensors", scale=(1, 1, 4))
    write_catalogue(tmp_path, {"a-x2": ["isotropic"]})
    monkeypatch.setattr(model_zoo, "WEIGHTS_FOLDER", tmp_path)
    assert resolve_model("default", (1.0, 1.0, 4.0)).name == "b-x114"
    assert resolve_model("default", (2.0, 2.0, 2.0)).name == "a-x2"


# ------------------------------------------------------------------------------------------------ user models
@pytest.fixture()
def user_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private settings folder and no model path from the environment."""
    monkeypatch.setenv(model_zoo.CONFIG_DIR_VARIABLE, str(tmp_path / "settings"))
    monkeypatch.delenv(model_zoo.MODEL_PATH_VARIABLE, raising=False)
    return tmp_path / "settings"


def test_models_in_the_environment_folders_are_listed_and_load_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_settings: Path
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    make_tiny_model(first / "mine-x2.safetensors", description="my own x2 model")
    make_tiny_model(second / "thick.safetensors", scale=(1, 1, 4))
    monkeypatch.setenv(model_zoo.MODEL_PATH_VARIABLE, os.pathsep.join([str(first), str(tmp_path / "absent"),
                                                                       str(second)]))
    entries = model_zoo.list_models()
    shipped = [e.name for e in shipped_models()]
    assert [e.name for e in entries] == [*shipped, "mine-x2", "thick"]
    mine = entries[len(shipped)]
    assert mine.source == "user" and mine.description == "my own x2 model" and mine.scales_text() == "2"
    assert all(e.source == "shipped" for e in entries[: len(shipped)])
    assert load_model("mine-x2", (2.0, 2.0, 2.0)).path == first / "mine-x2.safetensors"
    assert resolve_model("thick", (1.0, 1.0, 4.0)).path == second / "thick.safetensors"
    # "default" stays a shipped model, whatever the user adds.
    assert resolve_model("default", (2.0, 2.0, 2.0)).source == "shipped"
    with pytest.raises(ModelError, match="use one of: .*mine-x2.*thick"):
        load_model("nothing-like-it", (2.0, 2.0, 2.0))


def test_registered_folders_persist_once_each_and_can_be_forgotten(tmp_path: Path, user_settings: Path) -> None:
    folder = tmp_path / "trained"
    folder.mkdir()
    make_tiny_model(folder / "trained-x2.safetensors")
    assert model_zoo.registered_model_folders() == []
    assert model_zoo.register_model_folder(folder) == folder.resolve()
    model_zoo.register_model_folder(str(folder) + os.sep)
    assert model_zoo.registered_model_folders() == [folder.resolve()]
    assert (user_settings / model_zoo.MODEL_FOLDERS_FILE).is_file()
    assert [e.name for e in model_zoo.user_models()] == ["trained-x2"]
    assert model_zoo.unregister_model_folder(folder) and not model_zoo.unregister_model_folder(folder)
    assert model_zoo.user_models() == []
    assert (folder / "trained-x2.safetensors").is_file()


def test_bad_files_and_taken_names_are_skipped_and_still_load_by_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_settings: Path
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "broken.safetensors").write_bytes(b"not a model at all")
    shipped_name = shipped_models()[0].name
    make_tiny_model(folder / "impostor.safetensors")
    from MRISuperResLib.engine.checkpoint import load_model_file, save_model

    loaded = load_model_file(folder / "impostor.safetensors")
    save_model(loaded.network, folder / "impostor.safetensors", name=shipped_name, family="edsr3d",
               config=loaded.metadata.config)
    make_tiny_model(folder / "fine.safetensors")
    model_zoo.register_model_folder(folder)
    assert [e.name for e in model_zoo.user_models()] == ["fine"]
    assert resolve_model(shipped_name, (2.0, 2.0, 2.0)).source == "shipped"
    assert load_model(folder / "impostor.safetensors", (2.0, 2.0, 2.0)).name == shipped_name
    with pytest.raises(ModelError, match="corrupted"):
        load_model(folder / "broken.safetensors", (2.0, 2.0, 2.0))


def test_a_model_card_is_read_beside_the_file_or_written_from_the_metadata(tmp_path: Path,
                                                                          user_settings: Path) -> None:
    path = make_tiny_model(tmp_path / "carded.safetensors", description="tiny test model",
                           metrics={"validation": {"psnr": 31.5, "ssim": 0.9, "baseline_psnr": 30.0}},
                           training={"steps": 40, "best_step": 20, "train": ["a", "b"], "validation": ["c"]})
    model_zoo.register_model_folder(tmp_path)
    entry = model_zoo.user_models()[0]
    assert entry.card_path is None
    generated = entry.card()
    assert generated.startswith("# carded\n") and "tiny test model" in generated
    assert "validation PSNR 31.50 dB (B-spline 30.00 dB, +1.50 dB)" in generated
    assert "40 steps (best at step 20) on 2 training, 1 validation subjects" in generated
    card = model_zoo.write_model_card(path)
    assert card == tmp_path / "carded.md" and entry.card_path == card and entry.card() == generated
    card.write_text("# hand-written card\n")
    assert entry.card() == "# hand-written card\n"
    assert "AI-generated" in model_zoo.model_card_text(shipped_models()[0].metadata)
