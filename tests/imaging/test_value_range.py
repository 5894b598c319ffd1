"""Inputs whose intensities float32 arithmetic cannot hold are refused; no output is ever NaN or infinite.

Requirement under test: a float64 input with values beyond float32's range used to give an all-NaN SR written
with exit status 0. Every input is checked against the float32 arithmetic of the engine and its outputs (values
too large, a spread too small, a large offset that leaves float32 only a few steps across the spread) and refused
in one line before any work; inputs within range give finite results that scale with the input; a result with
NaN or infinite voxels (e.g. from a broken model) is never returned or written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import make_tiny_model

from MRISuperResLib import models
from MRISuperResLib.cli import app as cli
from MRISuperResLib.engine.checkpoint import load_model_file, save_model
from MRISuperResLib.engine.enhance import enhance_file, enhance_volume
from MRISuperResLib.errors import InputError, OutputError
from MRISuperResLib.imaging.value_range import check_float32_range
from MRISuperResLib.imaging.volume import Grid, Volume

SHAPE = (12, 14, 10)


def smooth(seed: int = 0) -> np.ndarray:
    """Smooth float64 values in [100, 200] on ``SHAPE``."""
    image = sitk.SmoothingRecursiveGaussian(
        sitk.GetImageFromArray(np.random.default_rng(seed).random(SHAPE[::-1])), 1.0)
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float64)
    return 100.0 + 100.0 * (array - array.min()) / (array.max() - array.min())


def volume_of(array: np.ndarray) -> Volume:
    return Volume(array, Grid(array.shape, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), np.eye(3)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return load_model_file(make_tiny_model(tmp_path_factory.mktemp("m") / "tiny-x2.safetensors"))


REFUSED = {
    "float64 beyond float32": (lambda: smooth() * 1e37, "beyond what the engine's float32"),
    "float64 near float32 max": (lambda: smooth() * 1.5e36, "beyond what the engine's float32"),
    "float32 near float32 max": (lambda: (smooth() * 1.5e36).astype(np.float32), "beyond what the engine's float32"),
    "negative beyond float32": (lambda: -smooth() * 1e37, "beyond what the engine's float32"),
    "float64 large offset": (lambda: 1e8 + smooth(), "subtract the offset"),
    "int32 large offset": (lambda: (2_000_000_000 + smooth()).astype(np.int32), "subtract the offset"),
    "float64 spread below float32 precision": (lambda: smooth() * 1e-40, "below float32's precision"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_inputs_beyond_float32_arithmetic_are_refused_before_any_work(tmp_path: Path, capsys, case: str) -> None:
    make, phrase = REFUSED[case]
    array = make()
    with pytest.raises(InputError, match=phrase):
        check_float32_range(array, "x")
    source = tmp_path / "in.nrrd"
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(image, str(source))
    (tmp_path / "out").mkdir()
    code = cli.main(["enhance", str(source), str(tmp_path / "out" / "sr.nii.gz"), "--model",
                     str(make_tiny_model(tmp_path / "tiny.safetensors")), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mrisuperres: error: input in.nrrd") and phrase in lines[0], err
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(("make", "factor"), [
    (lambda: smooth() * 1e34, 1e34),                           # large, but with float32 headroom
    (lambda: smooth() * 1e-20, 1e-20),                         # small, well within float32's normal range
    (lambda: (smooth() * 1e15).astype(np.int64), 1e15),        # 64-bit integers around 1e17
])
def test_inputs_within_float32_arithmetic_give_finite_results_that_scale(tiny, make, factor: float) -> None:
    """Intensity normalisation makes the network see the same input; the SR must be the unit-scale SR times
    the factor (to float32 precision), and finite everywhere."""
    unit = enhance_volume(volume_of(smooth().astype(np.float32)), tiny, 2, device="cpu")
    scaled = enhance_volume(volume_of(make()), tiny, 2, device="cpu")
    assert np.isfinite(scaled.sr.array).all() and np.isfinite(scaled.consistency.array).all()
    np.testing.assert_allclose(scaled.sr.array / factor, unit.sr.array, rtol=1e-4, atol=1e-3)
    assert scaled.consistency_nrmse == pytest.approx(unit.consistency_nrmse, rel=1e-3)


def test_a_float64_offset_within_float32_resolution_is_accepted(tiny) -> None:
    offset = enhance_volume(volume_of(1e4 + smooth()), tiny, 2, device="cpu")
    plain = enhance_volume(volume_of(smooth()), tiny, 2, device="cpu")
    np.testing.assert_allclose(offset.sr.array - 1e4, plain.sr.array, atol=0.02)


@pytest.mark.parametrize(("dtype", "keep_dtype"), [(np.float32, False), (np.int16, True)])
def test_a_model_that_produces_nan_is_refused_and_nothing_is_written(tmp_path: Path, dtype, keep_dtype: bool) -> None:
    """Also with --keep-dtype, whose cast to integers would otherwise turn NaN into arbitrary values."""
    torch.manual_seed(0)
    config = {"scale": [2, 2, 2], "channels": 8, "blocks": 1, "kernel_size": 3, "res_scale": 1.0,
              "upsample_features": 2, "global_skip": "baseline"}
    network = models.create("edsr3d", **config)
    with torch.no_grad():
        network.tail.conv.weight.fill_(float("nan"))
    path = save_model(network, tmp_path / "broken.safetensors", name="broken", family="edsr3d", config=config)
    source = tmp_path / "in.nii.gz"
    image = sitk.GetImageFromArray(np.ascontiguousarray(smooth().astype(dtype).transpose(2, 1, 0)))
    sitk.WriteImage(image, str(source))
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputError, match="NaN or infinite voxels"):
        enhance_file(source, tmp_path / "out" / "sr.nii.gz", str(path), 2, device="cpu", keep_dtype=keep_dtype)
    assert list((tmp_path / "out").iterdir()) == []
