"""B-spline deformable registration after the affine stage, on a pair with a known synthetic deformation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from MRISuperResLib.cli import app as cli
from MRISuperResLib.processing.degradation import box_downsample
from MRISuperResLib.imaging.geometry import resampled_grid
from MRISuperResLib.training.augment import ElasticSettings, random_displacement, warp
from MRISuperResLib.processing.deformable import register_deformable
from MRISuperResLib.processing.registration import load_transform, transform_points
from MRISuperResLib.imaging.volume import Grid, Volume
from MRISuperResLib.imaging.volume_io import read_volume, write_volume

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def deformed_pair(small_real_volume):
    """The small real brain at 8 mm and a copy deformed by a known smooth field (up to 6 mm)."""
    shape = tuple(n // 2 for n in small_real_volume.shape)
    array = box_downsample(small_real_volume.array[: 2 * shape[0], : 2 * shape[1], : 2 * shape[2]], shape)
    grid = Grid(tuple(2 * n for n in shape), small_real_volume.spacing, small_real_volume.grid.origin,
                small_real_volume.grid.direction)
    fixed = Volume(array.astype(np.float32), resampled_grid(grid, shape))
    extent = np.asarray(fixed.shape) * np.asarray(fixed.spacing)
    field = random_displacement(extent, ElasticSettings(1.0, "elastic", 6.0, 60.0), np.random.default_rng(0))
    moving = fixed.with_array(warp(fixed.array, fixed.spacing, field))
    return fixed, moving, field


def residual_mm(transform: sitk.Transform, fixed, field, points_ijk: np.ndarray) -> np.ndarray:
    """|T(p) + u(T(p)) - p| in mm: zero where ``transform`` inverts the known deformation."""
    grid = fixed.grid
    to_lps = grid.direction @ np.diag(grid.spacing)
    moved = transform_points(transform, grid.physical_points(points_ijk))
    moved_ijk = np.linalg.solve(to_lps, (moved - np.asarray(grid.origin)).T).T
    box = lambda ijk: (ijk + 0.5) * np.asarray(grid.spacing)
    return np.linalg.norm(box(moved_ijk) + field(box(moved_ijk)) - box(points_ijk), axis=-1)


def test_bspline_stage_recovers_a_known_deformation(deformed_pair):
    fixed, moving, field = deformed_pair
    identity = sitk.Transform(3, sitk.sitkIdentity)
    result = register_deformable(fixed, moving, identity, mesh_mm=50.0, iterations=20, shrink_factors=(1,),
                                 smoothing_sigmas=(0.0,), sampling=0.5)
    assert result.metric_after < result.metric_before - 0.05, result.summary()
    brain = np.argwhere(fixed.array > np.percentile(fixed.array, 60)).astype(float)
    before = residual_mm(identity, fixed, field, brain)
    after = residual_mm(result.transform, fixed, field, brain)
    assert after.mean() < 0.5 * before.mean(), (before.mean(), after.mean())
    assert 0 < result.max_displacement_mm < 20


def test_cli_register_deformable_shows_the_metric_before_and_after(deformed_pair, tmp_path, capsys):
    fixed, moving, _ = deformed_pair
    fixed_path = write_volume(fixed, tmp_path / "fixed.nii.gz")
    moving_path = write_volume(moving, tmp_path / "moving.nii.gz")
    output = tmp_path / "aligned.nii.gz"
    code = cli.main(["register", str(fixed_path), str(moving_path), str(output), "--deformable", "--mesh-mm", "50",
                     "--transform", str(tmp_path / "t.h5"), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["deformable"]["metric_deformable"] < summary["deformable"]["metric_affine"] - 0.02, summary
    assert summary["metric"] == summary["deformable"]["metric_deformable"]
    transform = load_transform(tmp_path / "t.h5")
    aligned = read_volume(output)
    assert aligned.grid.same_geometry(fixed.grid)
    assert transform.GetName() == "CompositeTransform"
    assert cli.main(["register", str(fixed_path), str(moving_path), str(tmp_path / "x.nii.gz"), "--deformable",
                     "--rigid-only"]) == 1
    assert "--deformable needs" in capsys.readouterr().err and not (tmp_path / "x.nii.gz").exists()
