"""The Training module's parameter node read as the engine's pairs and settings (slicer.training.parameters)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from MRISuperResLib.errors import InputError  # noqa: E402
from MRISuperResLib.slicer.training.parameters import (  # noqa: E402
    is_set,
    pairs_from_parameters,
    settings_from_parameters,
)


def _parameters(**changes) -> SimpleNamespace:
    """The defaults of MRISuperResTrainingParameterNode, with unset paths as Path("")."""
    values = dict(pairs=[], useDataFolder=False, dataFolder=Path(""), registrationMethod="SimpleITK",
                  preset="edsr3d-small", scale="1,1,4", degradation="kspace", noise=0.02, patchSize="24,24,12",
                  batchSize=4, steps=2000, validateEvery=200, learningRate=3e-4, l1Weight=1.0, perceptualWeight=0.5,
                  perceptualWeightsFile=Path(""), adversarialWeight=0.0, validationFraction=0.2, device="cpu",
                  modelName="  my-model ", outputFolder=Path("/tmp/models"))
    values.update(changes)
    return SimpleNamespace(**values)


def test_unset_paths_read_back_as_dot() -> None:
    assert not is_set(Path("")) and not is_set("") and is_set(Path("/data")) and is_set("weights.safetensors")


def test_settings_carry_every_parameter(tmp_path: Path) -> None:
    settings = settings_from_parameters(_parameters())
    assert settings.name == "my-model" and settings.output_folder == Path("/tmp/models")
    assert (settings.preset, settings.degradation, settings.device) == ("edsr3d-small", "kspace", "cpu")
    assert settings.patch_size == (24, 24, 12) and settings.batch_size == 4
    assert (settings.steps, settings.validate_every, settings.learning_rate) == (2000, 200, 3e-4)
    assert (settings.l1, settings.perceptual, settings.adversarial) == (1.0, 0.5, 0.0)
    assert settings.perceptual_weights is None and settings.validation_fraction == 0.2
    weights = tmp_path / "vgg.safetensors"
    assert settings_from_parameters(_parameters(perceptualWeightsFile=weights)).perceptual_weights == weights
    with pytest.raises(InputError, match="patch size"):
        settings_from_parameters(_parameters(patchSize="24,12"))


def test_pairs_are_the_rows_then_the_data_folder(tmp_path: Path) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.zeros((6, 6, 6), np.float32))
    (tmp_path / "low").mkdir()
    for path in (tmp_path / "a.nrrd", tmp_path / "b.nrrd", tmp_path / "low" / "b.nrrd"):
        sitk.WriteImage(image, str(path))
    rows = [SimpleNamespace(highResVolume="high0", lowResVolume=None, validation=True),
            SimpleNamespace(highResVolume="high1", lowResVolume="low1", validation=False)]
    pairs = pairs_from_parameters(_parameters(pairs=rows, dataFolder=tmp_path))
    assert [(p.high, p.low, p.validation) for p in pairs] == [("high0", None, True), ("high1", "low1", False)]
    pairs = pairs_from_parameters(_parameters(pairs=rows, useDataFolder=True, dataFolder=tmp_path))
    assert [p.high for p in pairs[2:]] == [(tmp_path / "a.nrrd").resolve(), (tmp_path / "b.nrrd").resolve()]
    assert pairs[2].low is None and pairs[3].low == (tmp_path / "low" / "b.nrrd").resolve()
    assert len(pairs_from_parameters(_parameters(pairs=rows, useDataFolder=True))) == 2  # no folder chosen
