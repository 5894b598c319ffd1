"""Head and brain masks (skull stripping without weights) on a synthetic head and on real heads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from MRISuperResLib.errors import InputError
from MRISuperResLib.imaging.geometry import resampled_grid
from MRISuperResLib.processing.masks import (
    brain_mask,
    dilate,
    erode,
    foreground_mask,
    head_mask,
    mask_on_grid,
    otsu_thresholds,
)
from MRISuperResLib.processing.normalization import NormalizationSettings
from MRISuperResLib.imaging.volume import Grid, Volume
from MRISuperResLib.imaging.volume_io import read_volume


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def synthetic_head(spacing: float = 2.0) -> tuple[Volume, np.ndarray]:
    """A T1w-like head: white matter in grey matter with dark sulci, CSF, dark skull, bright scalp, noise."""
    n = round(200 / spacing)
    axes = [(np.arange(n) - n / 2 + 0.5) * spacing for _ in range(3)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    radius = np.sqrt((x / 70) ** 2 + (y / 85) ** 2 + (z / 65) ** 2)  # brain surface at 1
    rng = np.random.default_rng(0)
    image = np.zeros((n, n, n), np.float32)
    image[radius < 1.38] = 220.0   # scalp (fat)
    image[radius < 1.25] = 15.0    # skull (cortical bone)
    image[radius < 1.12] = 40.0    # CSF
    brain = radius < 1.0
    image[brain] = 110.0           # grey matter
    image[radius < 0.8] = 160.0    # white matter
    sulci = brain & (np.abs(np.sin(np.arctan2(y, x) * 9)) < 0.15) & (radius > 0.85)
    image[sulci] = 40.0
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    grid = Grid((n, n, n), (spacing,) * 3, (0.0, 0.0, 0.0), np.eye(3))
    return Volume(np.clip(image, 0, None), grid), brain


def test_erode_and_dilate_are_euclidean_in_mm():
    mask = np.zeros((41, 41, 41), bool)
    mask[20, 20, 20] = True
    grown = dilate(mask, (1.0, 1.0, 2.0), 4.0)
    assert grown[20, 20, 22] and not grown[20, 20, 23]  # 4 mm: 2 slices of 2 mm along k, 4 voxels along i
    assert grown[24, 20, 20] and not grown[25, 20, 20]
    assert np.array_equal(erode(grown, (1.0, 1.0, 2.0), 3.5), mask)


def test_otsu_thresholds_split_three_classes():
    values = np.concatenate([np.full(1000, 10.0), np.full(1000, 100.0), np.full(1000, 200.0)])
    low, high = otsu_thresholds(values, 2)
    assert 10 < low < 100 < high < 200


def test_brain_mask_of_a_synthetic_head_matches_the_brain():
    volume, brain = synthetic_head()
    head = head_mask(volume)
    found = brain_mask(volume)
    assert head.sum() > 2 * brain.sum()
    assert dice(found, brain) > 0.92, dice(found, brain)
    assert not (found & ~head).any()


def test_constant_volume_is_refused_in_one_line():
    volume = Volume(np.ones((20, 20, 20), np.float32), Grid((20, 20, 20), (1.0,) * 3, (0.0,) * 3, np.eye(3)))
    with pytest.raises(InputError, match="constant"):
        brain_mask(volume)


def test_brain_volume_of_a_real_head_is_plausible(shared_data):
    volume = read_volume(shared_data / "eval/arc_M2265_T2w_head.nii.gz")  # read only, never trained on
    found = brain_mask(volume)
    head = head_mask(volume)
    millilitres = found.sum() * np.prod(volume.spacing) / 1000
    assert 1000 < millilitres < 1800
    assert (found & head).sum() > 0.999 * found.sum()  # the brain mask is found on 2 mm voxels
    # The brain sits inside the head, well away from its border (no scalp kept).
    assert found.sum() < 0.6 * head.sum()


def test_training_subject_foreground_can_be_the_brain(tmp_path):
    from MRISuperResLib.training.config import ConfigError, config_from_dict
    from MRISuperResLib.training.data import load_subject
    from MRISuperResLib.imaging.volume_io import write_volume

    volume, brain = synthetic_head(spacing=4.0)
    path = write_volume(volume, tmp_path / "head.nii.gz")
    norm = NormalizationSettings(lower_percentile=1.0, upper_percentile=99.0)
    head = load_subject(path, (2, 2, 2), normalization=norm, crop_foreground=False, n4=False, foreground="head")
    stripped = load_subject(path, (2, 2, 2), normalization=norm, crop_foreground=False, n4=False,
                            foreground="brain")
    assert dice(stripped.mask_high, brain) > 0.9
    assert head.mask_high.sum() > 2 * stripped.mask_high.sum()
    assert config_from_dict({"data": {"foreground": "brain"}}).data.foreground == "brain"
    with pytest.raises(ConfigError, match="data.foreground"):
        config_from_dict({"data": {"foreground": "skull"}})


def noisy_ellipsoid(shape=(40, 44, 36), spacing=(2.0, 2.0, 2.5)) -> tuple[Volume, np.ndarray]:
    """An ellipsoid of tissue (SNR 33, Rician noise) with a dark cavity inside and a bright speck outside;
    returns it and the ellipsoid (the mask a head finder should return)."""
    grid = Grid(shape, spacing, (-30.0, 12.0, 5.0))
    axes = [(np.arange(n) - (n - 1) / 2) / (0.4 * n) for n in shape]
    i, j, k = np.meshgrid(*axes, indexing="ij")
    radius = np.sqrt(i**2 + j**2 + k**2)
    rng = np.random.default_rng(0)
    signal = np.where(radius < 1.0, 100.0, 0.0)
    signal[radius < 0.3] = 5.0  # a ventricle-like dark cavity
    array = np.abs(signal + rng.normal(0, 3, shape) + 1j * rng.normal(0, 3, shape))  # magnitude: Rician noise
    array[2:4, 2:4, 2:4] = 150.0  # a bright speck in the background
    return Volume(array.astype(np.float32), grid), radius < 1.0


def test_foreground_mask_fills_cavities_and_drops_specks():
    volume, ellipsoid = noisy_ellipsoid()
    for method in ("percentile", "otsu", 50.0):
        mask = foreground_mask(volume, method)
        assert mask.dtype == bool and mask.shape == volume.shape
        assert (mask == ellipsoid).mean() > 0.99, method
        assert not mask[2:4, 2:4, 2:4].any()
    with pytest.raises(ValueError, match="method"):
        foreground_mask(volume, "median")


def test_foreground_mask_covers_a_real_head_and_not_the_background(shared_data: Path):
    volume = read_volume(shared_data / "thick" / "aniso_4x4x5.nii.gz")  # whole head with skull, 4x4x5 mm
    mask = foreground_mask(volume)
    values = volume.array.astype(np.float64)
    low, high = np.percentile(values, [2, 98])
    tissue = values > low + 0.3 * (high - low)
    assert mask[tissue].mean() > 0.98
    assert values[mask].mean() > 5 * values[~mask].mean()
    border = np.ones(volume.shape, bool)
    border[3:-3, 3:-3, :] = False
    assert mask[border].mean() < 0.05  # the in-plane edges of the field of view are background
    assert 0.1 < mask.mean() < 0.6


def test_mask_on_grid_brings_a_user_mask_onto_another_grid():
    volume, ellipsoid = noisy_ellipsoid()
    label = Volume(ellipsoid.astype(np.uint8) * 3, volume.grid)
    finer = resampled_grid(volume.grid, tuple(n * 2 for n in volume.shape))
    on_finer = mask_on_grid(label, finer)
    assert on_finer.shape == finer.shape
    assert np.array_equal(on_finer[::2, ::2, ::2], ellipsoid)  # each fine voxel lies in the coarse one
    elsewhere = Grid((10, 10, 10), (1.0, 1.0, 1.0), (500.0, 500.0, 500.0))
    with pytest.raises(InputError, match="does not overlap"):
        mask_on_grid(label, elsewhere)
