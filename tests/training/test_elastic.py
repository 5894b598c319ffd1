"""Elastic and grid distortion: one physical deformation for both members of a pair, whatever their grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from MRISuperResLib.processing.degradation import DegradationSpec, box_downsample
from MRISuperResLib.imaging.geometry import resampled_grid
from MRISuperResLib.processing.normalization import NormalizationSettings
from MRISuperResLib.training.augment import ElasticSettings, random_displacement, warp
from MRISuperResLib.training.config import ConfigError, config_from_dict
from MRISuperResLib.training.data import Subject, refresh_subject
from MRISuperResLib.imaging.volume import Grid

torch.set_num_threads(1)


def centres(shape, spacing):
    axes = [(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


@pytest.mark.parametrize("kind", ["elastic", "grid"])
def test_coarse_and_fine_grids_get_the_displacement_of_the_field(kind):
    settings = ElasticSettings(probability=1.0, kind=kind, max_displacement_mm=3.0, control_spacing_mm=24.0)
    fine_shape, fine_spacing = (48, 40, 32), (1.0, 1.2, 1.5)
    coarse_shape, coarse_spacing = (24, 20, 8), (2.0, 2.4, 6.0)  # the same 48 x 48 x 48 mm box
    field = random_displacement((48.0, 48.0, 48.0), settings, np.random.default_rng(3))
    for shape, spacing in ((fine_shape, fine_spacing), (coarse_shape, coarse_spacing)):
        points = centres(shape, spacing)
        expected = points + field(points)  # where each output voxel samples, in mm
        for axis in range(3):
            ramp = points[..., axis].astype(np.float32)  # a linear image: its value is the coordinate
            warped = warp(ramp, spacing, field)
            # Linear interpolation of a linear image is exact wherever the sample point stays inside the grid.
            inside = np.all((expected > points[0, 0, 0]) & (expected < points[-1, -1, -1]), axis=-1)
            assert inside.mean() > 0.5
            assert np.abs(warped[inside] - expected[inside][:, axis]).max() < 1e-3
    largest = np.linalg.norm(field.lattice, axis=-1).max()
    assert 0 < largest <= 3.0 + 1e-4


def test_grid_distortion_never_folds():
    extent = np.array([100.0, 80.0, 60.0])
    field = random_displacement(extent, ElasticSettings(1.0, "grid", 8.0, 20.0), np.random.default_rng(0))
    for axis in range(3):
        nodes = np.linspace(0, extent[axis], field.lattice.shape[axis])
        moved = nodes + np.moveaxis(field.lattice[..., axis], axis, 0)[:, 0, 0]
        assert np.all(np.diff(moved) > 0) and abs(moved[0]) < 1e-4 and abs(moved[-1] - extent[axis]) < 1e-3
        assert np.abs(moved - nodes).max() > 0.5  # it does distort


def _pair_subject(high: np.ndarray, low: np.ndarray, spacing=(1.0, 1.0, 1.0), factor=1) -> Subject:
    high_grid = Grid(high.shape, spacing, (0.0, 0.0, 0.0), np.eye(3))
    low_grid = resampled_grid(high_grid, low.shape)
    return Subject("pair", high.astype(np.float16), high_grid, low_grid, np.ones(low.shape, bool),
                   np.ones(high.shape, bool), real_low=low.astype(np.float32))


def test_a_pair_with_identical_members_stays_identical():
    rng = np.random.default_rng(0)
    volume = np.cumsum(rng.random((24, 24, 24)), axis=0).astype(np.float16).astype(np.float32)
    subject = _pair_subject(volume, volume.copy())
    settings = ElasticSettings(probability=1.0, max_displacement_mm=3.0, control_spacing_mm=12.0)
    norm = NormalizationSettings(lower_percentile=1.0, upper_percentile=99.0, clip=False)  # as stored
    refresh_subject(subject, DegradationSpec("box"), np.random.default_rng(5), norm, elastic=settings)
    assert np.array_equal(subject.low.astype(np.float32), subject.target.astype(np.float32))
    # ... and the deformation did happen.
    plain = _pair_subject(volume, volume.copy())
    refresh_subject(plain, DegradationSpec("box"), np.random.default_rng(5), norm)
    assert not np.array_equal(plain.target, subject.target)


def test_a_real_pair_on_two_grids_is_deformed_alike():
    rng = np.random.default_rng(1)
    axes = np.meshgrid(*[np.linspace(0, 3, 32)] * 3, indexing="ij")
    high = (np.sin(axes[0]) + np.cos(axes[1]) * axes[2]).astype(np.float32) + 3.0  # smooth, so averaging commutes
    low = box_downsample(high, (16, 16, 16))
    subject = _pair_subject(high, low)
    norm = NormalizationSettings(lower_percentile=0.0, upper_percentile=100.0)
    settings = ElasticSettings(probability=1.0, max_displacement_mm=2.0, control_spacing_mm=16.0)
    refresh_subject(subject, DegradationSpec("box"), rng, norm, elastic=settings)
    target = subject.target.astype(np.float32)
    low_after = subject.low.astype(np.float32)
    # The block average of the deformed target is the deformed input (up to interpolation of a smooth image).
    assert np.abs(box_downsample(target, (16, 16, 16)) - low_after)[2:-2, 2:-2, 2:-2].max() < 0.02


def test_config_key_is_checked():
    config = config_from_dict({"augment": {"elastic": {"probability": 0.5, "kind": "grid"}}})
    assert ElasticSettings.from_config(config.augment.elastic).kind == "grid"
    assert ElasticSettings.from_config(None) is None and ElasticSettings.from_config({"probability": 0}) is None
    with pytest.raises(ConfigError, match="augment.elastic"):
        config_from_dict({"augment": {"elastic": {"sigma": 3}}})
    with pytest.raises(ConfigError, match="kind"):
        config_from_dict({"augment": {"elastic": {"probability": 1, "kind": "twist"}}})
