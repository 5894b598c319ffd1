"""N4 as seed 002 runs it: settings from a config, one and two passes, and the ``mrisuperres n4`` verb."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from MRISuperResLib.cli import app as cli
from MRISuperResLib.errors import InputError
from MRISuperResLib.processing.n4 import SEED_002, N4Settings, n4_bias_field, n4_correct, parse_iterations
from MRISuperResLib.training.config import ConfigError, config_from_dict
from MRISuperResLib.processing.masks import foreground_mask
from MRISuperResLib.imaging.volume_io import read_volume, write_volume
from helpers import coefficient_of_variation, smooth_bias


@pytest.fixture(scope="module")
def biased(small_real_volume):
    bias = smooth_bias(small_real_volume.grid)
    return small_real_volume, small_real_volume.with_array((small_real_volume.array * bias).astype(np.float32)), bias


@pytest.mark.parametrize("settings", [
    N4Settings(shrink=3, mask="none", iterations=(30, 30, 20)),
    N4Settings(shrink=3, mask="otsu", two_pass=True, second_mask="head", iterations=(30, 30, 20)),
    N4Settings(shrink=3, mask="otsu", two_pass=True, second_mask="brain", iterations=(20, 20, 20)),
])
def test_one_and_two_passes_remove_a_known_field(biased, settings):
    clean, volume, bias = biased
    brain = foreground_mask(clean)
    white = brain & (clean.array > np.percentile(clean.array[brain], 75))
    result = n4_correct(volume, settings)
    assert len(result.masks) == len(result.seconds) == (2 if settings.two_pass else 1)
    before = coefficient_of_variation(volume.array[white])
    after = coefficient_of_variation(result.corrected.array[white])
    assert after < before / 2.5, (before, after)
    inside = brain & (clean.array > 0)
    recovered = np.log(result.field.array[inside])
    assert np.corrcoef(recovered, np.log(bias[inside]))[0, 1] > 0.9
    assert np.array_equal(volume.array, (clean.array * bias).astype(np.float32))  # input untouched


def test_settings_from_config_and_errors():
    assert N4Settings.from_config(False) is None and N4Settings.from_config(True) == N4Settings()
    settings = N4Settings.from_config({"shrink": 2, "iterations": [150, 150], "mask": "head", "two_pass": True})
    assert settings.iterations == (150, 150) and settings.to_dict()["iterations"] == [150, 150]
    with pytest.raises(ValueError, match="unknown n4 key"):
        N4Settings.from_config({"shrinkfactor": 2})
    with pytest.raises(ValueError, match="mask must be one of"):
        N4Settings(mask="skull")
    assert parse_iterations("150x4") == (150,) * 4 == SEED_002.iterations
    config = config_from_dict({"data": {"n4": {"shrink": 2, "convergence": 1e-6, "two_pass": True}}})
    assert config.data.n4["shrink"] == 2
    with pytest.raises(ConfigError, match="data.n4"):
        config_from_dict({"data": {"n4": {"iterations": []}}})


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_n4_verb_writes_corrected_volume_and_field_and_never_the_input(biased, tmp_path, capsys):
    _, volume, _ = biased
    source = write_volume(volume, tmp_path / "t1.nii.gz")
    before = digest(source)
    code = cli.main(["n4", str(source), "-o", str(tmp_path / "t1_n4.nrrd"), "--field", str(tmp_path / "bias.nii.gz"),
                     "--shrink", "3", "--two-pass", "--iterations", "20x3"])
    assert code == 0
    assert "bias field" in capsys.readouterr().out
    corrected, field = read_volume(tmp_path / "t1_n4.nrrd"), read_volume(tmp_path / "bias.nii.gz")
    assert corrected.grid.same_geometry(volume.grid)
    assert np.allclose(corrected.array * field.array, volume.array, rtol=1e-4, atol=1e-3)
    assert corrected.metadata.get("MRISuperRes.role") == "n4_corrected"
    assert digest(source) == before
    # Bad input: one line, exit 1, nothing written.
    for argv, message in [
        (["n4", str(source), "-o", str(source), "--overwrite"], "which is the input"),
        (["n4", str(source), "-o", str(tmp_path / "t1_n4.nrrd")], "already exists"),
        (["n4", str(source), "-o", str(tmp_path / "x.nii.gz"), "--mask", "nothing.nii.gz"], "neither"),
    ]:
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    negative = write_volume(volume.with_array(volume.array - 50), tmp_path / "neg.nii.gz")
    assert cli.main(["n4", str(negative), "-o", str(tmp_path / "neg_n4.nii.gz")]) == 1
    assert "non-negative" in capsys.readouterr().err
    assert not (tmp_path / "x.nii.gz").exists() and not (tmp_path / "neg_n4.nii.gz").exists()
    assert not list(tmp_path.glob(".mrisuperres-partial-*"))


def test_mask_verb_writes_a_mask_or_the_masked_volume(biased, tmp_path, capsys):
    clean, _, _ = biased
    source = write_volume(clean, tmp_path / "t1.nii.gz")
    assert cli.main(["mask", str(source), "-o", str(tmp_path / "m.nii.gz"), "--kind", "head"]) == 0
    mask = read_volume(tmp_path / "m.nii.gz")
    assert set(np.unique(mask.array)) == {0, 1} and mask.grid.same_geometry(clean.grid)
    assert cli.main(["mask", str(source), "-o", str(tmp_path / "b.nii.gz"), "--apply"]) == 0
    masked = read_volume(tmp_path / "b.nii.gz").array
    assert np.array_equal(masked[masked != 0], clean.array[masked != 0])
    assert "mL" in capsys.readouterr().out


def test_n4_removes_a_smooth_multiplicative_bias(small_real_volume):
    volume = small_real_volume
    bias = smooth_bias(volume.grid)
    biased = volume.with_array((volume.array * bias).astype(np.float32))
    brain = foreground_mask(volume)
    white_matter = brain & (volume.array > np.percentile(volume.array[brain], 75))

    corrected = n4_correct(biased, N4Settings(shrink=3), mask=foreground_mask(biased)).corrected
    assert corrected.grid.same_geometry(volume.grid) and corrected.array.dtype == np.float32
    before = coefficient_of_variation(biased.array[white_matter])
    after = coefficient_of_variation(corrected.array[white_matter])
    assert after < before / 3, (before, after)
    assert after < 1.5 * coefficient_of_variation(volume.array[white_matter])

    # The fitted field follows the true one (up to a constant factor) inside the brain.
    inside = brain & (volume.array > 0)
    residual = np.log(biased.array[inside] / corrected.array[inside]) - np.log(bias[inside])
    assert residual.std() < 0.5 * np.log(bias[inside]).std()
    assert np.array_equal(biased.array, (volume.array * bias).astype(np.float32))  # the input is not modified


def test_n4_bias_field_is_smooth_and_positive(small_real_volume):
    field = n4_bias_field(small_real_volume, shrink=4, iterations=(20, 20)).array
    assert field.shape == small_real_volume.shape and field.min() > 0
    assert np.abs(np.diff(np.log(field), axis=0)).max() < 0.05  # under 5 % per 4 mm voxel


def test_n4_refuses_negative_intensities_and_empty_masks(small_real_volume):
    with pytest.raises(InputError, match="non-negative"):
        n4_correct(small_real_volume.with_array(small_real_volume.array - 10.0))
    with pytest.raises(InputError, match="empty mask"):
        n4_correct(small_real_volume, mask=np.zeros(small_real_volume.shape, bool))
