"""Training configuration composition: ``base:`` names a config file that the file extends."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import ROOT
from MRISuperResLib.training.config import ConfigError, load_config


def write(path: Path, values: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def test_a_config_extends_its_base_recursively_and_the_child_wins(tmp_path: Path) -> None:
    write(tmp_path / "common" / "root.yaml", {
        "name": "root", "seed": 1,
        "data": {"train": ["a.nii.gz", "b.nii.gz"], "patch_size": [20, 20, 20],
                 "degradation": {"kind": "kspace", "noise": [0.0, 0.02], "bias": 0.05}},
        "optim": {"lr": 0.001, "schedule": "cosine"},
    })
    write(tmp_path / "common" / "middle.yaml", {"base": "root.yaml", "seed": 2, "optim": {"lr": 0.0005}})
    child = write(tmp_path / "child.yaml", {
        "base": "common/middle.yaml", "name": "child",
        "data": {"train": ["c.nii.gz"], "degradation": {"noise": [0.0, 0.03]}},
    })
    config = load_config(child)
    assert (config.name, config.seed) == ("child", 2)
    assert config.optim.lr == 0.0005 and config.optim.schedule == "cosine"  # mappings merge key by key
    assert config.data.train == ["c.nii.gz"]  # lists are replaced, not appended
    assert config.data.patch_size == [20, 20, 20]
    assert config.data.degradation == {"kind": "kspace", "noise": [0.0, 0.03], "bias": 0.05}
    assert config.base_dir == tmp_path.resolve()  # paths are taken from the folder of the file given
    assert "base" not in config.to_dict()


def test_a_cycle_or_a_missing_base_is_a_clear_error(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", {"base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match=r"config bases form a cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_config(tmp_path / "a.yaml")
    write(tmp_path / "self.yaml", {"base": "self.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "self.yaml")
    write(tmp_path / "orphan.yaml", {"base": "gone.yaml"})
    with pytest.raises(ConfigError, match=r"gone\.yaml \(the base of .*orphan\.yaml\) does not exist"):
        load_config(tmp_path / "orphan.yaml")
    write(tmp_path / "listed.yaml", {"base": ["a.yaml"]})
    with pytest.raises(ConfigError, match="must be the file name of another config"):
        load_config(tmp_path / "listed.yaml")


#: What each stage of configs/default_x2*.yaml changes from stage 1 (as written out in full before they used base:).
STAGES = {
    2: {"seed": 1, "lr": 0.0005, "steps": 1000, "validate_every": 250, "threads": 2, "crop": 48, "noise": 0.02,
        "init_from": "edsr3d-x2-brain"},
    3: {"seed": 2, "lr": 0.0005, "steps": 4200, "validate_every": 300, "threads": 1, "crop": 64, "noise": 0.02,
        "init_from": "edsr3d-x2-brain-stage2"},
    4: {"seed": 3, "lr": 0.0005, "steps": 3400, "validate_every": 300, "threads": 1, "crop": 64, "noise": 0.02,
        "init_from": "edsr3d-x2-brain-stage3"},
    5: {"seed": 5, "lr": 0.0004, "steps": 3400, "validate_every": 300, "threads": 1, "crop": 64, "noise": 0.03,
        "init_from": "edsr3d-x2-brain-stage4"},
}


def test_the_staged_default_configs_resolve_to_their_recipes() -> None:
    first = load_config(ROOT / "configs" / "default_x2.yaml")
    for number, change in STAGES.items():
        path = ROOT / "configs" / f"default_x2_stage{number}.yaml"
        assert "base:" in path.read_text(), path
        config = load_config(path)
        expected = first.to_dict()
        expected.update(output_dir=f"runs/edsr3d-x2-brain-stage{number}", seed=change["seed"])
        expected["model"]["init_from"] = f"../runs/{change['init_from']}/edsr3d-x2-brain.safetensors"
        expected["data"]["validation_crop"] = [change["crop"]] * 3
        expected["data"]["degradation"]["noise"] = [0.0, change["noise"]]
        expected["optim"]["lr"] = change["lr"]
        expected["run"].update(steps=change["steps"], validate_every=change["validate_every"],
                               threads=change["threads"])
        assert config.to_dict() == expected, path
        assert config.base_dir == first.base_dir


def test_a_base_that_is_not_a_mapping_or_is_a_folder_is_refused_in_one_line(tmp_path) -> None:
    (tmp_path / "listed.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "child.yaml").write_text("base: listed.yaml\nseed: 2\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "folder.yaml").write_text("base: sub\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections, got list"):
        load_config(tmp_path / "child.yaml")
    with pytest.raises(ConfigError, match="is a folder, not a config file"):
        load_config(tmp_path / "folder.yaml")
