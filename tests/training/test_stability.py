"""Stability training (``loss.stability``): the network is updated on a noisier twin of each batch, with the L1
distance between the twin's output and the output on the batch as drawn added to the loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from MRISuperResLib.processing.bspline import bspline_upsample
from MRISuperResLib.training.augment import PatchBatch, noisy_twin
from MRISuperResLib.training.config import ConfigError, config_from_dict
from MRISuperResLib.training.loop import Trainer
from MRISuperResLib.training.data import stability_rng
from MRISuperResLib.training.patch_step import patch_step
from helpers import tiny_config


@pytest.mark.parametrize("loss", [
    {"stability": -1.0}, {"stability": True}, {"stability": "1"}, {"stability": float("inf")},
    {"stability": 1.0, "stability_noise": [0.03, 0.01]}, {"stability": 1.0, "stability_noise": [0.0, 1.5]},
    {"stability": 1.0, "stability_noise": 0.03}, {"stability": 1.0, "stability_noise": [0.0, 0.0]},
])
def test_bad_stability_settings_are_refused(brain_files: list[Path], tmp_path: Path, loss: dict) -> None:
    with pytest.raises(ConfigError, match="loss.stability"):
        config_from_dict(tiny_config(brain_files, tmp_path / "run", loss=loss), tmp_path)


def _batch(samples: int = 3) -> PatchBatch:
    generator = torch.Generator().manual_seed(0)
    low = torch.rand((samples, 1, 6, 6, 6), generator=generator)
    return PatchBatch(low, bspline_upsample(low, (2, 2, 2)), torch.rand((samples, 1, 12, 12, 12), generator=generator))


def test_the_twin_adds_noise_to_the_inputs_and_their_skip_only() -> None:
    batch = _batch()
    twin = noisy_twin(batch, stability_rng(5, 17), [0.02, 0.03], (2, 2, 2))
    assert torch.equal(twin.high, batch.high)
    extra = twin.low - batch.low
    spread = extra.flatten(1).std(dim=1)
    assert torch.all((spread > 0.015) & (spread < 0.035))  # one deviation per sample, drawn in [0.02, 0.03]
    # the B-spline skip is linear: the twin's skip is the batch's plus the noise's own upsampling
    assert torch.allclose(twin.baseline - batch.baseline, bspline_upsample(extra, (2, 2, 2)), atol=1e-5)
    again = noisy_twin(batch, stability_rng(5, 17), [0.02, 0.03], (2, 2, 2))
    assert torch.equal(again.low, twin.low)  # the step's own stream: the same twin when the step is repeated
    assert not torch.equal(noisy_twin(batch, stability_rng(5, 18), [0.02, 0.03], (2, 2, 2)).low, twin.low)
    assert torch.equal(noisy_twin(batch, np.random.default_rng(0), [0.0, 0.0], (2, 2, 2)).low, batch.low)


def _trainer(brain_files: list[Path], tmp_path: Path, name: str, **loss: object) -> Trainer:
    config = tiny_config(brain_files, tmp_path / name, loss=loss, run={"steps": 3, "validate_every": 3})
    trainer = Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda message: None)
    trainer.load_data()
    trainer._refresh(0)  # the first simulation, as the run makes before its first step
    return trainer


def test_a_step_trains_on_the_twin_and_adds_the_distance_to_the_clean_output(brain_files: list[Path],
                                                                           tmp_path: Path) -> None:
    plain = _trainer(brain_files, tmp_path, "plain")
    stable = _trainer(brain_files, tmp_path, "stable", stability=2.0, stability_noise=[0.05, 0.1])
    values = patch_step(stable, 0)
    assert values["stability"] > 0
    assert values["loss"] == pytest.approx(values["l1"] + 2.0 * values["stability"], rel=1e-5)
    assert "stability" not in patch_step(plain, 0)
    # With a vanishing twin noise the twin is the batch: the same inputs and targets give the plain step's loss.
    plain = _trainer(brain_files, tmp_path, "plain2")
    faint = _trainer(brain_files, tmp_path, "faint", stability=1.0, stability_noise=[1e-9, 1e-9])
    plain_values, faint_values = patch_step(plain, 0), patch_step(faint, 0)
    assert faint_values["stability"] < 1e-6
    assert faint_values["l1"] == pytest.approx(plain_values["l1"], rel=1e-5)


def test_a_run_with_stability_logs_the_term_and_writes_its_model(brain_files: list[Path], tmp_path: Path) -> None:
    config = tiny_config(brain_files, tmp_path / "run", loss={"stability": 1.0},
                         run={"steps": 4, "validate_every": 4, "log_every": 1})
    trainer = Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda message: None)
    result = trainer.run()
    rows = [row for row in trainer.history if "stability" in row]
    assert len(rows) == 4 and all(np.isfinite(row["stability"]) and row["stability"] > 0 for row in rows)
    assert result.model_path is not None and result.model_path.is_file()
    assert "stability" in (tmp_path / "run" / "log.csv").read_text().splitlines()[0]


def test_stability_with_a_critic_reuses_the_critics_clean_output(brain_files: list[Path], tmp_path: Path) -> None:
    config = tiny_config(brain_files, tmp_path / "run", run={"steps": 2, "validate_every": 2, "log_every": 1},
                         loss={"l1": 1.0, "adversarial": 0.01, "n_critic": 1, "stability": 1.0},
                         model={"family": "edsr3d", "config": {"scale": [2, 2, 2], "channels": 8, "blocks": 1,
                                                                 "upsample_features": 2},
                                "critic": {"channels": 4, "layers": 2}})
    trainer = Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda message: None)
    trainer.run()
    last = trainer.history[-1]
    assert np.isfinite(last["critic"]) and last["stability"] > 0
