"""Scanner-like acquisition simulation for training (MRISuperResLib.processing.degradation.acquisition)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from MRISuperResLib.processing.degradation.acquisition import (
    Acquisition,
    AcquisitionRanges,
    acquire,
    apodisation_window,
    partial_fourier_mask,
)
from MRISuperResLib.processing.degradation import DegradationSpec, degrade
from MRISuperResLib.training.config import ConfigError, config_from_dict
from MRISuperResLib.imaging.volume import Volume


@pytest.fixture(scope="module")
def brain(small_real_volume: Volume) -> np.ndarray:
    """A small real brain in normalised units (about 0..1), even-sized."""
    array = small_real_volume.array[:32, :40, :32].astype(np.float32)
    return array / float(np.percentile(array, 99))


def _high_frequency_share(array: np.ndarray, axis: int) -> float:
    spectrum = np.abs(np.fft.fft(array - array.mean(), axis=axis)) ** 2
    frequencies = np.abs(np.fft.fftfreq(array.shape[axis]))
    outer = np.moveaxis(spectrum, axis, 0)[frequencies > 0.25].sum()
    return float(outer / np.moveaxis(spectrum, axis, 0).sum())


def test_draws_are_reproducible_and_follow_the_scale() -> None:
    ranges = AcquisitionRanges()
    first = ranges.draw(np.random.default_rng(5), (2, 2, 2))
    assert first == ranges.draw(np.random.default_rng(5), (2, 2, 2))
    draws = [ranges.draw(np.random.default_rng(seed), (1, 1, 4)) for seed in range(40)]
    assert all(d.kinds[:2] == ("kspace", "kspace") and d.kinds[2] in ("box", "gaussian") for d in draws)
    assert {d.kinds[2] for d in draws} == {"box", "gaussian"}
    assert {d.window for d in draws} == {"none", "hamming", "tukey"}
    assert all(d.partial_fourier_axis in (0, 1) for d in draws)
    assert any(d.partial_fourier < 1 for d in draws) and any(d.partial_fourier == 1 for d in draws)
    assert max(d.noise for d in draws) <= 0.05 and max(d.gap for d in draws) <= 0.2
    assert all(d.kinds == ("kspace",) * 3 and d.gap == 0 for d in (ranges.draw(np.random.default_rng(s), (2, 2, 2))
                                                                    for s in range(10)))
    assert Acquisition(**{**first.to_dict(), "kinds": tuple(first.to_dict()["kinds"])}) == first  # JSON round trip


def test_a_plain_acquisition_is_the_nominal_forward_model(brain: np.ndarray) -> None:
    plain = Acquisition(kinds=("kspace", "kspace", "box"))
    expected = degrade(brain, (16, 20, 8), DegradationSpec(("kspace", "kspace", "box")))
    np.testing.assert_allclose(acquire(brain, (16, 20, 8), plain), expected, atol=1e-6)
    again = acquire(brain, (16, 20, 8), replace(plain, noise=0.02, bias=0.2, seed=9))
    np.testing.assert_array_equal(again, acquire(brain, (16, 20, 8), replace(plain, noise=0.02, bias=0.2, seed=9)))
    assert not np.allclose(again, expected, atol=1e-3)


def test_apodisation_windows_damp_the_edge_of_k_space(brain: np.ndarray) -> None:
    assert apodisation_window(16, "none").tolist() == [1.0] * 16
    hamming, tukey = apodisation_window(16, "hamming"), apodisation_window(16, "tukey", 0.5)
    assert hamming[0] == pytest.approx(1.0) and hamming[8] == pytest.approx(0.08)
    assert tukey[0] == 1.0 and tukey[2] == 1.0 and tukey[8] == pytest.approx(0.0) and 0 < tukey[6] < 1
    with pytest.raises(ValueError, match="not one of none, hamming, tukey"):
        apodisation_window(8, "kaiser")
    base = Acquisition()
    sharp = acquire(brain, (16, 20, 16), base)
    for window in ("hamming", "tukey"):
        smooth = acquire(brain, (16, 20, 16), replace(base, window=window, tukey_alpha=0.6))
        for axis in range(3):
            assert _high_frequency_share(smooth, axis) < 0.9 * _high_frequency_share(sharp, axis)


def test_partial_fourier_zero_fills_one_side_of_one_axis(brain: np.ndarray) -> None:
    mask = partial_fourier_mask(16, 0.625)
    assert mask.sum() == 10 and mask[np.fft.fftfreq(16, 1 / 16) < 0].all() and mask[0] == 1
    assert partial_fourier_mask(16, 1.0).all()
    base = Acquisition()
    full = acquire(brain, (16, 20, 16), base)
    partial = acquire(brain, (16, 20, 16), replace(base, partial_fourier=0.625, partial_fourier_axis=1))
    # Blurred along j only: its high frequencies drop there, the other axes keep theirs.
    assert _high_frequency_share(partial, 1) < 0.8 * _high_frequency_share(full, 1)
    assert _high_frequency_share(partial, 0) == pytest.approx(_high_frequency_share(full, 0), rel=0.3)
    assert np.all(partial >= 0)  # a magnitude image


def test_kspace_noise_is_rician_in_the_background() -> None:
    fine = np.zeros((32, 32, 32), dtype=np.float32)
    fine[8:24, 8:24, 8:24] = 1.0
    noisy = acquire(fine, (16, 16, 16), Acquisition(noise=0.04, seed=3))
    background = noisy[:3].ravel()
    sigma = 0.04 * float(np.percentile(degrade(fine, (16, 16, 16), DegradationSpec("kspace")), 99))
    # The magnitude of complex Gaussian noise is Rayleigh-distributed: mean sigma * sqrt(pi / 2).
    assert background.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.15)


def test_ranges_refuse_what_no_scanner_does() -> None:
    assert AcquisitionRanges.from_dict({}) == AcquisitionRanges()
    assert AcquisitionRanges.from_dict({"noise": 0.01}).noise == (0.01, 0.01)
    for bad, phrase in (({"noises": [0, 1]}, "unknown acquisition setting"), ({"windows": ["kaiser"]}, "windows"),
                        ({"partial_fourier": [0.3, 1.0]}, "partial_fourier"), ({"gap": [0.5, 0.1]}, "empty"),
                        ({"thick_profiles": ["sinc"]}, "thick_profiles")):
        with pytest.raises(ValueError, match=phrase):
            AcquisitionRanges.from_dict(bad)


def test_training_config_checks_its_acquisition_section(tmp_path: Path) -> None:
    base = {"name": "x", "model": {"family": "edsr3d", "config": {}}, "data": {"train": ["a.nii.gz"]}}
    assert config_from_dict({**base, "data": {"train": ["a"], "acquisition": {}}}, tmp_path).data.acquisition == {}
    with pytest.raises(ConfigError, match="data.acquisition: unknown acquisition setting"):
        config_from_dict({**base, "data": {"train": ["a"], "acquisition": {"blur": 1}}}, tmp_path)


def _three_subjects(volume: Volume, tmp_path: Path) -> list[Path]:
    """Three training files from one small real volume, shifted along i (two to train on, one to validate)."""
    from MRISuperResLib.imaging.volume_io import write_volume

    paths = []
    for index, offset in enumerate((0, 2, 4)):
        path = tmp_path / f"brain{index}.nii.gz"
        write_volume(volume.with_array(np.roll(volume.array, offset, axis=0)), path)
        paths.append(path)
    return paths


def test_training_with_scanner_like_acquisitions_runs(small_real_volume: Volume, tmp_path: Path) -> None:
    """A tiny run draws its inputs from the ranges (validation keeps the nominal forward model)."""
    from MRISuperResLib.training.data import refresh_subject
    from MRISuperResLib.training.loop import Trainer

    paths = _three_subjects(small_real_volume, tmp_path)
    config = {
        "name": "tiny-acq", "output_dir": str(tmp_path / "run"), "seed": 1,
        "model": {"family": "edsr3d", "config": {"scale": [1, 1, 2], "channels": 8, "blocks": 1,
                                                  "upsample_features": 2, "global_skip": "baseline"}},
        "data": {"train": [str(p) for p in paths[:2]], "validation": [str(paths[2])], "patch_size": [8, 8, 6],
                 "batch_size": 2, "resimulate_every": 3, "degradation": {"kind": ["kspace", "kspace", "box"]},
                 "acquisition": {"noise": [0.0, 0.03]}},
        "run": {"steps": 6, "validate_every": 6, "checkpoint_every": 3, "log_every": 3, "device": "cpu",
                "early_stop_patience": 0},
    }
    trainer = Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda message: None)
    result = trainer.run()
    assert result.model_path is not None and result.model_path.is_file()
    subject = trainer.train_subjects[0]
    draws = []
    for seed in (1, 2):
        refresh_subject(subject, trainer.spec, np.random.default_rng(seed), trainer.normalization,
                        acquisition=trainer.acquisition)
        draws.append(subject.low.astype(np.float32).copy())
    assert not np.allclose(draws[0], draws[1])


def test_voxel_size_draws_resample_the_training_volume(small_real_volume: Volume, tmp_path: Path) -> None:
    """data.acquisition.voxel_mm: each draw resamples the fine volume to a drawn voxel edge (SynthSR), patches come
    from the resampled grids, the model records the drawn range, and runs without it draw what they drew before."""
    from MRISuperResLib.engine.checkpoint import load_model_file
    from MRISuperResLib.training.data import patch_rng, refresh_subject, sample_patches
    from MRISuperResLib.training.loop import Trainer

    ranges = AcquisitionRanges.from_dict({"voxel_mm": [0.5, 2.0]})
    edges = [ranges.draw(np.random.default_rng(seed), (2, 2, 2)).voxel_mm for seed in range(30)]
    assert 0.5 <= min(edges) < 0.8 and 1.4 < max(edges) <= 2.0
    plain = AcquisitionRanges().draw(np.random.default_rng(3), (2, 2, 2))
    assert plain.voxel_mm is None and "voxel_mm" not in plain.to_dict()
    assert replace(AcquisitionRanges.from_dict({"voxel_mm": [1.0, 1.0]}).draw(np.random.default_rng(3), (2, 2, 2)),
                   voxel_mm=None) == plain  # drawn last: everything else is drawn as before
    for bad in ([0, 1], [2, 1], [1, float("inf")]):
        with pytest.raises(ValueError, match="voxel_mm"):
            AcquisitionRanges.from_dict({"voxel_mm": bad})

    paths = _three_subjects(small_real_volume, tmp_path)
    config = {
        "name": "tiny-voxels", "output_dir": str(tmp_path / "run"), "seed": 1,
        "model": {"family": "edsr3d", "config": {"scale": [2, 2, 2], "channels": 8, "blocks": 1,
                                                  "upsample_features": 2, "global_skip": "baseline"}},
        "data": {"train": [str(p) for p in paths[:2]], "validation": [str(paths[2])], "patch_size": [6, 6, 6],
                 "batch_size": 2, "resimulate_every": 2, "degradation": {"kind": "kspace"},
                 "acquisition": {"voxel_mm": [0.6, 1.6]}},
        "run": {"steps": 6, "validate_every": 6, "checkpoint_every": 3, "log_every": 3, "device": "cpu",
                "early_stop_patience": 0},
    }
    trainer = Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda message: None)
    result = trainer.run()
    assert load_model_file(result.model_path).metadata.trained_voxel_mm == (0.6, 1.6)
    subject = trainer.train_subjects[0]
    spacing = subject.high_grid.spacing
    for edge, coarser in ((spacing[0] * 2.0, True), (spacing[0] * 0.5, False)):
        ranges = AcquisitionRanges.from_dict({"voxel_mm": [edge, edge]})
        refresh_subject(subject, trainer.spec, np.random.default_rng(0), trainer.normalization, acquisition=ranges,
                        min_low_shape=(6, 6, 6))
        low, target = subject.low.shape, subject.target.shape
        assert target == tuple(2 * n for n in low) == subject.baseline.shape
        assert (low[0] < subject.low_grid.shape[0]) == coarser and (low[0] > subject.low_grid.shape[0]) != coarser
        assert subject.mask_current is not None and subject.mask_current.shape == low and subject.mask_current.any()
        batch = sample_patches([subject], patch_rng(1, 0), (6, 6, 6), 3, 0.9)
        assert tuple(batch.low.shape[-3:]) == (6, 6, 6) and tuple(batch.high.shape[-3:]) == (12, 12, 12)
    refresh_subject(subject, trainer.spec, np.random.default_rng(0), trainer.normalization,
                    acquisition=AcquisitionRanges())
    assert subject.mask_current is None and subject.low.shape == subject.low_grid.shape
