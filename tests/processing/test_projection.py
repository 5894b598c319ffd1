"""The data-consistency projection (MRISuperResLib.processing.projection) and its place in enhance."""

from __future__ import annotations

import numpy as np
import pytest

from MRISuperResLib.engine.enhance import enhance_volume
from MRISuperResLib.engine.options import EnhanceOptions
from MRISuperResLib.evaluation.evaluate import evaluation_spec, simulated_pair
from MRISuperResLib.evaluation.metrics import psnr
from MRISuperResLib.engine.model_zoo import load_model
from MRISuperResLib.imaging.volume import Grid, Volume
from MRISuperResLib.processing.degradation import DegradationSpec, degrade
from MRISuperResLib.processing.masks import foreground_mask
from MRISuperResLib.processing.projection import (
    NOISE_FLOOR_FACTOR, SHELLS, back_project, background_noise_power, background_voxels, noise_power_of, project,
    robust_sigma_of, shell_weights)


@pytest.fixture(scope="module")
def brain(small_real_volume: Volume) -> np.ndarray:
    """A small real brain (about 40 x 48 x 40), cropped to even sizes."""
    array = small_real_volume.array
    return np.ascontiguousarray(array[: array.shape[0] // 4 * 4, : array.shape[1] // 4 * 4,
                                      : array.shape[2] // 4 * 4]).astype(np.float32)


@pytest.mark.parametrize(("kind", "factors"), [("kspace", (2, 2, 2)), (("kspace", "kspace", "box"), (1, 1, 4)),
                                               ("gaussian", (2, 1, 2)), ("box", (1, 3 / 2, 1))])
def test_the_exact_projection_explains_the_input_and_comes_closer_to_the_truth(
    brain: np.ndarray, kind, factors
) -> None:
    spec = DegradationSpec(kind=kind)
    coarse = tuple(int(round(n / f)) for n, f in zip(brain.shape, factors))
    measured = degrade(brain, coarse, spec)
    rng = np.random.default_rng(1)
    estimate = brain + 0.05 * float(brain.max()) * rng.standard_normal(brain.shape).astype(np.float32)
    projected, report = project(estimate, measured, spec, float(brain.max()), factor=0.0)
    assert projected.shape == brain.shape and projected.dtype == np.float32
    np.testing.assert_allclose(degrade(projected, coarse, spec), measured, atol=1e-4 * float(brain.max()))
    assert report.nrmse_after < 1e-5 < report.nrmse_before
    assert np.linalg.norm(projected - brain) < np.linalg.norm(estimate - brain)
    assert report.weights == (1.0,) * SHELLS


def test_back_projection_is_minimum_norm_in_k_space_and_smoothest_across_slices() -> None:
    spec = DegradationSpec(kind=("kspace", "kspace", "box"))
    residual = np.random.default_rng(2).standard_normal((20, 24, 5))
    fine = back_project(residual, (40, 48, 20), spec)
    np.testing.assert_allclose(degrade(fine, residual.shape, spec), residual, atol=1e-5)
    # In-plane (k-space): any other solution adds a null-space component, orthogonal to the minimum-norm one.
    other = fine + np.cos(np.pi * np.arange(40))[:, None, None].astype(np.float32)  # the highest frequency along i
    np.testing.assert_allclose(degrade(other, residual.shape, spec), residual, atol=1e-4)
    assert np.linalg.norm(fine) < np.linalg.norm(other)
    # Across slices (box profile): the smoothest correction, smoother than the pseudoinverse's value per slab.
    thick = np.random.default_rng(3).standard_normal((40, 48, 5))
    smooth = back_project(thick, (40, 48, 20), spec)
    slabs = np.repeat(thick, 4, axis=2)
    for correction in (smooth, slabs):
        np.testing.assert_allclose(degrade(correction, thick.shape, spec), thick, atol=1e-5)
    assert np.square(np.diff(smooth, axis=2)).sum() < 0.5 * np.square(np.diff(slabs, axis=2)).sum()


def test_shell_weights_leave_white_noise_out_and_keep_a_smooth_error() -> None:
    rng = np.random.default_rng(3)
    noise = rng.standard_normal((32, 32, 32))
    _, weights = shell_weights(noise)
    # White noise: every shell's power is the highest shell's, so every weight is about 1 - NOISE_FLOOR_FACTOR.
    np.testing.assert_allclose(weights, 1 - NOISE_FLOOR_FACTOR, atol=0.12)
    grid = np.meshgrid(*[np.linspace(-1, 1, 32)] * 3, indexing="ij")
    smooth = 20.0 * np.exp(-4 * sum(g ** 2 for g in grid))  # a large low-frequency error (an intensity offset)
    filtered, weights = shell_weights(smooth + noise)
    assert weights[0] > 0.99 and weights[-1] == pytest.approx(1 - NOISE_FLOOR_FACTOR)
    assert np.linalg.norm(filtered - smooth) < 0.7 * np.linalg.norm(noise)
    _, exact = shell_weights(smooth + noise, factor=0.0)
    assert np.all(exact == 1.0)
    # One bright voxel the network missed (a flat spectrum) does not raise the floor and switch the projection off.
    spiked = smooth + noise
    spiked[16, 16, 16] += 400.0
    _, with_spike = shell_weights(spiked)
    np.testing.assert_allclose(with_spike, weights, atol=0.02)


def test_the_background_gives_the_noise_of_a_magnitude_image(brain: np.ndarray) -> None:
    rng = np.random.default_rng(4)
    sigma = 0.02 * float(np.percentile(brain, 99))
    padded = np.pad(brain, 12)  # air around the head
    noisy = np.abs(padded + sigma * (rng.standard_normal(padded.shape) + 1j * rng.standard_normal(padded.shape)))
    head = np.pad(brain > 0.1 * brain.max(), 12)
    estimate = background_noise_power(noisy, head, (2.0, 2.0, 2.0))
    assert estimate == pytest.approx(sigma ** 2, rel=0.1)
    signed = padded + sigma * rng.standard_normal(padded.shape)  # a real-valued image: Gaussian background
    assert background_noise_power(signed, head, (2.0, 2.0, 2.0)) == pytest.approx(sigma ** 2, rel=0.1)
    assert background_noise_power(padded, head, (2.0, 2.0, 2.0)) is None  # zeroed background: no estimate
    assert background_noise_power(noisy, np.ones_like(head), (2.0, 2.0, 2.0)) is None  # no background left
    # The median estimate agrees, and a few extreme voxels in the air move it little, the mean square a lot.
    air = background_voxels(noisy, head, (2.0, 2.0, 2.0))
    assert robust_sigma_of(air) == pytest.approx(sigma, rel=0.1)
    assert robust_sigma_of(background_voxels(signed, head, (2.0, 2.0, 2.0))) == pytest.approx(sigma, rel=0.1)
    spiked_air = air.copy()
    spiked_air[:5] = 1e4 * sigma
    assert robust_sigma_of(spiked_air) == pytest.approx(sigma, rel=0.1)
    assert noise_power_of(spiked_air) > 10 * sigma ** 2
    one_negative = air.copy()
    one_negative[0] = -1.0  # resampling overshoot: still a Rayleigh background
    assert robust_sigma_of(one_negative) == pytest.approx(sigma, rel=0.1)
    # a constant or offset background (z-scored or filled skull-stripped images) is not noise
    assert robust_sigma_of(np.full(5000, -1.3)) is None
    assert robust_sigma_of(air + 50 * sigma) is None
    # A measured floor below the residual's own bound lowers it: the weights rise.
    residual = rng.standard_normal((24, 24, 24))
    _, own = shell_weights(residual)
    _, measured = shell_weights(residual, noise_power=0.1)
    assert np.all(measured >= own) and measured.mean() > 0.85


@pytest.fixture(scope="module")
def x2_pair(mni_volume: Volume) -> tuple[Volume, Volume]:
    """A central 48 mm cube of the MNI152 template and its x2 k-space acquisition without noise."""
    start = [(n - 48) // 2 for n in mni_volume.shape]
    cube = mni_volume.array[start[0]: start[0] + 48, start[1]: start[1] + 48, start[2]: start[2] + 48]
    reference = Volume(np.ascontiguousarray(cube, dtype=np.float32), Grid((48, 48, 48), (1.0, 1.0, 1.0), (0, 0, 0)))
    spec = evaluation_spec(load_model("default", (2.0, 2.0, 2.0)).metadata.degradation, "kspace", noise=0.0)
    return simulated_pair(reference, (2.0, 2.0, 2.0), spec, seed=0)


def test_enhance_projects_the_shipped_x2_output_by_default(x2_pair, single_thread) -> None:
    high, low = x2_pair
    model = load_model("default", (2.0, 2.0, 2.0))
    projected = enhance_volume(low, model, 2, device="cpu")
    plain = enhance_volume(low, model, 2, device="cpu", projection=False)
    mask = foreground_mask(high)
    gain = psnr(projected.sr.array, high.array, mask) - psnr(plain.sr.array, high.array, mask)
    assert gain > 0.05, f"projection gain {gain:+.3f} dB on a noise-free input"
    # The consistency map and score describe the network's output in both runs; the projection is reported.
    np.testing.assert_array_equal(projected.consistency.array, plain.consistency.array)
    assert projected.consistency_nrmse == plain.consistency_nrmse
    summary = projected.summary()["projection"]
    assert summary["nrmse_after"] < summary["nrmse_before"] == pytest.approx(plain.consistency_nrmse, rel=1e-4)
    assert len(summary["shell_weights"]) == SHELLS and plain.summary()["projection"] is None
    # Outside the head (mask_background, on for shipped models) both stay the B-spline baseline.
    outside = plain.sr.array == plain.baseline.array
    assert outside.sum() > 100
    np.testing.assert_array_equal(projected.sr.array[outside], projected.baseline.array[outside])
    np.testing.assert_allclose(projected.difference.array, projected.sr.array - projected.baseline.array)


def test_the_option_reaches_the_command_line_and_back() -> None:
    assert EnhanceOptions().projection is None
    off = EnhanceOptions(projection=False)
    assert "--no-projection" in off.to_argv() and "--projection" not in EnhanceOptions().to_argv()
    assert off.recorded()["projection"] is False
    assert off.engine_kwargs()["projection"] is False
