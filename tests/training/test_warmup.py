"""Learning-rate warmup (``optim.warmup_steps``): the rate each optimiser step uses ramps up linearly over the
first steps, the schedule itself is left as it would be without it, and bad values are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from MRISuperResLib.training.builders import warmup_factor
from MRISuperResLib.training.config import ConfigError, config_from_dict
from MRISuperResLib.training.loop import Trainer
from helpers import tiny_config


def test_the_factor_rises_linearly_to_one() -> None:
    assert [warmup_factor(step, 4) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


@pytest.mark.parametrize("value", [-1, 1.5, True, "10"])
def test_a_bad_warmup_is_refused(brain_files: list[Path], tmp_path: Path, value: object) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match="optim.warmup_steps"):
        config_from_dict(tiny_config(brain_files, tmp_path / "run", optim={"warmup_steps": value}), tmp_path)


def _rates_used(brain_files: list[Path], tmp_path: Path, warmup: int) -> tuple[list[float], float, list[float]]:
    """The rate of every optimiser step, the schedule's rate at the end, and the rates of the log rows."""
    config = tiny_config(brain_files, tmp_path / f"run{warmup}", optim={"lr": 0.002, "schedule": "cosine",
                                                                         "min_lr": 0.0002, "warmup_steps": warmup},
                         run={"steps": 8, "validate_every": 8, "log_every": 1, "checkpoint_every": 100})
    trainer = Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda message: None)
    used: list[float] = []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):  # type: ignore[no-untyped-def]
        used.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    trainer.run()
    logged = [row["lr"] for row in trainer.history if "lr" in row]
    return used, trainer.optimizer.param_groups[0]["lr"], logged


def test_the_first_steps_use_a_fraction_of_the_scheduled_rate(brain_files: list[Path],  # noqa: F811
                                                              tmp_path: Path) -> None:
    plain, plain_end, _ = _rates_used(brain_files, tmp_path, 0)
    warm, warm_end, logged = _rates_used(brain_files, tmp_path, 4)
    assert len(plain) == len(warm) == 8
    assert warm[:4] == pytest.approx([rate * (k + 1) / 4 for k, rate in enumerate(plain[:4])])
    assert warm[4:] == pytest.approx(plain[4:])
    assert warm_end == pytest.approx(plain_end)  # the cosine is the same schedule with or without warmup
    assert logged[:-1] == pytest.approx(warm[1:])  # a row logs the rate of the next step, as without warmup


def test_a_warmup_as_long_as_the_run_is_said_once(brain_files: list[Path], tmp_path: Path) -> None:  # noqa: F811
    from MRISuperResLib.errors import InputWarning

    config = tiny_config(brain_files, tmp_path / "run", optim={"warmup_steps": 4},
                         run={"steps": 4, "validate_every": 4, "checkpoint_every": 100})
    trainer = Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda message: None)
    with pytest.warns(InputWarning, match="optim.warmup_steps 4 is not shorter than the run") as caught:
        trainer.run()
    assert sum("warmup_steps" in str(w.message) for w in caught) == 1
