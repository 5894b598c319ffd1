"""The shipped-model manifest ``weights/models.json`` (MRISuperResLib.engine.model_manifest): its schema, the files
it lists, the default it names per kind of scale, and how scripts/ship_model.py edits it."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import jsonschema
import pytest
from helpers import ROOT, make_tiny_model, write_catalogue

from MRISuperResLib.engine import model_zoo
from MRISuperResLib.engine.checkpoint import read_metadata
from MRISuperResLib.engine.model_manifest import (ManifestEntry, default_conflicts, mark_default, read_manifest,
                                                  write_manifest)
from MRISuperResLib.engine.model_metadata import ModelMetadata
from MRISuperResLib.engine.model_zoo import WEIGHTS_FOLDER, load_model, resolve_model
from MRISuperResLib.errors import ModelError


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_manifest_matches_its_schema() -> None:
    schema = json.loads((WEIGHTS_FOLDER / "models.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads((WEIGHTS_FOLDER / "models.json").read_text(encoding="utf-8")), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"models": [{"name": "x", "file": "x.safetensors", "sha256": "0" * 64, "scales": "any",
                                         "default_for": ["sideways"]}]}, schema)


def test_the_manifest_lists_every_shipped_file_with_its_checksum_scales_and_card() -> None:
    entries = read_manifest(WEIGHTS_FOLDER)
    assert {e.file for e in entries} == {p.name for p in WEIGHTS_FOLDER.glob("*.safetensors")}
    for entry in entries:
        path = WEIGHTS_FOLDER / entry.file
        assert sha256(path) == entry.sha256, f"{entry.file}: the manifest's SHA-256 is not the file's"
        metadata = ModelMetadata.from_header(read_metadata(path))
        assert metadata.name == entry.name
        assert (None if metadata.scales is None else tuple(metadata.scales)) == entry.scales
        assert entry.card and (WEIGHTS_FOLDER / entry.card).is_file()
    assert default_conflicts(entries) == []


def test_the_default_comes_from_the_manifest_not_from_a_flag_in_the_header(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tiny_model(tmp_path / "a-flagged.safetensors", extra={"default_for": ["isotropic"]})
    make_tiny_model(tmp_path / "b-listed.safetensors")
    write_catalogue(tmp_path, {"b-listed": ["isotropic"]})
    monkeypatch.setattr(model_zoo, "WEIGHTS_FOLDER", tmp_path)
    assert resolve_model("default", (2.0, 2.0, 2.0)).name == "b-listed"
    assert [e.default_for for e in model_zoo.shipped_models()] == [(), ("isotropic",)]


def test_two_defaults_for_the_same_kind_and_scale_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tiny_model(tmp_path / "a-x2.safetensors")
    make_tiny_model(tmp_path / "b-x2.safetensors", seed=1)
    write_catalogue(tmp_path)
    entries = [ManifestEntry(e.name, e.file, e.sha256, None, e.scales, ("isotropic",))
               for e in read_manifest(tmp_path)]
    with pytest.raises(ModelError, match="a-x2 and b-x2 are both marked default_for isotropic at scale 2"):
        write_manifest(tmp_path, entries)
    (tmp_path / "models.json").write_text(json.dumps({"models": [e.to_dict() for e in entries]}), encoding="utf-8")
    monkeypatch.setattr(model_zoo, "WEIGHTS_FOLDER", tmp_path)
    with pytest.raises(ModelError, match="a-x2 and b-x2 are all marked default_for isotropic .*ambiguous"):
        resolve_model("default", (2.0, 2.0, 2.0))
    assert resolve_model("b-x2", (2.0, 2.0, 2.0)).name == "b-x2"  # by name both still load


def test_marking_a_new_default_unmarks_only_the_model_it_replaces() -> None:
    def entry(name: str, scale: tuple[float, float, float] | None, kinds: tuple[str, ...]) -> ManifestEntry:
        return ManifestEntry(name, f"{name}.safetensors", "0" * 64, None, None if scale is None else (scale,), kinds)

    old = [entry("thick-x2", (1.0, 1.0, 2.0), ("anisotropic",)), entry("thick-x4", (1.0, 1.0, 4.0), ("anisotropic",)),
           entry("x2", (2.0, 2.0, 2.0), ("isotropic",)), entry("any", None, ("arbitrary",))]
    new, unmarked = mark_default(old, entry("new-x4", (4.0, 1.0, 1.0), ("anisotropic",)))
    assert unmarked == ["thick-x4"]
    assert {e.name: e.default_for for e in new} == {"thick-x2": ("anisotropic",), "thick-x4": (), "x2": ("isotropic",),
                                                    "any": ("arbitrary",), "new-x4": ("anisotropic",)}
    assert default_conflicts(new) == []
    _, unmarked = mark_default(old, entry("any-2", None, ("arbitrary", "isotropic")))
    assert unmarked == ["x2", "any"]


def test_a_shipped_file_that_does_not_match_its_manifest_checksum_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tiny_model(tmp_path / "tiny-x2.safetensors")
    write_catalogue(tmp_path, {"tiny-x2": ["isotropic"]})
    monkeypatch.setattr(model_zoo, "WEIGHTS_FOLDER", tmp_path)
    assert load_model("default", (2.0, 2.0, 2.0)).metadata.shipped
    data = json.loads((tmp_path / "models.json").read_text(encoding="utf-8"))
    data["models"][0]["sha256"] = "f" * 64
    (tmp_path / "models.json").write_text(json.dumps(data), encoding="utf-8")
    for model in ("default", "tiny-x2", tmp_path / "tiny-x2.safetensors"):
        with pytest.raises(ModelError, match="does not match its SHA-256 .*reinstall"):
            load_model(model, (2.0, 2.0, 2.0))


def test_a_missing_or_malformed_manifest_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_zoo, "WEIGHTS_FOLDER", tmp_path)
    with pytest.raises(ModelError, match="catalogue .*models.json is missing; reinstall"):
        model_zoo.shipped_models()
    make_tiny_model(tmp_path / "tiny-x2.safetensors")
    write_catalogue(tmp_path)
    data = json.loads((tmp_path / "models.json").read_text(encoding="utf-8"))
    data["models"][0]["default_for"] = ["sideways"]
    (tmp_path / "models.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ModelError, match="entry 1: 'default_for' 'sideways' is not one of isotropic"):
        model_zoo.list_models()
    data["models"][0]["default_for"] = []
    data["models"][0]["file"] = "gone.safetensors"
    (tmp_path / "models.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ModelError, match="gone.safetensors .* is missing; reinstall"):
        model_zoo.shipped_models()


def test_the_manifest_voxel_range_reaches_shipped_models_without_their_own() -> None:
    entries = read_manifest(WEIGHTS_FOLDER)
    assert all(entry.voxel_mm is not None and 0 < entry.voxel_mm[0] <= entry.voxel_mm[1] for entry in entries)
    entry = entries[0]
    assert ManifestEntry.from_dict(entry.to_dict(), "entry 1") == entry
    for bad in ([1.0], [1.0, 0.5], [0, 1.0], "1 mm", [True, True], [1.0, float("inf")]):
        with pytest.raises(ModelError, match="entry 1: 'voxel_mm' must be"):
            ManifestEntry.from_dict({**entry.to_dict(), "voxel_mm": bad}, "entry 1")
    for entry in entries:
        own = ModelMetadata.from_header(read_metadata(WEIGHTS_FOLDER / entry.file)).trained_voxel_mm
        loaded = load_model(entry.name, entry.scales[0])
        # a file's own record wins; the manifest's range fills in for files trained before they recorded it
        assert loaded.metadata.trained_voxel_mm == (own or entry.voxel_mm)
        if own is not None:
            assert own == pytest.approx(entry.voxel_mm)  # ship_model.py copies it into the manifest
        else:
            assert entry.voxel_mm == (0.9, 1.0)
            assert "trained on high-resolution voxels of 0.9-1 mm" in model_zoo.model_card_text(loaded.metadata)


def test_ship_model_lists_the_model_and_moves_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("ship_model", ROOT / "scripts" / "ship_model.py")
    ship_model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship_model)
    weights, runs = tmp_path / "weights", tmp_path / "runs"
    weights.mkdir()
    runs.mkdir()
    make_tiny_model(weights / "old-x2.safetensors")
    make_tiny_model(weights / "thick-x4.safetensors", scale=(1, 1, 4))
    write_catalogue(weights, {"old-x2": ["isotropic"], "thick-x4": ["anisotropic"]})
    trained = make_tiny_model(runs / "new-x2.safetensors", seed=3, extra={"default_for": ["anisotropic"]})
    monkeypatch.setattr(ship_model, "WEIGHTS_FOLDER", weights)
    monkeypatch.setattr(model_zoo, "WEIGHTS_FOLDER", weights)

    shipped = ship_model.ship(trained, ["isotropic"])
    assert shipped == weights / "new-x2.safetensors"
    listed = {e.name: e for e in read_manifest(weights)}
    assert {name: e.default_for for name, e in listed.items()} == {
        "new-x2": ("isotropic",), "old-x2": (), "thick-x4": ("anisotropic",)}
    assert listed["new-x2"].sha256 == sha256(shipped) and listed["new-x2"].card == "new-x2.md"
    header = read_metadata(shipped)
    assert "default_for" not in header and header["mask_background"] is True  # the default is the manifest's
    assert resolve_model("default", (2.0, 2.0, 2.0)).name == "new-x2"
    assert resolve_model("default", (1.0, 4.0, 1.0)).name == "thick-x4"


def test_recard_replaces_only_the_held_out_evaluation(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("ship_model", ROOT / "scripts" / "ship_model.py")
    ship_model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship_model)
    from MRISuperResLib.evaluation.evaluate import VolumeScores

    model = make_tiny_model(tmp_path / "tiny-x2.safetensors")
    model.with_suffix(".md").write_text("# Model card\n\nIntro.\n\n## Held-out evaluation\n\nOld table.\n\n"
                                        "## Trust\n\n- Threshold.\n\n## Limits\n\n- Card written earlier.\n")
    scores = [VolumeScores("a.nii.gz", 30.0, 28.0, 31.0, 29.0, 0.9, 0.85, 0.01, psnr_zerofill=28.5,
                           ssim_zerofill=0.86, condition="kspace, noise 0", noise=0.0)]
    text = ship_model.recard(model, {0.0: scores}, (2.0, 2.0, 2.0), "kspace", ["a.nii.gz"], "160,160,128")
    assert text.startswith("# Model card\n\nIntro.\n\n## Held-out evaluation\n") and "Old table." not in text
    assert "data-consistency projection on" in text and "--crop 160,160,128" in text
    assert "Gain over B-spline: mean +2.00 dB" in text
    assert text.index("## Trust") > text.index("### k-space noise 0") and "- Threshold." in text
    assert text.rstrip().endswith("by `scripts/ship_model.py --recard`.")
    model.with_suffix(".md").write_text(text)  # a second re-run replaces the first one's line
    again = ship_model.recard(model, {0.0: scores}, (2.0, 2.0, 2.0), "kspace", ["a.nii.gz"], "160,160,128")
    assert again.count("Held-out evaluation re-run") == 1 and again.count("## Held-out evaluation") == 1


def test_a_cards_acquisition_paragraph_names_gaps_only_when_drawn() -> None:
    spec = importlib.util.spec_from_file_location("ship_model", ROOT / "scripts" / "ship_model.py")
    ship_model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship_model)

    def paragraph(gap: list[float]) -> str:
        config = {"model": {"config": {"scale": [1, 1, 4]}},
                  "data": {"resimulate_every": 400, "acquisition": {"thick_profiles": ["box"], "gap": gap,
                                                                      "windows": ["none"]}}}
        return " ".join(ship_model._simulation_text({"config": config}))

    assert "box along thick axes, contiguous (no gap)" in paragraph([0.0, 0.0])
    assert "with gaps of 0-0.15 of the slice spacing" in paragraph([0.0, 0.15])
