"""SRDenseNet against seed 003 (De Leeuw Den Bouter et al. 2022; Tong et al. 2017, SRDenseNet_All)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import randomized as randomize_parameters
from MRISuperResLib import models
from MRISuperResLib.engine.device import DeviceChoice
from MRISuperResLib.engine.inference import run_tiled
from MRISuperResLib.models.srdensenet import DenseBlock, SRDenseNet

TINY = {"blocks": 2, "layers": 3, "growth": 4, "bottleneck": 8}


pytestmark = pytest.mark.usefixtures("single_thread")


def randomized(network: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    return randomize_parameters(network, seed, std=0.3, perturb=False)


@pytest.mark.parametrize(("scale", "dims", "slice_axis"), [
    ((2, 2, 1), 2, 2),  # the paper's in-plane x2, slices along k
    ((1, 1, 4), 2, 0),  # thick slices: (j, k) planes, x4 along k
    ((2, 2, 2), 3, None),
    ((1, 1, 4), 3, None),
])
def test_seed_configuration_output_shapes(scale, dims: int, slice_axis) -> None:
    config = {**models.seed_config("srdensenet", scale), "spatial_dims": dims}
    network = models.create("srdensenet", **config).eval()
    assert network.slice_axis == slice_axis
    x = torch.rand(1, 1, 5, 4, 6) if dims == 3 else torch.rand(1, 1, 6, 5, 4)
    with torch.inference_mode():
        out = network(x)
    assert out.shape == (1, 1, *(n * s for n, s in zip(x.shape[2:], scale)))


def test_seed_configuration_is_8_dense_blocks_of_8_layers_growth_16_into_a_256_bottleneck() -> None:
    network = models.create("srdensenet", **models.seed_config("srdensenet", (2, 2, 1)))
    assert len(network.blocks) == 8 and all(len(block.layers) == 8 for block in network.blocks)
    assert {layer.conv.out_channels for block in network.blocks for layer in block.layers} == {16}
    # SRDenseNet_All: low-level features and every block's 128 maps reach the bottleneck (9 x 128 = 1152).
    assert network.bottleneck.conv.in_channels == 1152
    assert network.bottleneck.conv.out_channels == 256 and network.bottleneck.conv.kernel_size == (1, 1)
    transposed = [m for m in network.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(transposed) == 1 and transposed[0].stride == (2, 2) and transposed[0].kernel_size == (3, 3)
    assert network.reconstruction.conv.kernel_size == (3, 3) and network.reconstruction.conv.out_channels == 1


def test_x4_uses_two_x2_deconvolutions_as_tong_et_al() -> None:
    network = models.create("srdensenet", **models.seed_config("srdensenet", (1, 1, 4)))
    strides = [m.stride for m in network.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert strides == [(1, 2), (1, 2)]  # (j, k) planes: x2 twice along k only


def test_relu_follows_every_layer_but_the_last() -> None:
    network = SRDenseNet((2, 2, 1), **TINY)
    relus = [m for m in network.modules() if isinstance(m, torch.nn.ReLU)]
    convolutions = [m for m in network.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(relus) == len(convolutions) - 1
    assert not any(isinstance(m, torch.nn.ReLU) for m in network.reconstruction.modules())
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)) for m in network.modules())


def test_dense_layers_see_the_outputs_of_all_earlier_layers() -> None:
    block = DenseBlock(2, in_channels=5, growth=3, layers=4)
    assert [layer.conv.in_channels for layer in block.layers] == [5, 3, 6, 9]
    assert block(torch.rand(1, 5, 6, 6)).shape == (1, 12, 6, 6)


def test_2d_form_refuses_a_scale_without_a_factor_one() -> None:
    with pytest.raises(ValueError, match="needs spatial_dims=3"):
        SRDenseNet((2, 2, 2), spatial_dims=2)
    with pytest.raises(ValueError, match="slice_axis 2 must be"):
        SRDenseNet((1, 2, 2), spatial_dims=2, slice_axis=2)


def test_2d_form_is_the_2d_network_applied_slice_by_slice() -> None:
    network = randomized(SRDenseNet((1, 1, 3), spatial_dims=2, global_skip="none", **TINY))
    x = torch.rand(2, 1, 4, 5, 6)
    with torch.inference_mode():
        out = network(x)
        for i in range(4):
            torch.testing.assert_close(out[:, :, i], network.forward_planes(x[:, :, i]), rtol=0, atol=1e-6)


def test_2d_form_does_not_mix_slices() -> None:
    network = randomized(SRDenseNet((2, 2, 1), spatial_dims=2, global_skip="none", **TINY))
    x = torch.rand(1, 1, 5, 5, 4)
    bumped = x.clone()
    bumped[..., 1] += 1.0
    with torch.inference_mode():
        change = (network(bumped) - network(x)).abs().amax(dim=(0, 1, 2, 3))
    assert change[1] > 0 and torch.all(change[[0, 2, 3]] == 0)


def test_untrained_residual_model_starts_as_the_baseline_and_none_skip_does_not() -> None:
    x = torch.rand(1, 1, 4, 4, 4)
    with torch.inference_mode():
        assert torch.count_nonzero(SRDenseNet((2, 2, 1), **TINY)(x)) == 0
        assert torch.count_nonzero(SRDenseNet((2, 2, 1), global_skip="none", **TINY)(x)) > 0


@pytest.mark.parametrize(("scale", "dims"), [((2, 2, 1), 2), ((1, 1, 4), 2), ((1, 2, 3), 3)])
def test_tiles_join_exactly(small_real_volume, scale, dims: int) -> None:
    network = randomized(SRDenseNet(scale, spatial_dims=dims, global_skip="none", **TINY), seed=1)
    array = small_real_volume.array[4:20, 6:22, 8:20] / small_real_volume.array.max()
    device = DeviceChoice(torch.device("cpu"))
    whole = run_tiled(network, array, device, tile=array.shape)
    tiled = run_tiled(network, array, device, tile=8)
    assert whole.shape == tuple(n * s for n, s in zip(array.shape, scale))
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5 * float(np.abs(whole).max()))
