"""Shared fixtures: small real volumes, shared development data (skipped when absent), tiny models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MRISuperRes"))

from MRISuperResLib import models  # noqa: E402
from MRISuperResLib.checkpoint import save_model  # noqa: E402
from MRISuperResLib.degradation import box_downsample  # noqa: E402
from MRISuperResLib.samples import mni152_t1_path  # noqa: E402
from MRISuperResLib.volume import Grid, Volume  # noqa: E402
from MRISuperResLib.volume_io import read_volume  # noqa: E402

SHARED_DATA = Path(os.environ.get("MRISUPERRES_SHARED_DATA", ROOT.parent / "shared" / "data"))


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
    from MRISuperResLib.geometry import resampled_grid

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


def make_tiny_model(path: Path, scale=(2, 2, 2), global_skip: str = "baseline", seed: int = 0,
                    random_tail: bool = True, **metadata) -> Path:
    """Save a tiny EDSR-3D (8 channels, 1 block) with random weights (non-zero tail) to ``path``."""
    import torch

    torch.manual_seed(seed)
    config = {"scale": list(scale), "channels": 8, "blocks": 1, "kernel_size": 3, "res_scale": 1.0,
              "upsample_features": 2, "global_skip": global_skip}
    network = models.create("edsr3d", **config)
    if random_tail:
        torch.nn.init.normal_(network.tail.conv.weight, std=0.05)
    return save_model(network, path, name=path.stem, family="edsr3d", config=config, **metadata)


@pytest.fixture()
def tiny_model(tmp_path: Path) -> Path:
    """A tiny random x2 model file."""
    return make_tiny_model(tmp_path / "tiny-x2.safetensors")


def rotation_matrix(axis: tuple[float, float, float], angle: float) -> np.ndarray:
    """Right-handed 3x3 rotation by ``angle`` radians about ``axis`` (Rodrigues' formula)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    cross = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + np.sin(angle) * cross + (1.0 - np.cos(angle)) * cross @ cross


def oblique_grid(shape: tuple[int, int, int], spacing: tuple[float, float, float] = (2.0, 2.5, 3.0)) -> Grid:
    """An oblique (rotated, right-handed) grid with a non-zero origin and the given spacing."""
    return Grid(shape, spacing, (-12.5, 30.25, 7.75), rotation_matrix((1.0, 2.0, 3.0), 0.4))


def smooth_function(points: np.ndarray) -> np.ndarray:
    """A smooth, strictly positive function of LPS position (mm, ``(..., 3)``); wavelengths of 25-40 mm."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return (
        100.0
        + 30.0 * np.sin(2 * np.pi * (x + 0.5 * y) / 40.0 + 0.2)
        + 20.0 * np.cos(2 * np.pi * (y - z) / 30.0)
        + 10.0 * np.sin(2 * np.pi * z / 25.0) * np.cos(2 * np.pi * x / 35.0)
    )


def sample_smooth_function(grid: Grid, shift: float = 0.0) -> np.ndarray:
    """:func:`smooth_function` at the voxel centres of ``grid`` (float64), optionally ``shift`` voxels off
    along every index axis."""
    axes = [np.arange(n, dtype=np.float64) + shift for n in grid.shape]
    indices = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return smooth_function(grid.physical_points(indices))


@pytest.fixture()
def single_thread():
    """One torch thread: tiny networks gain nothing from more, and one stays steady on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomized(network, seed: int = 0, std: float = 0.2, perturb: bool = False):  # type: ignore[no-untyped-def]
    """Give every parameter seeded random values (``perturb``: add them instead), so that untrained
    zero-initialised layers do not hide mistakes; returns the network in eval mode."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.parameters():
            noise = std * torch.randn(parameter.shape, generator=generator)
            parameter.add_(noise) if perturb else parameter.copy_(noise)
    return network.eval()
