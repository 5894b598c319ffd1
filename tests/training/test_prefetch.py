"""Batches drawn ahead (run.prefetch): the same run as drawing them in the step, errors reach the training thread,
stopping is prompt, the subjects' own arrays are never changed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import tiny_config
from MRISuperResLib.training.config import ConfigError, config_from_dict
from MRISuperResLib.training.loop import Trainer
from MRISuperResLib.training.prefetch import BatchPrefetcher


def _run(config: dict, tmp_path: Path, resume: bool = False, stop_at: int | None = None):  # type: ignore[no-untyped-def]
    messages: list[str] = []
    trainer = Trainer(config_from_dict(config, tmp_path), show_progress=False, log=messages.append)
    return trainer, trainer.run(resume=resume, stop_at=stop_at), messages


def _same_weights(a: Trainer, b: Trainer) -> None:
    for (name, x), (_, y) in zip(a.network.state_dict().items(), b.network.state_dict().items()):
        assert torch.equal(x, y), name


def _losses(history: list[dict]) -> list[float]:
    return [row["loss"] for row in history]


def _no_threads_left(timeout: float = 5.0) -> bool:
    """No prefetching thread is left (daemon simulation threads finish the subject in hand first)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if not [t for t in threading.enumerate() if t.name.startswith("mrisuperres-")]:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("acquisition", [None, {"noise": [0.0, 0.03], "voxel_mm": [0.9, 1.3]}])
def test_drawing_ahead_gives_the_run_drawn_in_the_step(brain_files: list[Path], tmp_path: Path,
                                                        acquisition: dict | None) -> None:
    """12 steps over 3 simulations (one every 4 steps), with scanner-like draws (voxel sizes, noise) too."""
    data = {"acquisition": acquisition} if acquisition else {}
    plain, plain_result, plain_log = _run(tiny_config(brain_files, tmp_path / "plain", run={"prefetch": 0},
                                                      data=data), tmp_path)
    ahead, ahead_result, ahead_log = _run(tiny_config(brain_files, tmp_path / "ahead", run={"prefetch": 3},
                                                      data=data), tmp_path)
    _same_weights(plain, ahead)
    assert _losses(plain_result.history) == _losses(ahead_result.history)
    assert [r.get("val_psnr") for r in plain_result.history] == [r.get("val_psnr") for r in ahead_result.history]
    assert not any("drawn ahead" in m for m in plain_log)
    assert any(m.startswith("batches drawn ahead (run.prefetch): steps 0-12 waited") for m in ahead_log)
    # The training subjects' own arrays are not the ones trained on: every simulation filled copies.
    assert all(subject.low is None and subject.target is None for subject in ahead.train_subjects)


def test_a_run_stopped_while_drawing_ahead_resumes_to_the_same_result(brain_files: list[Path],
                                                                     tmp_path: Path) -> None:
    straight, _, _ = _run(tiny_config(brain_files, tmp_path / "straight", run={"prefetch": 0}), tmp_path)
    config = tiny_config(brain_files, tmp_path / "resumed", run={"prefetch": 2})
    _, stopped, _ = _run(config, tmp_path, stop_at=7)  # mid-simulation: steps 4-7 share one
    assert stopped.interrupted and stopped.steps_done == 7
    resumed, result, log = _run(config, tmp_path, resume=True)
    assert result.steps_done == 12
    _same_weights(straight, resumed)
    assert any("steps 7-12" in m for m in log)
    assert _no_threads_left()


def test_a_stop_signal_does_not_wait_for_a_slow_simulation(brain_files: list[Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT while step 4 waits for simulation 1: the run saves step 4's state and returns at once; resumed, it
    ends where a run without prefetching does."""
    import os
    import signal

    _run(tiny_config(brain_files, tmp_path / "straight", run={"prefetch": 0}), tmp_path)
    config = config_from_dict(tiny_config(brain_files, tmp_path / "stopped", run={"prefetch": 2}), tmp_path)
    trainer = Trainer(config, show_progress=False, log=lambda message: None)
    simulate, gate = trainer._simulate, threading.Event()

    def slow(subject, refresh: int, index: int) -> None:  # type: ignore[no-untyped-def]
        if refresh == 1:
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
            gate.wait(60)
        simulate(subject, refresh, index)

    monkeypatch.setattr(trainer, "_simulate", slow)
    started = time.perf_counter()
    result = trainer.run()
    assert time.perf_counter() - started < 30
    gate.set()
    assert result.interrupted and result.steps_done == 4 and result.model_path is None
    _, resumed, _ = _run(tiny_config(brain_files, tmp_path / "stopped", run={"prefetch": 2}), tmp_path, resume=True)
    assert resumed.steps_done == 12
    assert _no_threads_left()
    from MRISuperResLib.engine.checkpoint import load_model_file

    expected = load_model_file(tmp_path / "straight" / "tiny.safetensors").network.state_dict()
    for name, tensor in load_model_file(resumed.model_path).network.state_dict().items():
        assert torch.equal(tensor, expected[name])


def test_an_error_while_simulating_reaches_the_training_thread(brain_files: list[Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = Trainer(config_from_dict(tiny_config(brain_files, tmp_path / "run", run={"prefetch": 2}), tmp_path),
                      show_progress=False, log=lambda message: None)
    simulate = trainer._simulate

    def failing(subject, refresh: int, index: int) -> None:  # type: ignore[no-untyped-def]
        if refresh == 1:
            raise MemoryError("simulated shortage")
        simulate(subject, refresh, index)

    monkeypatch.setattr(trainer, "_simulate", failing)
    with pytest.raises(MemoryError, match="simulated shortage"):
        trainer.run()
    assert trainer.step == 4  # the four steps of simulation 0 ran
    assert _no_threads_left()


def _toy(count: int = 2):  # type: ignore[no-untyped-def]
    from MRISuperResLib.training.augment import PatchBatch
    from MRISuperResLib.training.data import Subject

    def draw(subjects: list[Subject], step: int) -> PatchBatch:
        value = torch.tensor([[float(subjects[0].low[0, 0, 0]), float(step)]])
        return PatchBatch(value, value, value)

    subjects = [Subject(f"s{n}", np.zeros((4, 4, 4), np.float16), None, None, None, None)  # type: ignore[arg-type]
                for n in range(count)]
    return subjects, draw


def test_the_prefetcher_serves_steps_in_order_and_stops_without_waiting_for_a_simulation() -> None:
    simulated: list[tuple[int, int]] = []
    gate = threading.Event()

    def simulate(subject, refresh: int, index: int) -> None:  # type: ignore[no-untyped-def]
        simulated.append((refresh, index))
        subject.low = np.full((2, 2, 2), refresh, np.float16)
        if refresh == 2:
            gate.wait(10)  # simulation 2 is slow: the producer waits for it at step 6

    subjects, draw = _toy()
    prefetcher = BatchPrefetcher(subjects, simulate, draw, resimulate_every=3, start=2, ahead=2)
    got = [prefetcher.batch(step).low[0].tolist() for step in (2, 3, 4)]
    assert got == [[0.0, 2.0], [1.0, 3.0], [1.0, 4.0]]  # step 2 from simulation 0, steps 3-5 from simulation 1
    with pytest.raises(ValueError, match="serves step 5 next"):
        prefetcher.batch(7)
    time.sleep(0.3)
    started = time.perf_counter()
    prefetcher.close()  # simulation 2 is in progress: not waited for
    assert time.perf_counter() - started < 1.0
    gate.set()
    assert _no_threads_left()
    assert all(subject.low is None for subject in subjects)
    assert sorted(simulated)[:4] == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_nothing_is_drawn_or_simulated_past_the_last_step() -> None:
    simulated: list[int] = []
    end = [5]

    def simulate(subject, refresh: int, index: int) -> None:  # type: ignore[no-untyped-def]
        simulated.append(refresh)
        subject.low = np.full((2, 2, 2), refresh, np.float16)

    subjects, draw = _toy(1)
    with BatchPrefetcher(subjects, simulate, draw, resimulate_every=4, start=0, ahead=16,
                         end=lambda: end[0]) as prefetcher:
        assert [prefetcher.batch(step).low[0, 1].item() for step in range(5)] == [0, 1, 2, 3, 4]
        time.sleep(0.3)
        assert prefetcher._queue.qsize() == 0 and sorted(simulated) == [0, 1]  # no simulation 2: step 8 >= 5
        end[0] = 10  # a time budget may raise the end again: the producer goes on
        assert [prefetcher.batch(step).low[0].tolist() for step in range(5, 10)][-1] == [2.0, 9.0]
        time.sleep(0.3)
        assert sorted(simulated) == [0, 1, 2]


def test_an_error_in_one_subjects_simulation_is_raised_for_the_step_that_needs_it() -> None:
    def simulate(subject, refresh: int, index: int) -> None:  # type: ignore[no-untyped-def]
        if refresh == 1 and index == 1:
            raise ValueError("unreadable subject")
        subject.low = np.full((2, 2, 2), refresh, np.float16)

    subjects, draw = _toy(3)
    with BatchPrefetcher(subjects, simulate, draw, resimulate_every=2, start=0, ahead=2, workers=2) as prefetcher:
        assert [prefetcher.batch(step).low[0, 1].item() for step in range(2)] == [0, 1]
        with pytest.raises(ValueError, match="unreadable subject"):
            prefetcher.batch(2)
    assert _no_threads_left()


@pytest.mark.parametrize("bad", [-1, True, 1.5, "4", 65])
def test_a_bad_prefetch_setting_is_refused(brain_files: list[Path], tmp_path: Path, bad: object) -> None:
    with pytest.raises(ConfigError, match="run.prefetch must be a number of batches from 0"):
        config_from_dict(tiny_config(brain_files, tmp_path / "run", run={"prefetch": bad}), tmp_path)
