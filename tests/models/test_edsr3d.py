"""EDSR-3D against seed 001: seed configuration, the refining (B-spline upsampler) variant, receptive radius.

Shape, skip and pixel-shuffle tests of the sub-pixel form are in test_models.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import randomized
from MRISuperResLib import models
from MRISuperResLib.processing.bspline import bspline_upsample
from MRISuperResLib.engine.device import DeviceChoice
from MRISuperResLib.engine.inference import run_tiled
from MRISuperResLib.models.edsr3d import EDSR3D
from MRISuperResLib.models.layers import BSPLINE_HALO

TINY = {"channels": 4, "blocks": 1, "kernel_size": 3, "upsample_features": 2}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("scale", [(2, 2, 2), (1, 1, 4)])
@pytest.mark.parametrize("upsampler", ["subpixel", "bspline"])
def test_seed_configuration_output_shapes(scale, upsampler: str) -> None:
    config = models.seed_config("edsr3d", scale)
    assert (config["blocks"], config["channels"], config["kernel_size"]) == (9, 64, 3)
    network = models.create("edsr3d", **config, upsampler=upsampler).eval()
    x = torch.rand(1, 1, 6, 5, 4)
    with torch.inference_mode():
        out = network(x)
    assert out.shape == (1, 1, 6 * scale[0], 5 * scale[1], 4 * scale[2])
    residual_blocks = [m for m in network.body if m.__class__.__name__ == "ResidualBlock3d"]
    assert len(residual_blocks) == 9


def test_refining_variant_is_a_scale_one_network_on_the_bspline_upsampling() -> None:
    refine = randomized(EDSR3D((1, 2, 3), upsampler="bspline", global_skip="none", **TINY))
    scale_one = EDSR3D((1, 1, 1), upsampler="bspline", global_skip="none", **TINY).eval()
    scale_one.load_state_dict(refine.state_dict())
    x = torch.rand(1, 1, 5, 6, 4)
    with torch.inference_mode():
        torch.testing.assert_close(refine(x), scale_one(bspline_upsample(x, (1, 2, 3))), rtol=0, atol=1e-6)


def test_refining_variant_has_no_subpixel_layer_and_starts_as_the_baseline() -> None:
    network = EDSR3D((2, 2, 2), upsampler="bspline", **TINY).eval()
    assert isinstance(network.upsample, torch.nn.Identity)
    with torch.inference_mode():
        assert torch.count_nonzero(network(torch.rand(1, 1, 4, 4, 4))) == 0


def test_unknown_upsampler_is_refused() -> None:
    with pytest.raises(ValueError, match="upsampler"):
        EDSR3D(upsampler="deconv", **TINY)


def _influence_radius(network: torch.nn.Module, scale, size: int = 24) -> int:
    """Largest distance (input voxels) from an impulse at the centre to an output voxel it changes."""
    x = torch.zeros(1, 1, size, size, size)
    bumped = x.clone()
    bumped[0, 0, size // 2, size // 2, size // 2] = 1.0
    with torch.inference_mode():
        change = (network(bumped) - network(x)).abs()[0, 0] > 1e-7
    radius = 0
    for axis, factor in enumerate(scale):
        positions = change.nonzero()[:, axis].double()
        coarse = (positions + 0.5) / factor - 0.5
        radius = max(radius, int(np.ceil((coarse - size // 2).abs().max().item())))
    return radius


@pytest.mark.parametrize("upsampler", ["subpixel", "bspline"])
def test_receptive_radius_bounds_the_influence_of_a_voxel(upsampler: str) -> None:
    scale = (1, 2, 2)
    network = randomized(EDSR3D(scale, upsampler=upsampler, global_skip="none", **TINY))
    measured = _influence_radius(network, scale, size=40 if upsampler == "bspline" else 24)
    assert measured <= network.receptive_radius
    if upsampler == "subpixel":
        assert measured >= network.receptive_radius - 1  # tight: the halo is not wasted


def test_refining_variant_tiles_join_exactly(small_real_volume) -> None:
    # The in-network B-spline has an infinite (decaying) prefilter: the halo includes enough of it, and without
    # that part of the halo the tiles show.
    network = randomized(EDSR3D((1, 2, 2), upsampler="bspline", global_skip="none", **TINY))
    array = small_real_volume.array[:20, :16, :16] / small_real_volume.array.max()
    device = DeviceChoice(torch.device("cpu"))
    whole = run_tiled(network, array, device, tile=array.shape)
    tolerance = 1e-5 * float(np.abs(whole).max())
    tiled = run_tiled(network, array, device, tile=10)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=tolerance)
    # Touching tiles (none moved back at a face), so every seam shows what the short halo misses.
    short_halo = run_tiled(network, array, device, tile=(10, 8, 8), halo=network.receptive_radius - BSPLINE_HALO)
    assert np.abs(short_halo - whole).max() > 10 * tolerance


@pytest.mark.parametrize("scale", [(2, 2, 2), (1, 1, 4)])
def test_a_grown_network_computes_what_the_smaller_one_did_and_can_learn_in_its_new_parts(scale) -> None:
    from MRISuperResLib.models.edsr3d import EDSR3D, grow_state_dict

    torch.manual_seed(5)
    small = {"scale": list(scale), "channels": 8, "blocks": 2, "upsample_features": 4, "global_skip": "baseline"}
    before = EDSR3D(**small)
    for parameter in before.parameters():  # a trained model: no zero tail
        torch.nn.init.normal_(parameter, std=0.1)
    grown = EDSR3D(**{**small, "channels": 12, "blocks": 4})
    grown.load_state_dict(grow_state_dict(grown, before.state_dict(), small))
    x = torch.randn(1, 1, 10, 9, 8)
    with torch.no_grad():
        torch.testing.assert_close(grown(x), before(x), rtol=1e-4, atol=1e-4)  # sums reordered only
    grown(x).square().mean().backward()
    new_block = grown.body[3].body[2].conv.weight
    assert new_block.grad is not None and new_block.grad.abs().sum() > 0  # zero-initialised, yet it learns
    assert grown.upsample[0].conv.weight.grad[:, 8:].abs().sum() > 0  # so do the weights out of new channels


def test_growth_refuses_what_would_change_the_function() -> None:
    from MRISuperResLib.models.edsr3d import EDSR3D, grow_state_dict

    small = {"scale": [2, 2, 2], "channels": 8, "blocks": 2, "upsample_features": 4}
    state = EDSR3D(**small).state_dict()
    with pytest.raises(ValueError, match="can only grow"):
        grow_state_dict(EDSR3D(**{**small, "channels": 4}), state, small)
    with pytest.raises(ValueError, match="scale"):
        grow_state_dict(EDSR3D(**{**small, "scale": [1, 1, 4]}), state, small)
    with pytest.raises(ValueError, match="upsample_features"):
        grow_state_dict(EDSR3D(**{**small, "upsample_features": 8}), state, small)


def test_growth_refuses_another_residual_scale_and_wider_bspline_refiners() -> None:
    from MRISuperResLib.models.edsr3d import EDSR3D, grow_state_dict

    small = {"scale": [2, 2, 2], "channels": 8, "blocks": 2, "upsample_features": 4}
    state = EDSR3D(**small).state_dict()
    with pytest.raises(ValueError, match="res_scale"):
        grow_state_dict(EDSR3D(**{**small, "blocks": 3, "res_scale": 0.1}), state, small)
    refiner = {**small, "upsampler": "bspline"}
    refiner_state = EDSR3D(**refiner).state_dict()
    with pytest.raises(ValueError, match="channels cannot grow; grow blocks only"):
        grow_state_dict(EDSR3D(**{**refiner, "channels": 12}), refiner_state, refiner)
    deeper = EDSR3D(**{**refiner, "blocks": 4})
    deeper.load_state_dict(grow_state_dict(deeper, refiner_state, refiner))  # depth alone is fine
