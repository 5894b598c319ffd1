"""Model registry, EDSR-3D and its layers (MRISuperResLib.models)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from MRISuperResLib import models
from MRISuperResLib.models.edsr3d import EDSR3D
from MRISuperResLib.models.layers import AnisotropicPixelShuffle3d, trilinear_upsample

TINY = {"channels": 8, "blocks": 1, "kernel_size": 3, "upsample_features": 2}


def tiny_edsr(scale=(2, 2, 2), global_skip: str = "baseline") -> EDSR3D:
    torch.manual_seed(0)
    return models.create("edsr3d", scale=scale, global_skip=global_skip, **TINY).eval()


def test_registry_lists_edsr3d() -> None:
    assert "edsr3d" in models.FAMILIES
    assert models.family_class("edsr3d") is EDSR3D
    assert isinstance(models.family_spec("edsr3d").builder(**TINY), EDSR3D)


def test_each_familys_config_keys_are_its_class_keyword_arguments() -> None:
    """The registry's declared config keys match what each class accepts (the trainer relies on them)."""
    import inspect

    for family in models.FAMILIES:
        accepted = set(inspect.signature(models.family_class(family).__init__).parameters) - {"self"}
        assert models.family_spec(family).config_keys == accepted, family
    assert "scale" not in models.family_spec("arssr").config_keys  # arbitrary scale: no fixed factor


def test_monai_convolution_and_conv_block_share_names_and_outputs() -> None:
    """ConvBlock stands in for MONAI's Convolution in the families: same tensor names, same arithmetic."""
    from monai.networks.blocks import Convolution

    from MRISuperResLib.models.layers import ConvBlock

    x3, x2 = torch.randn(1, 4, 6, 7, 5), torch.randn(1, 4, 6, 7)
    cases = [
        (Convolution(3, 4, 3, kernel_size=3, conv_only=True), ConvBlock(3, 4, 3, 3), x3),
        (Convolution(3, 4, 3, kernel_size=1, act="RELU", norm=None), ConvBlock(3, 4, 3, 1, relu=True), x3),
        (Convolution(2, 4, 3, kernel_size=5, act="RELU", norm=None), ConvBlock(2, 4, 3, 5, relu=True), x2),
        (Convolution(3, 4, 3, strides=(2, 2, 1), kernel_size=(4, 4, 3), padding=(1, 1, 1), output_padding=0,
                     is_transposed=True, act="RELU", norm=None),
         ConvBlock(3, 4, 3, (4, 4, 3), relu=True, transposed=True, stride=(2, 2, 1), padding=(1, 1, 1)), x3),
    ]
    for reference, block, x in cases:
        assert list(block.state_dict()) == list(reference.state_dict())
        block.load_state_dict(reference.state_dict())
        with torch.no_grad():
            assert torch.equal(block(x), reference(x))


def test_running_the_shipped_family_imports_no_monai() -> None:
    """Loading and running an EDSR-3D model (every shipped model) must not pay MONAI's import in the process."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from MRISuperResLib.engine.model_zoo import load_model\n"
        "from MRISuperResLib.engine.enhance import enhance_volume\n"
        "from MRISuperResLib.imaging.volume import Grid, Volume\n"
        "volume = Volume(np.random.default_rng(0).random((12, 12, 12), dtype=np.float32), Grid((12, 12, 12), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0)))\n"
        "enhance_volume(volume, load_model('default', (2.0, 2.0, 2.0)), 2, device='cpu')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('monai', 'matplotlib')))\n"
    )
    root = Path(__file__).resolve().parents[2] / "MRISuperRes"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"})
    assert done.stdout.strip() == "[]"


def test_create_with_unknown_family_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown model family 'srgan'.*edsr3d"):
        models.create("srgan")


def test_supported_scales_of_edsr3d_is_its_configured_scale() -> None:
    assert models.supported_scales("edsr3d", {"scale": [1, 1, 4]}) == [(1.0, 1.0, 4.0)]
    assert models.supported_scales("edsr3d", {}) == [(2.0, 2.0, 2.0)]


@pytest.mark.parametrize("scale", [(2, 2, 2), (1, 1, 4), (1, 1, 1), (3, 2, 1)])
@pytest.mark.parametrize("global_skip", ["baseline", "trilinear", "none"])
def test_edsr3d_output_is_the_input_times_the_scale(scale, global_skip: str) -> None:
    network = tiny_edsr(scale, global_skip)
    x = torch.rand(2, 1, 5, 6, 7)
    with torch.inference_mode():
        out = network(x)
    assert out.shape == (2, 1, 5 * scale[0], 6 * scale[1], 7 * scale[2])
    assert out.dtype == torch.float32


@pytest.mark.parametrize("scale", [(2, 2), (0, 1, 1), (1.5, 2, 2)])
def test_edsr3d_refuses_non_integer_or_missing_factors(scale) -> None:
    with pytest.raises(ValueError, match="three integer factors"):
        EDSR3D(scale=scale, **TINY)


def test_edsr3d_refuses_unknown_global_skip() -> None:
    with pytest.raises(ValueError, match="global_skip"):
        EDSR3D(global_skip="bicubic", **TINY)


def test_untrained_baseline_model_outputs_exactly_zero() -> None:
    network = tiny_edsr((2, 2, 2), "baseline")
    assert network.residual_to_baseline
    with torch.inference_mode():
        out = network(torch.rand(1, 1, 6, 5, 4))
    assert torch.count_nonzero(out) == 0


def test_untrained_trilinear_model_returns_trilinear_upsampling() -> None:
    network = tiny_edsr((1, 2, 3), "trilinear")
    assert not network.residual_to_baseline
    x = torch.rand(1, 1, 6, 5, 4)
    with torch.inference_mode():
        out = network(x)
    expected = F.interpolate(x, size=(6, 10, 12), mode="trilinear", align_corners=False)
    assert torch.equal(out, expected)


def test_untrained_model_without_skip_is_not_zero() -> None:
    network = tiny_edsr((2, 2, 2), "none")
    with torch.inference_mode():
        out = network(torch.rand(1, 1, 6, 5, 4))
    assert torch.count_nonzero(out) > 0


def test_trilinear_upsample_is_cell_centred() -> None:
    # A ramp along i sampled at coarse centres 0..n-1 must come out sampled at the fine centres
    # (m + 1/2) / s - 1/2 (in coarse index units), exactly in the interior.
    ramp = torch.arange(6, dtype=torch.float32).view(1, 1, 6, 1, 1).expand(1, 1, 6, 2, 2).contiguous()
    out = trilinear_upsample(ramp, (4, 1, 1))[0, 0, :, 0, 0]
    expected = (torch.arange(24, dtype=torch.float32) + 0.5) / 4 - 0.5
    torch.testing.assert_close(out[2:-2], expected[2:-2], rtol=0, atol=1e-6)


def test_pixel_shuffle_matches_torch_pixel_shuffle_when_the_last_factor_is_one() -> None:
    x = torch.randn(2, 3 * 4, 5, 6, 3)
    out = AnisotropicPixelShuffle3d((2, 2, 1))(x)
    assert out.shape == (2, 3, 10, 12, 3)
    for k in range(3):
        assert torch.equal(out[..., k], torch.nn.PixelShuffle(2)(x[..., k]))


def test_pixel_shuffle_follows_its_documented_channel_layout() -> None:
    factors = (2, 3, 4)
    r_i, r_j, r_k = factors
    x = torch.randn(1, 2 * r_i * r_j * r_k, 3, 2, 2)
    out = AnisotropicPixelShuffle3d(factors)(x)
    assert out.shape == (1, 2, 3 * r_i, 2 * r_j, 2 * r_k)
    for c in range(2):
        for a in range(r_i):
            for b in range(r_j):
                for d in range(r_k):
                    channel = c * (r_i * r_j * r_k) + (a * r_j + b) * r_k + d
                    assert torch.equal(out[0, c, a::r_i, b::r_j, d::r_k], x[0, channel])


def test_pixel_shuffle_is_a_bijection() -> None:
    x = torch.arange(2 * 3 * 4 * 4 * 3 * 2, dtype=torch.float32).view(2, 3 * 4, 4, 3, 2)
    out = AnisotropicPixelShuffle3d((1, 3, 4))(x)
    assert out.numel() == x.numel()
    assert torch.equal(torch.sort(out.flatten()).values, x.flatten())


def test_parameter_count_is_the_number_of_trainable_weights() -> None:
    network = tiny_edsr()
    assert models.parameter_count(network) == sum(p.numel() for p in network.parameters())
    total = sum(p.numel() for p in network.parameters())
    network.head.conv.weight.requires_grad_(False)
    assert models.parameter_count(network) == total - network.head.conv.weight.numel()


def test_flops_per_output_voxel_is_positive_and_grows_with_width() -> None:
    small = models.flops_per_output_voxel(tiny_edsr(), (2, 2, 2), probe=8)
    wide = models.flops_per_output_voxel(
        models.create("edsr3d", scale=(2, 2, 2), channels=16, blocks=1, upsample_features=2), (2, 2, 2), probe=8
    )
    assert small > 0
    assert wide > small
