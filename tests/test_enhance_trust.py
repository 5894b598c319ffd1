"""Trust outputs of enhance: the test-time flip ensemble's uncertainty map and background masking."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import make_tiny_model

from MRISuperResLib.checkpoint import load_model_file
from MRISuperResLib.cli import main
from MRISuperResLib.enhance import enhance_volume
from MRISuperResLib.volume import Volume
from MRISuperResLib.volume_io import read_volume, write_volume


def test_flip_ensemble_gives_mean_and_spread(small_real_volume: Volume, tiny_model: Path) -> None:
    model = load_model_file(tiny_model)
    single = enhance_volume(small_real_volume, model, 2, device="cpu")
    ensemble = enhance_volume(small_real_volume, model, 2, device="cpu", uncertainty=True)
    assert single.uncertainty is None
    assert ensemble.uncertainty is not None and ensemble.uncertainty.grid.same_geometry(ensemble.sr.grid)
    spread = ensemble.uncertainty.array
    assert spread.min() >= 0 and spread.max() > 0  # a random network is not flip-equivariant
    assert not np.allclose(ensemble.sr.array, single.sr.array)
    assert ensemble.uncertainty.metadata["MRISuperRes.role"] == "uncertainty"


def test_flip_ensemble_alone_gives_the_same_mean_without_a_map(small_real_volume: Volume, tiny_model: Path) -> None:
    model = load_model_file(tiny_model)
    with_map = enhance_volume(small_real_volume, model, 2, device="cpu", uncertainty=True)
    alone = enhance_volume(small_real_volume, model, 2, device="cpu", flip_ensemble=True)
    single = enhance_volume(small_real_volume, model, 2, device="cpu")
    assert alone.uncertainty is None
    np.testing.assert_array_equal(alone.sr.array, with_map.sr.array)
    assert (alone.summary()["ensemble_passes"], with_map.ensemble_passes, single.summary()["ensemble_passes"]) == (
        8, 8, 1)


def test_cli_flip_ensemble_in_enhance_and_evaluate(small_real_volume: Volume, tiny_model: Path, tmp_path: Path,
                                                   capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    model = load_model_file(tiny_model)
    expected = enhance_volume(small_real_volume, model, 2, device="cpu", flip_ensemble=True)
    source = write_volume(small_real_volume, tmp_path / "in.nii.gz")
    out = tmp_path / "sr.nii.gz"
    assert main(["enhance", str(source), str(out), "--model", str(tiny_model), "--flip-ensemble", "--json",
                 "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["ensemble_passes"] == 8
    np.testing.assert_allclose(read_volume(out).array, expected.sr.array, rtol=1e-6, atol=1e-4)
    scores = []
    for flag in ([], ["--flip-ensemble"]):
        assert main(["evaluate", str(source), "--model", str(tiny_model), "--device", "cpu", "--json", *flag]) == 0
        scores.append(json.loads(capsys.readouterr().out)["volumes"][0]["psnr_sr"])
    assert scores[0] != scores[1]


def test_flip_ensemble_of_an_untrained_model_is_certain(small_real_volume: Volume, tmp_path: Path) -> None:
    from MRISuperResLib.volume import Grid

    crop = small_real_volume.array[8:28, 10:30, 8:28]
    grid = small_real_volume.grid
    volume = Volume(crop, Grid(crop.shape, grid.spacing, tuple(grid.physical_points(np.array([8.0, 10.0, 8.0]))),
                               grid.direction))
    untrained = make_tiny_model(tmp_path / "untrained.safetensors", random_tail=False)  # output = B-spline
    result = enhance_volume(volume, str(untrained), 2, device="cpu", uncertainty=True)
    assert np.all(result.uncertainty.array == 0)
    np.testing.assert_array_equal(result.sr.array, result.baseline.array)


def test_background_masking_keeps_the_baseline_outside_the_head(small_real_volume: Volume, tiny_model: Path) -> None:
    from MRISuperResLib.geometry import upsampled_grid
    from MRISuperResLib.interpolation import bspline_upsample_volume
    from MRISuperResLib.training.preprocess import foreground_mask

    model = load_model_file(tiny_model)
    result = enhance_volume(small_real_volume, model, 2, device="cpu", mask_background=True)
    head = small_real_volume.with_array(foreground_mask(small_real_volume).astype(np.float32))
    inside = bspline_upsample_volume(head, upsampled_grid(small_real_volume.grid, (2, 2, 2))).array > 0.5
    assert 0 < inside.mean() < 1
    np.testing.assert_array_equal(result.sr.array[~inside], result.baseline.array[~inside])
    assert np.abs(result.difference.array[inside]).max() > 0


def test_a_model_can_ask_for_background_masking_by_default(small_real_volume: Volume, tmp_path: Path) -> None:
    masked = load_model_file(make_tiny_model(tmp_path / "masked.safetensors", extra={"mask_background": True}))
    default = enhance_volume(small_real_volume, masked, 2, device="cpu")
    explicit = enhance_volume(small_real_volume, masked, 2, device="cpu", mask_background=True)
    off = enhance_volume(small_real_volume, masked, 2, device="cpu", mask_background=False)
    np.testing.assert_array_equal(default.sr.array, explicit.sr.array)
    assert not np.array_equal(default.sr.array, off.sr.array)
    source = write_volume(small_real_volume, tmp_path / "in.nii.gz")
    for flag, reference in (("--no-mask-background", off), ("--mask-background", explicit)):
        out = tmp_path / f"sr{flag}.nii.gz"
        assert main(["enhance", str(source), str(out), "--model", str(tmp_path / "masked.safetensors"), flag,
                     "--quiet", "--device", "cpu"]) == 0
        np.testing.assert_allclose(read_volume(out).array, reference.sr.array, rtol=1e-6, atol=1e-4)


def test_cli_writes_the_uncertainty_map(small_real_volume: Volume, tiny_model: Path, tmp_path: Path) -> None:
    source = write_volume(small_real_volume, tmp_path / "in.nii.gz")
    out, spread = tmp_path / "sr.nii.gz", tmp_path / "spread.nii.gz"
    assert main(["enhance", str(source), str(out), "--model", str(tiny_model), "--uncertainty", str(spread),
                 "--mask-background", "--quiet", "--device", "cpu"]) == 0
    assert read_volume(spread).shape == read_volume(out).shape
    assert (tmp_path / "spread.nii.gz.json").is_file()


def test_a_calibrated_threshold_flags_inconsistent_results(small_real_volume: Volume, tmp_path: Path) -> None:
    strict = make_tiny_model(tmp_path / "strict.safetensors", extra={"consistency": {"threshold": 1e-9}})
    lenient = make_tiny_model(tmp_path / "lenient.safetensors", extra={"consistency": {"threshold": 10.0}})
    flagged = enhance_volume(small_real_volume, load_model_file(strict), 2, device="cpu")
    assert flagged.consistency_suspicious is True
    assert any("calibrated threshold" in warning for warning in flagged.warnings)
    calm = enhance_volume(small_real_volume, load_model_file(lenient), 2, device="cpu")
    assert calm.consistency_suspicious is False and not calm.warnings
    assert calm.summary()["consistency_threshold"] == 10.0
    uncalibrated = enhance_volume(small_real_volume, str(make_tiny_model(tmp_path / "plain.safetensors")), 2,
                                  device="cpu")
    assert uncalibrated.consistency_suspicious is None
