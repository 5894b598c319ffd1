"""Arbitrary-scale (implicit) inference: cell-centred query coordinates, exact block tiling, enhance at any scale.

Requirement under test: the decoder is queried at the fine-grid voxel centres of the cell-centred convention,
``(q + 0.5) * n_in / n_out - 0.5`` in coarse index units; the encoder runs once per block, the decoder in bounded
chunks; blocks with the receptive-radius halo reproduce whole-volume inference; ``enhance`` produces any scale.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from MRISuperResLib import models
from MRISuperResLib.engine.checkpoint import load_model_file, save_model
from MRISuperResLib.engine.device import DeviceChoice
from MRISuperResLib.engine.enhance import enhance_volume
from MRISuperResLib.errors import CancelledError
from MRISuperResLib.imaging.geometry import upsampled_grid
from MRISuperResLib.engine.inference import fine_block_start, run_tiled_implicit
from MRISuperResLib.models.arssr import ArSSR
from MRISuperResLib.imaging.volume import Grid, Volume

CPU = DeviceChoice(torch.device("cpu"))
TINY = {"feature_dim": 4, "decoder_depth": 4, "decoder_width": 16, "features": 4, "rdn_blocks": 1, "rdn_layers": 2}
#: Output shapes for a (9, 10, 7) input: x2, x3.2, anisotropic, through-plane x4.
SHAPES = [(18, 20, 14), (29, 32, 22), (14, 15, 21), (9, 10, 28)]


pytestmark = pytest.mark.usefixtures("single_thread")


class _Probe(nn.Module):
    """Stands in for the MLP decoder: returns one column of its input (a feature, or a coordinate)."""

    def __init__(self, column: int) -> None:
        super().__init__()
        self.column = column

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z[..., self.column:self.column + 1]


def probe_model(column: int) -> ArSSR:
    """An ArSSR whose encoder is the identity (features = the input) and whose decoder returns ``column``."""
    network = ArSSR(**{**TINY, "feature_dim": 1})
    network.encoder = nn.Identity()
    network.encoder.convolutions_3x3 = 0
    network.decoder = _Probe(column)
    return network.eval()


def random_model(seed: int = 0) -> ArSSR:
    torch.manual_seed(seed)
    network = ArSSR(**TINY)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    return network.eval()


@pytest.fixture(scope="module")
def brain(small_real_volume: Volume) -> np.ndarray:
    crop = small_real_volume.array[10:19, 14:24, 12:19]
    return (crop / crop.max()).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
def test_decoder_sees_the_trilinear_interpolation_at_cell_centred_fine_voxels(brain: np.ndarray, shape) -> None:
    # With align_corners=False, torch's trilinear resize samples input index (q + 0.5) * n_in / n_out - 0.5 and
    # holds the edge values beyond the outermost centres: exactly the engine's convention.
    x = torch.from_numpy(brain)[None, None]
    expected = F.interpolate(x, size=shape, mode="trilinear", align_corners=False)
    with torch.inference_mode():
        torch.testing.assert_close(probe_model(0)(x, shape), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_decoder_coordinates_follow_the_physical_fine_voxel_centres(brain: np.ndarray, shape) -> None:
    # Independent route: physical centres of the fine grid (geometry.upsampled_grid on an oblique grid) mapped
    # back into the coarse grid's continuous index; the decoder gets twice their offset from the nearest centre.
    coarse = Grid(brain.shape, (2.0, 1.5, 3.0), (10.0, -5.0, 2.5),
                  np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    fine = upsampled_grid(coarse, tuple(o / i for o, i in zip(shape, brain.shape)))
    assert fine.shape == shape
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    physical = fine.physical_points(index)
    continuous = (np.linalg.inv(coarse.direction) @ (physical - np.asarray(coarse.origin)).reshape(-1, 3).T).T
    continuous = continuous / np.asarray(coarse.spacing)
    expected = 2.0 * (continuous - np.floor(continuous + 0.5))
    x = torch.from_numpy(brain)[None, None]
    for axis in range(3):
        with torch.inference_mode():
            got = probe_model(1 + axis)(x, shape)[0, 0].numpy().reshape(-1)
        np.testing.assert_allclose(got, expected[:, axis], rtol=0, atol=1e-5)


def test_fine_blocks_partition_the_fine_grid_by_nearest_coarse_cell() -> None:
    for n_in in range(1, 25):
        for n_out in range(n_in, 4 * n_in + 3):
            starts = [fine_block_start(a, n_in, n_out) for a in range(n_in + 1)]
            assert starts[0] == 0 and starts[-1] == n_out and starts == sorted(starts)
            for a in range(n_in):
                centres = (np.arange(starts[a], starts[a + 1]) + 0.5) * n_in / n_out - 0.5
                assert np.all(centres >= a - 0.5 - 1e-12) and np.all(centres < a + 0.5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tile", [3, (4, 5, 3)])
def test_blocks_with_halo_reproduce_whole_volume_inference(brain: np.ndarray, shape, tile) -> None:
    network = random_model()
    with torch.inference_mode():
        whole = network(torch.from_numpy(brain)[None, None], shape)[0, 0].numpy()
    tiled = run_tiled_implicit(network, brain, shape, CPU, tile=tile, chunk_points=500)
    assert tiled.shape == shape
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5 * float(np.abs(whole).max()))


def test_blocks_without_halo_show_seams(brain: np.ndarray) -> None:
    network = random_model()
    shape = SHAPES[1]
    with torch.inference_mode():
        whole = network(torch.from_numpy(brain)[None, None], shape)[0, 0].numpy()
    seams = run_tiled_implicit(network, brain, shape, CPU, tile=3, halo=0)
    assert np.abs(seams - whole).max() > 1e-3 * float(np.abs(whole).max())


def test_encoder_runs_once_per_block(brain: np.ndarray) -> None:
    network = random_model()
    calls = []
    network.encoder.register_forward_hook(lambda *args: calls.append(1))
    run_tiled_implicit(network, brain, SHAPES[0], CPU, tile=(5, 5, 7), chunk_points=100)
    assert len(calls) == 2 * 2 * 1


def test_progress_and_cancel(brain: np.ndarray) -> None:
    reports = []
    run_tiled_implicit(random_model(), brain, SHAPES[0], CPU, tile=5, progress=lambda f, t: reports.append(f))
    assert len(reports) == 8 and reports[-1] == 1.0 and reports == sorted(reports)
    with pytest.raises(CancelledError):
        run_tiled_implicit(random_model(), brain, SHAPES[0], CPU, tile=5, cancel=lambda: len(reports) > 0)


def test_automatic_block_size_gives_the_same_result(brain: np.ndarray) -> None:
    network = random_model()
    automatic = run_tiled_implicit(network, brain, SHAPES[2], CPU)
    one = run_tiled_implicit(network, brain, SHAPES[2], CPU, tile=brain.shape)
    np.testing.assert_allclose(automatic, one, rtol=0, atol=1e-6)


def test_output_smaller_than_the_input_is_refused(brain: np.ndarray) -> None:
    with pytest.raises(ValueError, match="at least the input shape"):
        run_tiled_implicit(random_model(), brain, (8, 10, 7), CPU)


@pytest.mark.parametrize("scale", ["3.2", "1.5,1.5,3", "1,1,4"])
def test_enhance_with_an_arbitrary_scale_model(tmp_path, small_real_volume: Volume, scale: str) -> None:
    network = random_model()
    config = dict(TINY)
    path = save_model(network, tmp_path / "arssr.safetensors", name="arssr-tiny", family="arssr", config=config)
    array = small_real_volume.array[8:20, 10:24, 12:22].copy()
    grid = small_real_volume.grid
    volume = Volume(array, Grid(array.shape, grid.spacing, grid.origin, grid.direction))
    result = enhance_volume(volume, load_model_file(path), scale, device="cpu", tile=5)
    factors = [float(s) for s in scale.split(",")] * (3 if "," not in scale else 1)
    assert result.sr.shape == tuple(round(n * f) for n, f in zip(volume.shape, factors))
    assert result.sr.grid.same_geometry(result.baseline.grid)
    assert np.abs(result.difference.array).max() > 0
    # The residual path: SR = B-spline baseline + de-normalised network output, whatever the tiling.
    whole = enhance_volume(volume, load_model_file(path), scale, device="cpu", tile=volume.shape)
    np.testing.assert_allclose(result.sr.array, whole.sr.array, rtol=0,
                               atol=1e-4 * float(np.abs(whole.sr.array).max()))
    assert models.supported_scales("arssr", config) is None
