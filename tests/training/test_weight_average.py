"""optim.ema: the moving average of the weights is what validation and the saved models use; training itself is
unchanged, and a resumed run ends with the same average."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import tiny_config
from MRISuperResLib.training.config import ConfigError, config_from_dict
from MRISuperResLib.training.loop import Trainer
from MRISuperResLib.training.weight_average import WeightAverage


def _run(config: dict, tmp_path: Path, resume: bool = False, stop_at: int | None = None):  # type: ignore[no-untyped-def]
    trainer = Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda message: None)
    return trainer, trainer.run(resume=resume, stop_at=stop_at)


def test_the_average_follows_the_warmed_up_decay() -> None:
    network = torch.nn.Linear(3, 1)
    average = WeightAverage(network, decay=0.5)
    expected = None
    for update in range(6):
        with torch.no_grad():
            network.weight.add_(float(update + 1))
        current = network.weight.detach().clone()
        decay = min(0.5, (1 + update) / (10 + update))  # after `update` earlier updates
        expected = current if expected is None else decay * expected + (1 - decay) * current
        average.update(network)
        assert torch.allclose(average.module.weight, expected), update
    assert average.decay_now() == pytest.approx(7 / 16) and not average.module.weight.requires_grad
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="decay must be in"):
            WeightAverage(network, bad)


def test_validation_keeps_the_better_of_the_average_and_the_last_weights(brain_files: list[Path],
                                                                          tmp_path: Path) -> None:
    from MRISuperResLib.engine.checkpoint import load_model_file

    # A schedule that does not read validation scores: training is that of a run without the average.
    _, plain_result = _run(tiny_config(brain_files, tmp_path / "plain", optim={"schedule": "cosine"}), tmp_path)
    messages: list[str] = []
    averaged = Trainer(config_from_dict(tiny_config(brain_files, tmp_path / "ema",
                                                    optim={"schedule": "cosine", "ema": 0.8}), tmp_path),
                       show_progress=False, log=messages.append)
    result = averaged.run()
    assert [r["loss"] for r in plain_result.history] == [r["loss"] for r in result.history]
    plain_rows = [r for r in plain_result.history if "val_psnr" in r]
    rows = [r for r in result.history if "val_psnr" in r]
    assert [r["val_psnr_last_weights"] for r in rows] == [r["val_psnr"] for r in plain_rows]
    assert all(r["val_psnr"] == max(r["val_psnr_average"], r["val_psnr_last_weights"]) for r in rows)
    assert all(r["val_weights"] == ("average" if r["val_psnr_average"] >= r["val_psnr_last_weights"] else "last")
               for r in rows)
    assert any(r["val_weights"] == "average" for r in rows)  # the average won somewhere
    assert any("; weights' average" in m and "last weights" in m and "(kept: " in m for m in messages)
    assert result.best.psnr == max(r["val_psnr"] for r in rows)
    best_row = next(r for r in rows if r["val_psnr"] == result.best.psnr)
    weights = load_model_file(result.model_path).metadata.training["weight_average"]
    assert weights == {"ema": 0.8, "best_weights": best_row["val_weights"]}
    # The final model holds the weights that scored best, in the averaged network's place.
    saved = load_model_file(result.model_path).network.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in averaged.evaluated.state_dict().items())
    assert averaged.validate().psnr == pytest.approx(result.best.psnr, abs=1e-6)


def test_a_resumed_run_ends_with_the_same_average(brain_files: list[Path], tmp_path: Path) -> None:
    straight, _ = _run(tiny_config(brain_files, tmp_path / "straight", optim={"ema": 0.8}), tmp_path)
    config = tiny_config(brain_files, tmp_path / "resumed", optim={"ema": 0.8})
    _run(config, tmp_path, stop_at=5)
    resumed, result = _run(config, tmp_path, resume=True)
    assert result.steps_done == 12
    for (name, a), (_, b) in zip(straight.weight_average.state_dict().items(),
                                 resumed.weight_average.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("bad", [1.0, -0.1, True, "0.9", float("nan")])
def test_a_bad_decay_is_refused(brain_files: list[Path], tmp_path: Path, bad: object) -> None:
    with pytest.raises(ConfigError, match=r"optim.ema must be a decay in \[0, 1\)"):
        config_from_dict(tiny_config(brain_files, tmp_path / "run", optim={"ema": bad}), tmp_path)


def test_a_null_decay_means_off(brain_files: list[Path], tmp_path: Path) -> None:
    config = config_from_dict(tiny_config(brain_files, tmp_path / "run", optim={"ema": None}), tmp_path)
    assert config.optim.ema == 0.0
    assert Trainer(config, show_progress=False, log=lambda message: None).weight_average is None
