"""Trust outputs of enhance: the test-time flip ensemble's uncertainty map and background masking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import make_tiny_model

from MRISuperResLib.engine.checkpoint import load_model_file
from MRISuperResLib.cli.app import main
from MRISuperResLib.engine.enhance import check_input, distinct_numbers, enhance_volume
from MRISuperResLib.imaging.volume import Volume
from MRISuperResLib.imaging.volume_io import read_volume, write_volume


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
    from MRISuperResLib.imaging.volume import Grid

    crop = small_real_volume.array[8:28, 10:30, 8:28]
    grid = small_real_volume.grid
    volume = Volume(crop, Grid(crop.shape, grid.spacing, tuple(grid.physical_points(np.array([8.0, 10.0, 8.0]))),
                               grid.direction))
    untrained = make_tiny_model(tmp_path / "untrained.safetensors", random_tail=False)  # output = B-spline
    result = enhance_volume(volume, str(untrained), 2, device="cpu", uncertainty=True, projection=False)
    assert np.all(result.uncertainty.array == 0)
    np.testing.assert_array_equal(result.sr.array, result.baseline.array)


def test_background_masking_keeps_the_baseline_outside_the_head(small_real_volume: Volume, tiny_model: Path) -> None:
    from MRISuperResLib.engine.enhance import fine_mask
    from MRISuperResLib.imaging.geometry import upsampled_grid
    from MRISuperResLib.processing.interpolation import bspline_upsample_volume
    from MRISuperResLib.processing.masks import foreground_mask

    model = load_model_file(tiny_model)
    result = enhance_volume(small_real_volume, model, 2, device="cpu", mask_background=True)
    mask = foreground_mask(small_real_volume)
    fine_grid = upsampled_grid(small_real_volume.grid, (2, 2, 2))
    inside = fine_mask(mask, fine_grid.shape)
    assert 0 < inside.mean() < 1
    # The fine mask is the input's mask on the fine grid: its 0.5 level is where the B-spline of the mask puts it.
    by_bspline = bspline_upsample_volume(small_real_volume.with_array(mask.astype(np.float32)), fine_grid).array > 0.5
    assert np.mean(inside != by_bspline) < 1e-3
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


# ----------------------------------------------------------------------- warnings that name the culprit


def calibrated_model(path: Path, volume: Volume) -> Path:
    """The tiny random model with a threshold calibrated as training does: 1.5 x its score on a clean input."""
    score = enhance_volume(volume, load_model_file(make_tiny_model(path.with_name("probe.safetensors"))), 2,
                           device="cpu").consistency_nrmse
    return make_tiny_model(path, extra={"consistency": {"threshold": 1.5 * score}})


@pytest.mark.parametrize("spikes", [[(20, 24, 20, 1e5)], [(20, 24, 20, -1e5)],
                                    [(5, 6, 7, 3e4), (30, 30, 30, 3e4), (12, 40, 22, 3e4)]],
                         ids=["bright", "dark", "three"])
def test_extreme_input_voxels_blame_the_input_not_the_result(small_real_volume: Volume, tmp_path: Path,
                                                              spikes) -> None:
    """Extreme voxels make B-spline as inconsistent as the result: not suspicious, and the warning says the
    input is unusual (with the baseline's score beside the result's)."""
    model = load_model_file(calibrated_model(tmp_path / "calibrated.safetensors", small_real_volume))
    spiked = small_real_volume.array.copy()
    for i, j, k, value in spikes:
        spiked[i, j, k] = value
    result = enhance_volume(small_real_volume.with_array(spiked), model, 2, device="cpu")
    assert result.consistency_nrmse > result.consistency_threshold
    assert result.baseline_consistency_nrmse > result.consistency_threshold
    assert result.consistency_suspicious is False and result.summary()["consistency_suspicious"] is False
    [warning] = [w for w in result.warnings if "consistency" in w]
    assert warning.startswith(f"the input disagrees with model {model.name}'s forward model")
    assert "extreme voxels" in warning and "B-spline" in warning


def test_a_result_clearly_worse_than_b_spline_is_still_suspicious(small_real_volume: Volume, tmp_path: Path) -> None:
    """The random tiny network disagrees with the input about 4 x more than B-spline: above a threshold it is
    flagged, and the warning gives both ratios."""
    model = load_model_file(make_tiny_model(tmp_path / "strict.safetensors", extra={"consistency": {"threshold": 0.02}}))
    result = enhance_volume(small_real_volume, model, 2, device="cpu")
    assert result.consistency_nrmse > 1.25 * result.baseline_consistency_nrmse
    assert result.consistency_suspicious is True
    [warning] = [w for w in result.warnings if "consistency" in w]
    assert "x model strict's calibrated threshold 0.02" in warning and "x B-spline's" in warning


def test_a_score_just_above_the_threshold_never_reads_as_equal(small_real_volume: Volume, tmp_path: Path) -> None:
    probe = enhance_volume(small_real_volume, load_model_file(make_tiny_model(tmp_path / "p.safetensors")), 2,
                           device="cpu").consistency_nrmse
    threshold = probe * (1 - 2e-5)
    model = load_model_file(make_tiny_model(tmp_path / "edge.safetensors",
                                            extra={"consistency": {"threshold": threshold}}))
    result = enhance_volume(small_real_volume, model, 2, device="cpu")
    [warning] = [w for w in result.warnings if "consistency" in w]
    shown = warning.split("consistency NRMSE ")[1].split(" ")[0]
    limit = warning.split("calibrated threshold ")[1].split(" ")[0]
    ratio = warning.split(f"{shown} is ")[1].split(" x")[0]
    assert float(shown) > float(limit) and float(ratio) > 1.0, warning


@pytest.mark.parametrize(("a", "b", "expected"), [
    (0.009134, 0.009101, ("0.009134", "0.009101")),
    (0.0091004, 0.0091001, ("0.0091004", "0.0091001")),
    (0.5, 0.5, ("0.5", "0.5")),
    (12.3456, 0.01, ("12.35", "0.01")),
])
def test_distinct_numbers_adds_digits_until_they_differ(a: float, b: float, expected) -> None:
    assert distinct_numbers(a, b) == expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_label_map_stored_as_float_gets_the_label_map_warning(small_real_volume: Volume, tiny_model: Path,
                                                                 dtype) -> None:
    labels = np.digitize(small_real_volume.array, np.percentile(small_real_volume.array, [30, 60, 90]))
    volume = small_real_volume.with_array(labels.astype(dtype))
    warnings = check_input(volume, "seg.nii.gz", load_model_file(tiny_model))
    assert len(warnings) == 1 and "looks like a label map (" in warnings[0]
    assert "distinct integer values, stored as" in warnings[0]
    assert np.dtype(dtype).name in warnings[0]


@pytest.mark.parametrize("make", [
    lambda v: np.rint(v * 10).astype(np.float32),                      # an intensity image rounded to integers
    lambda v: (np.digitize(v, np.percentile(v, [30, 60, 90])) + 0.5).astype(np.float32),  # few, not integers
    lambda v: v.astype(np.float32),
], ids=["rounded-intensities", "few-fractional-values", "intensities"])
def test_intensity_images_stored_as_float_get_no_label_map_warning(small_real_volume: Volume, tiny_model: Path,
                                                                   make) -> None:
    volume = small_real_volume.with_array(make(small_real_volume.array))
    assert check_input(volume, "t1.nii.gz", load_model_file(tiny_model)) == []


def test_a_noisy_input_is_blamed_on_its_noise_not_on_its_acquisition(small_real_volume: Volume, tmp_path: Path) -> None:
    """The input's background noise is measured on the consistency scores' scale; when it accounts for B-spline's
    score above the threshold, the warning names the noise instead of blaming the acquisition."""
    from dataclasses import replace

    from MRISuperResLib.processing.normalization import PercentileNormalizer

    clean = small_real_volume.array
    sigma = 0.05 * float(np.percentile(clean, 99))
    rng = np.random.default_rng(3)
    noisy = np.hypot(clean + sigma * rng.standard_normal(clean.shape),
                     sigma * rng.standard_normal(clean.shape)).astype(np.float32)
    model = load_model_file(make_tiny_model(tmp_path / "m.safetensors", extra={"consistency": {"threshold": 0.02}}))
    result = enhance_volume(small_real_volume.with_array(noisy), model, 2, device="cpu")
    scale = PercentileNormalizer.fit(noisy, 1.0, 99.0).scale
    assert result.noise_nrmse == pytest.approx(sigma / scale, rel=0.3)
    assert result.summary()["noise_nrmse"] == result.noise_nrmse
    # both scores above the threshold, the result about as consistent as B-spline: the input is blamed ...
    quiet = replace(result, consistency_nrmse=0.03, baseline_consistency_nrmse=0.028, noise_nrmse=0.005)
    assert quiet.consistency_suspicious is False
    assert quiet.consistency_warning().startswith("the input disagrees with model m's forward model")
    # ... unless the input's own noise accounts for what lifts both scores over the threshold
    noisy_input = replace(quiet, noise_nrmse=0.05)
    warning = noisy_input.consistency_warning()
    assert warning.startswith("this input is noisy (background noise 5 % of its intensity range)")
    assert "B-spline's 0.028" in warning and "forward model" not in warning and "\n" not in warning
    # extreme voxels lift B-spline's score beyond what that noise accounts for: the input is blamed again
    spiked = replace(noisy_input, baseline_consistency_nrmse=0.037)
    assert spiked.consistency_warning().startswith("the input disagrees with model m's forward model")
    # a result clearly worse than B-spline stays suspicious whatever the noise
    assert replace(noisy_input, consistency_nrmse=0.06).consistency_suspicious is True
