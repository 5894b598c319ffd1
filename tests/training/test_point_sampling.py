"""ArSSR trained as in seed 004: a scale drawn per step, drawn coordinates per patch; the default per scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import make_tiny_model, write_catalogue
from MRISuperResLib import models
from MRISuperResLib.engine import model_zoo
from MRISuperResLib.engine.checkpoint import load_model_file, save_model
from MRISuperResLib.processing.degradation import DegradationSpec
from MRISuperResLib.errors import ModelError
from MRISuperResLib.training.config import ConfigError, config_from_dict
from MRISuperResLib.training.data import Subject
from MRISuperResLib.training.point_sampling import PointSampler
from MRISuperResLib.imaging.volume import Grid, Volume
from MRISuperResLib.imaging.volume_io import write_volume

ARSSR = {"encoder": "rdn", "feature_dim": 8, "decoder_depth": 4, "decoder_width": 16, "features": 8,
         "rdn_blocks": 1, "rdn_layers": 2}


def smooth_subject(size: int = 120) -> Subject:
    """A smooth, band-limited volume (sum of low-frequency cosines): its B-spline upsampling is nearly exact.
    Patch centres (``mask_low``) stay central, so that no simulated region reaches beyond the volume."""
    axis = (np.arange(size) + 0.5) / size
    i, j, k = np.meshgrid(axis, axis, axis, indexing="ij")
    array = 0.5 + 0.2 * np.cos(2 * np.pi * 2 * i) * np.cos(2 * np.pi * 3 * j) + 0.1 * np.sin(2 * np.pi * 2 * k)
    grid = Grid((size,) * 3, (1.0,) * 3, (0.0,) * 3, np.eye(3))
    low = Grid((size // 3,) * 3, (3.0,) * 3, (1.0,) * 3, np.eye(3))
    centre = np.zeros(low.shape, bool)
    centre[16:24, 16:24, 16:24] = True
    return Subject("smooth", array.astype(np.float16), grid, low, centre, np.ones(grid.shape, bool))


def test_each_batch_has_its_own_non_integer_scale_and_the_drawn_points_align() -> None:
    sampler = PointSampler([smooth_subject()], (6, 6, 6), (1.5, 4.0), 20, DegradationSpec(), 1.0)
    scales = set()
    for step in range(6):
        batch = sampler.sample(np.random.default_rng(step), 2, flips=step % 2 == 0)
        assert batch.low.shape == (2, 1, 6, 6, 6) and batch.positions.shape == (2, 20, 3)
        assert batch.target.shape == batch.baseline.shape == (2, 20)
        assert 1.5 <= batch.scale[0] <= 4.0
        scales.add(batch.scale[0])
        # Points lie inside the input patch (2 voxels from its faces) ...
        assert float(batch.positions.min()) >= 1.5 - 1e-9 and float(batch.positions.max()) <= 6 - 2.5 + 1e-9
        # ... and the B-spline of the simulated input there matches the (smooth) target: coordinates, targets
        # and the baseline refer to the same points.
        assert float((batch.baseline - batch.target).abs().mean()) < 0.01
    assert len(scales) >= 5 and any(not float(s).is_integer() for s in scales)


def test_all_interior_points_without_sample_coordinates() -> None:
    sampler = PointSampler([smooth_subject()], (8, 8, 8), (2.0, 2.0), None, DegradationSpec(), 1.0)
    batch = sampler.sample(np.random.default_rng(0), 1)
    assert batch.scale == (2.0, 2.0, 2.0) and batch.positions.shape[1] == 8**3  # 4 interior low voxels x 2 each


@pytest.mark.parametrize("data, loss, family, message", [
    ({"scale_range": [1.5, 4]}, {}, "edsr3d", "need an arbitrary-scale family"),
    ({"scale_range": [4, 1.5]}, {}, "arssr", r"must be \[low, high\] with 1 <= low <= high"),
    ({"sample_coordinates": 0}, {}, "arssr", "must be a positive whole number"),
    ({"scale_range": [1.5, 4]}, {"ssim": 1.0}, "arssr", "use loss.l1 and loss.mse only"),
])
def test_point_sampling_settings_are_checked(data: dict, loss: dict, family: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"model": {"family": family}, "data": data, "loss": loss})


def test_training_draws_scales_and_stores_the_range(tmp_path: Path, single_thread) -> None:
    from MRISuperResLib.training.loop import Trainer

    rng = np.random.default_rng(0)
    paths = []
    for index in range(2):
        array = (rng.random((48, 48, 48)) * 100 + 100).astype(np.float32)
        paths.append(write_volume(Volume(array, Grid((48,) * 3, (1.0,) * 3, (0.0,) * 3, np.eye(3))),
                                  tmp_path / f"v{index}.nii.gz"))
    config = config_from_dict({
        "name": "any", "output_dir": str(tmp_path / "run"), "seed": 1,
        "model": {"family": "arssr", "config": ARSSR},
        "data": {"train": [str(paths[0])], "validation": [str(paths[1])], "scale": [2, 2, 2],
                 "scale_range": [1.5, 3.5], "sample_coordinates": 200, "patch_size": [8, 8, 8], "batch_size": 2,
                 "crop_foreground": False, "validation_crop": [8, 8, 8]},
        "run": {"steps": 4, "validate_every": 4, "checkpoint_every": 4, "log_every": 1, "device": "cpu",
                "amp": False, "early_stop_patience": 0},
    })
    result = Trainer(config, show_progress=False, log=lambda text: None).run()
    drawn = [row["scale"] for row in result.history]
    assert len(set(drawn)) == 4 and all(1.5 <= s <= 3.5 for s in drawn)
    training = load_model_file(result.model_path).metadata.training
    assert training["scale_range"] == [1.5, 3.5] and training["sample_coordinates"] == 200


def test_default_model_per_scale_prefers_fixed_scale_models(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(model_zoo, "WEIGHTS_FOLDER", tmp_path / "none")
    (tmp_path / "none").mkdir()
    make_tiny_model(tmp_path / "none" / "fixed-x2.safetensors")
    write_catalogue(tmp_path / "none", {"fixed-x2": ["isotropic"]})
    with pytest.raises(ModelError, match="no shipped model does scale 3"):
        model_zoo.resolve_model("default", (3.0, 3.0, 3.0))
    torch.manual_seed(0)
    network = models.create("arssr", **ARSSR)
    save_model(network, tmp_path / "none" / "any.safetensors", name="any", family="arssr", config=ARSSR)
    make_tiny_model(tmp_path / "none" / "thick-x4.safetensors", scale=(1, 1, 4))
    write_catalogue(tmp_path / "none", {"fixed-x2": ["isotropic"], "any": [model_zoo.ARBITRARY],
                                        "thick-x4": ["anisotropic"]})
    pick = lambda scale: model_zoo.resolve_model("default", scale).name  # noqa: E731
    assert pick((2.0, 2.0, 2.0)) == "fixed-x2" and pick((1.0, 1.0, 4.0)) == "thick-x4"
    assert pick((3.0, 3.0, 3.0)) == pick((2.5, 2.5, 2.5)) == pick((4.0, 4.0, 4.0)) == "any"
    assert pick((1.5, 1.5, 3.0)) == "any"
