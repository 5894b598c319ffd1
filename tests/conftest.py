"""Shared fixtures: small real volumes, shared development data (skipped when absent), tiny models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MRISuperRes"))

from MRISuperResLib.processing.degradation import box_downsample  # noqa: E402
from MRISuperResLib.imaging.samples import mni152_t1_path  # noqa: E402
from MRISuperResLib.imaging.volume import Grid, Volume  # noqa: E402
from MRISuperResLib.imaging.volume_io import read_volume, write_volume  # noqa: E402
from helpers import make_tiny_model  # noqa: E402

SHARED_DATA = Path(os.environ.get("MRISUPERRES_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def _own_user_settings(tmp_path_factory: pytest.TempPathFactory):
    """The suite's own user-settings folder: training runs register their output folders there, and the model lists
    read it, so the tests neither see the user's registered models nor add to them."""
    previous = os.environ.get("MRISUPERRES_CONFIG_DIR")
    os.environ["MRISUPERRES_CONFIG_DIR"] = str(tmp_path_factory.mktemp("user-settings"))
    yield
    if previous is None:
        os.environ.pop("MRISUPERRES_CONFIG_DIR", None)
    else:
        os.environ["MRISUPERRES_CONFIG_DIR"] = previous


@pytest.fixture(scope="session")
def mni_volume() -> Volume:
    """The real MNI152 T1 template (1 mm, uint8) shipped in nilearn; skipped when nilearn is missing."""
    try:
        return read_volume(mni152_t1_path())
    except Exception as error:  # pragma: no cover - only without nilearn
        pytest.skip(f"MNI152 sample unavailable: {error}")


@pytest.fixture(scope="session")
def small_real_volume(mni_volume: Volume) -> Volume:
    """A small real brain volume: the MNI152 T1 box-averaged to 4 mm and cropped (about 40x48x40, float32)."""
    shape = tuple(n // 4 for n in mni_volume.shape)
    from MRISuperResLib.imaging.geometry import resampled_grid

    coarse = box_downsample(mni_volume.array[: shape[0] * 4, : shape[1] * 4, : shape[2] * 4].astype(np.float32), shape)
    cropped_grid = Grid(tuple(n * 4 for n in shape), mni_volume.spacing, mni_volume.grid.origin,
                        mni_volume.grid.direction)
    grid = resampled_grid(cropped_grid, shape)
    return Volume(coarse.astype(np.float32), grid)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared development data folder; tests using it skip on a fresh clone without it."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture()
def tiny_model(tmp_path: Path) -> Path:
    """A tiny random x2 model file."""
    return make_tiny_model(tmp_path / "tiny-x2.safetensors")


@pytest.fixture()
def single_thread():
    """One torch thread: tiny networks gain nothing from more, and one stays steady on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def brain_files(tmp_path_factory: pytest.TempPathFactory, mni_volume: Volume) -> list[Path]:
    """Three small real brain volumes (MNI152 at 3 mm, shifted crops) as NIfTI files."""
    from MRISuperResLib.processing.degradation import box_downsample
    from MRISuperResLib.imaging.geometry import resampled_grid
    from MRISuperResLib.imaging.volume import Grid

    folder = tmp_path_factory.mktemp("brains")
    usable = tuple(n - n % 3 for n in mni_volume.shape)
    array = mni_volume.array[: usable[0], : usable[1], : usable[2]].astype(np.float32)
    shape = tuple(n // 3 for n in usable)
    grid = resampled_grid(Grid(usable, mni_volume.spacing, mni_volume.grid.origin, mni_volume.grid.direction), shape)
    coarse = Volume(box_downsample(array, shape), grid)
    paths = []
    for index, gain in enumerate((1.0, 0.7, 1.4)):
        # Different intensity scales and crops: three "subjects" with their own geometry.
        region = tuple(slice(index * 2, n - 4 + index) for n in shape)
        crop = coarse.array[region] * gain
        origin = grid.physical_points(np.array([float(r.start) for r in region]))
        volume = Volume(crop.astype(np.float32), Grid(crop.shape, grid.spacing, tuple(origin), grid.direction))
        paths.append(write_volume(volume, folder / f"brain{index}.nii.gz"))
    return paths

