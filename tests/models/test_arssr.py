"""ArSSR against seed 004 (Wu et al. 2021): encoders, MLP decoder, arbitrary and anisotropic scales."""

from __future__ import annotations

import pytest
import torch

from MRISuperResLib import models
from MRISuperResLib.models.arssr import ArSSR, MLPDecoder, decoder_offsets

TINY = {"feature_dim": 4, "decoder_depth": 4, "decoder_width": 8, "features": 4, "rdn_blocks": 1, "rdn_layers": 1,
        "rescnn_layers": 1, "srresnet_blocks": 1}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("scale", [2.0, (1.0, 1.0, 4.0), 3.2, (1.5, 1.5, 3.0)])
def test_seed_configuration_output_shapes(scale) -> None:
    factors = (scale,) * 3 if isinstance(scale, float) else scale
    network = models.create("arssr", **models.seed_config("arssr")).eval()
    x = torch.rand(1, 1, 5, 6, 4)
    shape = [round(n * s) for n, s in zip(x.shape[2:], factors)]
    with torch.inference_mode():
        assert network(x, shape).shape == (1, 1, *shape)


@pytest.mark.parametrize("encoder", ["rdn", "rescnn", "srresnet"])
def test_every_encoder_runs_at_a_non_integer_scale(encoder: str) -> None:
    network = ArSSR(encoder, **TINY).eval()
    with torch.inference_mode():
        assert network(torch.rand(2, 1, 4, 5, 3), (13, 16, 10)).shape == (2, 1, 13, 16, 10)


def test_paper_defaults_depth_8_width_256_features_128() -> None:
    network = ArSSR()
    assert network.feature_dim == 128
    linear = [m for m in network.decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 8 and linear[0].in_features == 128 + 3
    assert {m.out_features for m in linear[:3]} == {256}


def test_decoder_is_two_stages_with_the_reference_skip() -> None:
    decoder = MLPDecoder(5, depth=4, width=6)
    z = torch.rand(7, 5)
    torch.testing.assert_close(decoder(z), decoder.stage_two(z + decoder.stage_one(z)))
    assert decoder(z).shape == (7, 1)
    with pytest.raises(ValueError, match="even and >= 4"):
        MLPDecoder(5, depth=5)


def test_intensity_output_ends_in_relu_and_residual_output_does_not() -> None:
    intensity = ArSSR(global_skip="none", **TINY)
    residual = ArSSR(**TINY)
    assert isinstance(intensity.decoder.stage_two[-1], torch.nn.ReLU)
    assert isinstance(residual.decoder.stage_two[-1], torch.nn.Linear)
    with torch.inference_mode():
        assert torch.count_nonzero(residual.eval()(torch.rand(1, 1, 3, 3, 3), (7, 7, 7))) == 0
        assert (intensity.eval()(torch.rand(1, 1, 3, 3, 3), (7, 7, 7)) >= 0).all()


def test_encoder_runs_once_however_many_decoder_chunks() -> None:
    network = ArSSR(**TINY).eval()
    calls = []
    network.encoder.register_forward_hook(lambda *args: calls.append(1))
    x = torch.rand(1, 1, 4, 4, 4)
    with torch.inference_mode():
        whole = network(x, (10, 10, 10))
        chunked = network(x, (10, 10, 10), chunk_points=37)
    assert len(calls) == 2  # once per forward, not once per chunk or per output slice
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


def test_decoder_offsets_are_the_doubled_distance_to_the_nearest_centre() -> None:
    positions = torch.tensor([[-0.25, 0.0, 0.49], [1.75, 2.5 - 1e-9, 3.125]], dtype=torch.float64)
    expected = torch.tensor([[-0.5, 0.0, 0.98], [-0.5, 1.0, 0.25]])
    torch.testing.assert_close(decoder_offsets(positions), expected, rtol=0, atol=1e-6)
    assert decoder_offsets(torch.rand(100, 3, dtype=torch.float64) * 10).abs().max() <= 1.0


def test_unknown_encoder_and_skip_are_refused() -> None:
    with pytest.raises(ValueError, match="encoder must be one of"):
        ArSSR("unet")
    with pytest.raises(ValueError, match="global_skip"):
        ArSSR(global_skip="trilinear")
    with pytest.raises(ValueError, match="rdn_features"):
        models.arssr.RDNEncoder(features=32, growth=64)
