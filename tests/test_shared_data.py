"""The engine on the real development volumes of ../shared/data (skipped on a fresh clone without them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from MRISuperResLib.engine.enhance import enhance_volume
from MRISuperResLib.imaging.volume import Volume
from MRISuperResLib.imaging.volume_io import read_volume, write_volume

VOLUMES = ["train/stroke_T1.nii.gz", "train/colin27_T1.nii.gz", "pairs/IXI002_T1.nii.gz", "pairs/IXI002_T2.nii.gz",
           "thick/T2w_1x1x2.nii.gz", "thick/aniso_4x4x5.nii.gz"]


def centre_of_mass_lps(volume: Volume) -> np.ndarray:
    weights = np.clip(volume.array.astype(np.float64), 0, None)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij"), axis=-1)
    centre = (index * weights[..., None]).reshape(-1, 3).sum(axis=0) / weights.sum()
    return volume.grid.physical_points(centre)


@pytest.mark.parametrize("name", VOLUMES)
def test_real_volumes_read_and_round_trip_through_nrrd(shared_data: Path, tmp_path: Path, name: str) -> None:
    volume = read_volume(shared_data / name)
    assert volume.array.ndim == 3 and min(volume.shape) >= 2
    copy = read_volume(write_volume(volume, tmp_path / "copy.nrrd"))
    np.testing.assert_array_equal(copy.array, volume.array)
    assert copy.grid.same_geometry(volume.grid, tolerance=1e-9)


def test_real_anisotropic_volume_is_enhanced_in_place(shared_data: Path) -> None:
    volume = read_volume(shared_data / "thick/aniso_4x4x5.nii.gz")
    result = enhance_volume(volume, "default", 2, device="cpu")
    assert result.sr.shape == tuple(2 * n for n in volume.shape)
    # The fine grid sits where the input sits: the B-spline baseline keeps the input's physical centre of mass to a
    # tenth of a fine voxel, and the SR volume shares the baseline's grid. The network changes the content (it
    # denoises inside the head), which may move the SR's centre of mass a little, never by a grid offset (half a
    # fine voxel or more).
    assert result.sr.grid.same_geometry(result.baseline.grid, tolerance=1e-9)
    centre = centre_of_mass_lps(volume)
    assert np.linalg.norm(centre_of_mass_lps(result.baseline) - centre) < 0.1 * min(result.sr.spacing)
    assert np.linalg.norm(centre_of_mass_lps(result.sr) - centre) < 0.25 * min(result.sr.spacing)
    assert np.isfinite(result.consistency_nrmse)
