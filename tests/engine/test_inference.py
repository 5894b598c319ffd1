"""Tiled inference and device choice (MRISuperResLib.engine.inference, MRISuperResLib.engine.device)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_tiny_model

from MRISuperResLib.engine import device as device_module
from MRISuperResLib import models
from MRISuperResLib.engine import inference
from MRISuperResLib.engine.checkpoint import load_model_file
from MRISuperResLib.engine.device import DeviceChoice, select_device
from MRISuperResLib.errors import CancelledError, MRISuperResError
from MRISuperResLib.engine.inference import TILE_MULTIPLE, choose_tile, count_tiles, run_tiled
from MRISuperResLib.processing.normalization import PercentileNormalizer
from MRISuperResLib.imaging.volume import Volume

SHAPE = (20, 24, 18)
CPU = DeviceChoice(torch.device("cpu"))
#: Fine voxels along each border left out when comparing tiled with whole-volume inference.
MARGIN = 6


@pytest.fixture(scope="module")
def tiny_network(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    return load_model_file(make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-x2.safetensors")).network


@pytest.fixture(scope="module")
def brain_crop(small_real_volume: Volume) -> np.ndarray:
    """A 20x24x18 piece of the real brain volume, normalised as the engine feeds it to networks."""
    crop = small_real_volume.array[14:34, 16:40, 14:32]
    assert crop.shape == SHAPE
    return np.ascontiguousarray(PercentileNormalizer.fit(crop).normalize(crop))


@pytest.fixture(scope="module")
def whole_output(tiny_network: torch.nn.Module, brain_crop: np.ndarray) -> np.ndarray:
    """The tiny network's output computed in one tile."""
    return run_tiled(tiny_network, brain_crop, CPU, tile=64)


@pytest.fixture(scope="module")
def tiled_output(tiny_network: torch.nn.Module, brain_crop: np.ndarray) -> np.ndarray:
    """The tiny network's output computed in tiles of 8 with half overlap."""
    return run_tiled(tiny_network, brain_crop, CPU, tile=8, overlap=0.5)


def pointwise_network(scale=(2, 2, 2)) -> torch.nn.Module:
    """An EDSR-3D with 1x1x1 kernels: each coarse voxel maps to its own fine voxels, no context."""
    torch.manual_seed(0)
    return models.create("edsr3d", scale=scale, channels=8, blocks=1, kernel_size=1, upsample_features=2,
                         global_skip="none").eval()


def relative_rms(difference: np.ndarray, reference: np.ndarray) -> float:
    inner = (slice(MARGIN, -MARGIN),) * 3
    return float(np.sqrt(np.mean(difference[inner] ** 2)) / np.sqrt(np.mean(reference[inner] ** 2)))


def test_output_is_on_the_scaled_grid(tiled_output: np.ndarray) -> None:
    out = tiled_output
    assert out.shape == (40, 48, 36)
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert np.abs(out).max() > 0


def test_anisotropic_output_is_on_the_scaled_grid(brain_crop: np.ndarray) -> None:
    out = run_tiled(pointwise_network((1, 1, 4)), brain_crop, CPU, tile=8, overlap=0.25)
    assert out.shape == (20, 24, 72)


def test_the_same_input_gives_bit_identical_output(tiny_network: torch.nn.Module, brain_crop: np.ndarray) -> None:
    first = run_tiled(tiny_network, brain_crop, CPU, tile=12, overlap=0.5)
    second = run_tiled(tiny_network, brain_crop, CPU, tile=12, overlap=0.5)
    assert np.array_equal(first, second)


def test_one_tile_equals_running_the_network_on_the_whole_volume(
    tiny_network: torch.nn.Module, brain_crop: np.ndarray, whole_output: np.ndarray
) -> None:
    out = whole_output
    with torch.inference_mode():
        direct = tiny_network(torch.from_numpy(brain_crop)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(out, direct, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("tile", "overlap"), [(8, 0.5), (8, 0.25), (12, 0.3), (16, 0.5)])
def test_tiles_are_stitched_exactly_for_a_network_without_context(brain_crop: np.ndarray, tile: int,
                                                                  overlap: float) -> None:
    # With 1x1x1 kernels no tile border changes any value: tiled must equal whole-volume inference.
    network = pointwise_network()
    whole = run_tiled(network, brain_crop, CPU, tile=64)
    tiled = run_tiled(network, brain_crop, CPU, tile=tile, overlap=overlap)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5 * float(np.abs(whole).max()))


def test_small_tiles_stay_near_whole_volume_inference(whole_output: np.ndarray, tiled_output: np.ndarray) -> None:
    # Tiles of 8 are smaller than the tiny network's receptive field (11 coarse voxels), so tile borders
    # (zero padding) leave seams: only a loose bound holds. A one-voxel misplacement would give ~1.3.
    whole, tiled = whole_output, tiled_output
    assert relative_rms(tiled - whole, whole) < 0.25
    assert relative_rms(np.roll(whole, 1, axis=0) - whole, whole) > 1.0


def test_tiles_larger_than_the_receptive_field_agree_with_whole_volume_inference(
    tiny_network: torch.nn.Module, brain_crop: np.ndarray, whole_output: np.ndarray
) -> None:
    # Each tile runs with a halo of real neighbours as wide as the receptive field, so stitched tiles
    # reproduce whole-volume inference everywhere, up to float rounding, whatever the tile and overlap.
    whole = whole_output
    for tile, overlap in ((16, 0.5), (8, 0.0), (8, 0.25)):
        tiled = run_tiled(tiny_network, brain_crop, CPU, tile=tile, overlap=overlap)
        assert relative_rms(tiled - whole, whole) < 1e-5


def test_tiles_without_halo_show_seams(
    tiny_network: torch.nn.Module, brain_crop: np.ndarray, whole_output: np.ndarray
) -> None:
    tiled = run_tiled(tiny_network, brain_crop, CPU, tile=8, overlap=0.25, halo=0)
    assert relative_rms(tiled - whole_output, whole_output) > 1e-3


def test_progress_rises_to_one_once_per_tile(brain_crop: np.ndarray) -> None:
    calls: list[tuple[float, str]] = []
    run_tiled(pointwise_network(), brain_crop, CPU, tile=8, overlap=0.5,
              progress=lambda fraction, text: calls.append((fraction, text)))
    tiles = count_tiles(SHAPE, (8, 8, 8), 0.5)
    fractions = [fraction for fraction, _ in calls]
    assert len(calls) == tiles
    assert all(b > a for a, b in zip(fractions, fractions[1:]))
    assert fractions[-1] == 1.0
    assert calls[-1][1] == f"tile {tiles}/{tiles}"


class CountingNetwork(torch.nn.Module):
    """Wraps a network and records the batch size of every call."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return self.network(x)


def test_count_tiles_matches_the_windows_visited(brain_crop: np.ndarray) -> None:
    network = CountingNetwork(pointwise_network())
    run_tiled(network, brain_crop, CPU, tile=(8, 12, 8), overlap=0.25)
    assert sum(network.batches) == count_tiles(SHAPE, (8, 12, 8), 0.25)
    # 20 -> windows at 0, 6, 12 (3); 24 -> 0, 9, 12 (3); 18 -> 0, 6, 10 (3).
    assert count_tiles(SHAPE, (8, 12, 8), 0.25) == 27


def test_count_tiles_is_one_for_a_tile_the_size_of_the_volume() -> None:
    assert count_tiles(SHAPE, SHAPE, 0.5) == 1


def test_cancel_raises_cancelled_error(brain_crop: np.ndarray) -> None:
    with pytest.raises(CancelledError):
        run_tiled(pointwise_network(), brain_crop, CPU, tile=8, cancel=lambda: True)


def test_cancel_is_checked_between_tiles(brain_crop: np.ndarray) -> None:
    polls: list[int] = []

    def cancel_after_three() -> bool:
        polls.append(1)
        return len(polls) > 3

    progress: list[float] = []
    with pytest.raises(CancelledError):
        run_tiled(pointwise_network(), brain_crop, CPU, tile=8, overlap=0.5, cancel=cancel_after_three,
                  progress=lambda fraction, text: progress.append(fraction))
    assert len(polls) == 4
    assert len(progress) == 3


def test_overlap_outside_zero_one_is_refused(brain_crop: np.ndarray) -> None:
    with pytest.raises(ValueError, match="overlap"):
        run_tiled(pointwise_network(), brain_crop, CPU, tile=8, overlap=1.0)


def test_choose_tile_splits_only_axes_longer_than_a_window_into_balanced_multiples_of_8(
    tiny_network: torch.nn.Module,
) -> None:
    shape = (300, 250, 120)
    tile = choose_tile(tiny_network, shape, torch.device("cpu"))
    halo = inference.receptive_radius(tiny_network)
    window = [n if t == n else t + 2 * halo for t, n in zip(tile, shape)]
    assert np.prod(window) <= inference.MAX_AUTO_TILE["cpu"] ** 3  # at most a cube of the largest edge
    assert tile[2] == 120 and tile != shape  # the short axis whole, a long one split
    for t, n in zip(tile, shape):
        assert t <= n
        if t < n:
            assert t % TILE_MULTIPLE == 0
            windows = -(-n // t)
            assert windows * t - n < TILE_MULTIPLE * windows  # balanced: no nearly empty last window


def test_a_thin_slab_runs_in_few_wide_windows(tiny_network: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    # Thick slices (256 x 256 x 32 input) with memory for 100^3 voxels: the short axis is whole and the in-plane
    # axes split in two, 4 windows of 144 x 144 x 32, where cubes of 100 would have made 16 windows of 80 x 80 x 32
    # (more than twice the voxels computed, halos included).
    per_voxel = inference.activation_bytes_per_input_voxel(tiny_network)
    memory = per_voxel * 100.0**3 / inference.MEMORY_FRACTION
    monkeypatch.setattr(inference, "available_memory_bytes", lambda device: int(memory))
    tile = choose_tile(tiny_network, (256, 256, 32), torch.device("cpu"), halo=8)
    assert tile == (128, 128, 32)
    assert (128 + 16) * (128 + 16) * 32 <= 100**3


def test_choose_tile_for_a_small_volume_takes_the_whole_volume(tiny_network: torch.nn.Module) -> None:
    assert choose_tile(tiny_network, SHAPE, torch.device("cpu")) == SHAPE


def test_choose_tile_shrinks_with_little_memory(tiny_network: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    per_voxel = inference.activation_bytes_per_input_voxel(tiny_network)
    budget_edge = 27.0
    memory = per_voxel * budget_edge**3 / inference.MEMORY_FRACTION
    monkeypatch.setattr(inference, "available_memory_bytes", lambda device: int(memory))
    # 27^3 voxels: 24 along the two shorter axes leaves room for 32 along the longest (32 x 24 x 24 <= 27^3).
    assert choose_tile(tiny_network, (200, 150, 120), torch.device("cpu"), halo=0) == (32, 24, 24)
    # The halo around each tile takes its share of the memory: 27 - 2 * 5 leaves 16.
    assert choose_tile(tiny_network, (200, 150, 120), torch.device("cpu"), halo=5) == (16, 16, 16)
    monkeypatch.setattr(inference, "available_memory_bytes", lambda device: 1)
    assert choose_tile(tiny_network, (200, 150, 120), torch.device("cpu")) == (8, 8, 8)


def test_activation_estimate_grows_with_width() -> None:
    narrow = inference.activation_bytes_per_input_voxel(pointwise_network())
    wide = inference.activation_bytes_per_input_voxel(
        models.create("edsr3d", scale=(2, 2, 2), channels=32, blocks=1, upsample_features=2)
    )
    assert 0 < narrow < wide


@pytest.fixture()
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)


@pytest.mark.parametrize("request_text", ["cpu", "CPU", " cpu "])
def test_select_cpu(request_text: str) -> None:
    choice = select_device(request_text)
    assert choice.device == torch.device("cpu")
    assert choice.note == ""
    assert choice.autocast_dtype is None
    assert choice.describe().startswith("cpu (")


@pytest.mark.parametrize("request_text", ["auto", "", None])
def test_auto_on_a_machine_without_gpu_is_cpu(no_gpu, request_text) -> None:
    choice = select_device(request_text)
    assert choice.device == torch.device("cpu")
    assert choice.note == ""


def test_auto_on_this_machine_picks_cuda_only_when_available() -> None:
    expected = "cuda" if torch.cuda.is_available() else "mps" if device_module._mps_available() else "cpu"
    assert select_device("auto").device.type == expected


@pytest.mark.parametrize("request_text", ["cuda", "cuda:3", "mps"])
def test_unavailable_gpu_falls_back_to_cpu_with_a_note(no_gpu, request_text: str) -> None:
    choice = select_device(request_text)
    assert choice.device == torch.device("cpu")
    assert "not available" in choice.note and "CPU" in choice.note


def test_missing_cuda_index_falls_back_to_cpu_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    choice = select_device("cuda:3")
    assert choice.device == torch.device("cpu")
    assert "no CUDA device 3" in choice.note


@pytest.mark.parametrize("request_text", ["gpu", "cuda:x", "cuda:-1", "tpu"])
def test_malformed_device_is_refused(request_text: str) -> None:
    with pytest.raises(MRISuperResError, match="not understood"):
        select_device(request_text)


@pytest.mark.parametrize("has_bfloat16", [True, False])
def test_precision_on_the_cpu(has_bfloat16: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module, "cpu_has_bfloat16", lambda: has_bfloat16)
    assert select_device("cpu").autocast_dtype is None  # auto: float32 on the CPU
    assert select_device("cpu", "float32").autocast_dtype is None
    asked = select_device("cpu", " BFloat16 ")
    assert asked.autocast_dtype == (torch.bfloat16 if has_bfloat16 else None)
    assert asked.precision == ("bfloat16" if has_bfloat16 else "float32")
    assert (asked.note == "") is has_bfloat16
    assert has_bfloat16 or "this CPU has no bfloat16 instructions (AVX512-BF16 or AMX); running in float32" in asked.note


def test_float32_precision_turns_gpu_autocast_off() -> None:
    assert DeviceChoice(torch.device("cuda", 0), precision="float32").autocast_dtype is None
    assert DeviceChoice(torch.device("mps"), precision="bfloat16").autocast_dtype is None


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(MRISuperResError, match="precision 'float16' is not understood; use auto, float32, bfloat16"):
        select_device("cpu", "float16")
