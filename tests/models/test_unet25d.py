"""2.5D attention residual U-Net against seed 002 (thesis section 2.1, appendix tables 2 and 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets.diffusion_model_unet import SpatialTransformer
from torch.nn import functional as F

from helpers import randomized as randomize_parameters
from MRISuperResLib import models
from MRISuperResLib.processing.bspline import bspline_upsample
from MRISuperResLib.engine.device import DeviceChoice
from MRISuperResLib.engine.inference import run_tiled
from MRISuperResLib.models.unet25d import AdaDM, AttentionResUNet2d, ResBlock2d, UNet25D

TINY = {"channels": 4, "channel_mult": [1, 2], "res_blocks": 1, "groups": 2}


@pytest.fixture(autouse=True)
def seeded_single_thread():
    """Networks are built from torch's global generator: fix it so no test depends on the order of the others.
    One thread: these tiny networks gain nothing from more, and stay steady on a busy machine."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomized(network: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    return randomize_parameters(network, seed, std=0.1, perturb=True)


@pytest.mark.parametrize("scale", [(2, 2, 2), (1, 1, 4)])
def test_seed_configuration_output_shapes_with_and_without_context(scale) -> None:
    # On the meta device: the same code path with shapes only (the seed model costs ~30 GFLOP per call here);
    # the small configurations run for real in every other test.
    config = models.seed_config("unet25d", scale)
    assert config["channel_mult"] == [1, 2, 2, 2, 2] and config["groups"] == 16 and config["res_blocks"] == 3
    with torch.device("meta"):
        network = models.create("unet25d", **config).eval()
        x = torch.rand(2, 1, 5, 6, 3)
        context = torch.rand(2, 4)  # age, sex, diagnosis, slice position
    expected = (2, 1, *(n * s for n, s in zip(x.shape[2:], scale)))
    with torch.inference_mode():
        assert network(x).shape == expected
        assert network(x, context).shape == expected


def test_thesis_structure_stages_bottleneck_and_attention() -> None:
    network = models.create("unet25d", **models.seed_config("unet25d")).network
    assert network.conv_in.conv.in_channels == 3  # three neighbouring slices
    assert len(network.down) == 5 and all(len(stage.blocks) == 3 for stage in network.down)
    widths = [stage.blocks[0].conv1.conv.out_channels for stage in network.down]
    assert widths == [64, 128, 128, 128, 128]
    # Cross-attention after every residual block of stages 3-5, none before (memory, section 3.4.1).
    assert [stage.attention is not None for stage in network.down] == [False, False, True, True, True]
    assert all(isinstance(a, SpatialTransformer) for a in network.down[2].attention)
    # Bottleneck: residual block, self-attention, residual block.
    assert isinstance(network.middle1, ResBlock2d) and isinstance(network.middle2, ResBlock2d)
    assert isinstance(network.middle_attention, SpatialTransformer) and not network.middle_cross
    block = network.down[0].blocks[0]
    assert isinstance(block.norm1, torch.nn.GroupNorm) and block.norm1.num_groups == 16
    assert isinstance(block.act, torch.nn.SiLU) and isinstance(block.adadm, AdaDM)
    assert isinstance(network.out_norm, torch.nn.GroupNorm)


def test_default_slice_axis_puts_the_super_resolved_axes_in_the_planes() -> None:
    assert UNet25D((2, 2, 2), **TINY).slice_axis == 2
    assert UNet25D((1, 1, 4), **TINY).slice_axis == 0
    assert UNet25D((2, 2, 1), **TINY).slice_axis == 2
    assert UNet25D((2, 2, 2), slice_axis=1, **TINY).slice_axis == 1


@pytest.mark.parametrize("slices", [3, 5])
def test_volume_forward_is_the_2d_network_over_bspline_slices_with_replicated_edges(slices: int) -> None:
    network = randomized(UNet25D((1, 2, 1), slice_axis=0, input_slices=slices, **TINY))
    x = torch.rand(1, 1, 4, 3, 8)
    with torch.inference_mode():
        out = network(x)
        fine = bspline_upsample(x, (1, 2, 1))[0, 0]  # (4, 6, 8): slices along i
        half = slices // 2
        for i in range(4):
            rows = [min(max(i + d, 0), 3) for d in range(-half, half + 1)]
            planes = fine[rows][None]  # (1, slices, 6, 8)
            expected = network.network(F.pad(planes, (0, 0, 0, 2), mode="replicate"))[0, 0, :6]
            torch.testing.assert_close(out[0, 0, i], expected, rtol=0, atol=1e-5)


def test_plane_batching_does_not_change_the_result() -> None:
    network = randomized(UNet25D((2, 2, 2), **TINY))
    x = torch.rand(1, 1, 4, 5, 3)
    with torch.inference_mode():
        reference = network(x)
        network.plane_batch = 2
        torch.testing.assert_close(network(x), reference, rtol=0, atol=1e-6)


def test_adadm_rescales_the_residual_by_the_input_deviation() -> None:
    adadm = AdaDM()
    with torch.no_grad():
        adadm.weight.fill_(0.5)
        adadm.bias.fill_(0.25)
    x = torch.randn(2, 3, 4, 4) * torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)
    h = torch.rand(2, 3, 4, 4)
    std = x.flatten(1).std(dim=1, unbiased=False).view(2, 1, 1, 1)
    torch.testing.assert_close(adadm(h, x), h * torch.exp(0.5 * torch.log(std + 1e-5) + 0.25))


def test_drop_last_norm_removes_only_the_final_normalisation() -> None:
    kept = UNet25D((2, 2, 2), **TINY)
    dropped = UNet25D((2, 2, 2), drop_last_norm=True, **TINY)
    assert isinstance(kept.network.out_norm, torch.nn.GroupNorm)
    assert isinstance(dropped.network.out_norm, torch.nn.Identity)
    count = lambda m: sum(isinstance(n, torch.nn.GroupNorm) for n in m.modules())  # noqa: E731
    assert count(kept) == count(dropped) + 1


def test_cross_attention_conditions_on_the_context_and_runs_without_it() -> None:
    network = randomized(UNet25D((2, 2, 2), cross_attention_stages=[2, 3], context_dim=3, **TINY))
    assert network.network.middle_cross and network.network.down[1].attention is not None
    x = torch.rand(2, 1, 4, 4, 2)
    with torch.inference_mode():
        old, young = network(x, torch.tensor([[1.0, 0.0, 0.0]] * 2)), network(x, torch.tensor([[0.0, 1.0, 0.0]] * 2))
        unknown = network(x)
        null = network(x, network.network.null_context[:, 0].expand(2, 3))
    assert not torch.allclose(old, young)
    torch.testing.assert_close(unknown, null)  # no context = the learned "unknown" context


def test_without_conditioning_the_context_is_ignored() -> None:
    network = randomized(UNet25D((2, 2, 2), **TINY))
    x = torch.rand(1, 1, 4, 4, 2)
    with torch.inference_mode():
        assert torch.equal(network(x), network(x, torch.rand(1, 4)))


@pytest.mark.parametrize(("changes", "message"), [
    ({"input_slices": 4}, "input_slices must be odd"),
    ({"groups": 3}, "groups .3. must divide channels"),
    ({"cross_attention_stages": [4], "context_dim": 2}, "within 1..3"),
    ({"cross_attention_stages": [2]}, "needs a context"),
])
def test_invalid_configurations_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UNet25D((2, 2, 2), **{**TINY, **changes})


def test_untrained_model_returns_a_zero_residual() -> None:
    with torch.inference_mode():
        assert torch.count_nonzero(UNet25D((1, 1, 4), **TINY)(torch.rand(1, 1, 3, 4, 5))) == 0


def test_core_network_needs_plane_edges_divisible_by_the_stage_count() -> None:
    core = AttentionResUNet2d(input_slices=3, **TINY)
    assert core.size_multiple == 4
    assert core(torch.rand(2, 3, 8, 12)).shape == (2, 1, 8, 12)


def test_tiles_of_whole_planes_are_exact_and_smaller_tiles_approximate(small_real_volume) -> None:
    # GroupNorm, AdaDM and attention see whole planes: tiles spanning whole planes (split only along the slice
    # axis) reproduce whole-volume inference; tiles cutting planes do not (documented), yet stay in place.
    network = randomized(UNet25D((1, 1, 2), halo=6, **TINY), seed=2)
    assert network.slice_axis == 0
    array = small_real_volume.array[6:22, 8:24, 10:22] / small_real_volume.array.max()
    device = DeviceChoice(torch.device("cpu"))
    with torch.inference_mode():
        direct = network(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None])[0, 0].numpy()
    whole = run_tiled(network, array, device, tile=array.shape)
    np.testing.assert_allclose(whole, direct, rtol=0, atol=1e-6)
    planes = run_tiled(network, array, device, tile=(5, 16, 12))
    np.testing.assert_allclose(planes, whole, rtol=0, atol=1e-5 * float(np.abs(whole).max()))
    tiled = run_tiled(network, array, device, tile=8)
    assert tiled.shape == whole.shape and np.isfinite(tiled).all()
