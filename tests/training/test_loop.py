"""Training: config checks, data, augmentation, losses, the loop, validation, resume, DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers import ROOT, free_port, tiny_config
from MRISuperResLib.errors import InputWarning, MRISuperResError
from MRISuperResLib.training.augment import PatchBatch, augment_batch, fit_gaussian_mixture, gmm_contrast
from MRISuperResLib.training.config import ConfigError, config_from_dict, load_config
from MRISuperResLib.training.data import split_subjects
from MRISuperResLib.training.losses import (
    PatchCritic3d,
    PerceptualLoss,
    ReconstructionLoss,
    fft_loss,
    gradient_loss,
    gradient_penalty,
)
from MRISuperResLib.imaging.volume import Volume
from MRISuperResLib.imaging.volume_io import write_volume


# ------------------------------------------------------------------------------------------------- config
def test_unknown_config_keys_are_refused_with_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) lrate in optim; valid keys: name, lr"):
        config_from_dict({"optim": {"lrate": 0.1}})
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict({"trainer": {}})
    with pytest.raises(ConfigError, match="data.degradation"):
        config_from_dict({"data": {"degradation": {"kind": "sinc"}}})
    with pytest.raises(ConfigError, match="unknown model family"):
        config_from_dict({"model": {"family": "vgg"}})


def test_shipped_example_configs_are_valid() -> None:
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)


def test_a_single_volume_cannot_be_split() -> None:
    with pytest.raises(MRISuperResError, match="cannot be split"):
        split_subjects([Path("a.nii.gz")], 0.2, 0)
    train, validation = split_subjects([Path(f"{i}.nii") for i in range(5)], 0.2, 0)
    assert len(validation) == 1 and len(train) == 4 and not set(train) & set(validation)


# -------------------------------------------------------------------------------------------- augmentation
def test_augmentation_keeps_the_pair_aligned() -> None:
    from MRISuperResLib.processing.bspline import bspline_upsample

    rng = np.random.default_rng(0)
    low = torch.rand(4, 1, 6, 6, 6)
    high = bspline_upsample(low, (2, 2, 2))
    batch = augment_batch(PatchBatch(low, high.clone(), high.clone()), rng, scale=(2, 2, 2),
                          intensity_scale=(0.5, 2.0), intensity_shift=(-0.2, 0.2))
    # Whatever flips, rotations and intensity changes were drawn, the target is still the B-spline of the input.
    torch.testing.assert_close(bspline_upsample(batch.low, (2, 2, 2)), batch.high, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batch.baseline, batch.high)


def test_rotations_only_in_planes_of_equal_scale() -> None:
    from MRISuperResLib.training.augment import allowed_rotation_planes

    assert allowed_rotation_planes((1, 1, 4), (8, 8, 8)) == [(0, 1)]
    assert allowed_rotation_planes((2, 2, 2), (8, 8, 4)) == [(0, 1)]
    assert len(allowed_rotation_planes((2, 2, 2), (8, 8, 8))) == 3


def test_gmm_contrast_changes_tissue_means_and_keeps_the_background(small_real_volume: Volume) -> None:
    array = small_real_volume.array / np.percentile(small_real_volume.array, 99)
    mask = array > 0.1
    weights, means, stds = fit_gaussian_mixture(array[mask])
    assert np.all(np.diff(means) > 0) and np.isclose(weights.sum(), 1.0)
    augmented = gmm_contrast(array, mask, np.random.default_rng(1), mean_shift=0.1)
    np.testing.assert_array_equal(augmented[~mask], array[~mask])
    assert np.abs(augmented[mask] - array[mask]).mean() > 0.01
    # Structure is kept: voxel order within the head barely changes.
    correlation = np.corrcoef(augmented[mask], array[mask])[0, 1]
    assert correlation > 0.9


# ------------------------------------------------------------------------------------------------- losses
def test_losses_are_zero_for_identical_volumes_and_positive_otherwise() -> None:
    x = torch.rand(2, 1, 12, 12, 12)
    y = x + 0.1 * torch.randn_like(x)
    assert gradient_loss(x, x) == 0 and gradient_loss(x, y) > 0
    assert fft_loss(x, x) == 0 and fft_loss(x, y) > 0
    loss = ReconstructionLoss(l1=1.0, mse=1.0, ssim=0.5, gradient=0.1, fft=0.1)
    total, terms = loss(y, x)
    assert set(terms) == {"l1", "mse", "ssim", "gradient", "fft"} and total > 0
    with pytest.raises(MRISuperResError, match="every loss weight is 0"):
        ReconstructionLoss(l1=0.0)


def test_perceptual_loss_reads_local_vgg_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from MRISuperResLib.training.losses import VGGFeatures

    torch.manual_seed(0)
    reference = VGGFeatures.__new__(VGGFeatures)
    torch.nn.Module.__init__(reference)
    layers = []
    for spec in __import__("MRISuperResLib.training.losses", fromlist=["x"])._VGG16_LAYERS:
        layers.append(torch.nn.Conv2d(spec[1], spec[2], 3, padding=1) if spec[0] == "conv" else torch.nn.Identity())
    weights = {f"features.{i}.{name}": p.detach().contiguous() for i, layer in enumerate(layers)
               for name, p in layer.named_parameters()}
    save_file(weights, str(tmp_path / "vgg.safetensors"))
    loss = PerceptualLoss(tmp_path / "vgg.safetensors")
    x = torch.rand(1, 1, 8, 16, 16)
    assert loss(x, x) == 0
    assert loss(x, x.flip(3)) > 0
    with pytest.raises(MRISuperResError, match="do not exist"):
        PerceptualLoss(tmp_path / "missing.safetensors")


def test_gradient_penalty_is_finite_and_differentiable() -> None:
    critic = PatchCritic3d(channels=4, layers=2)
    real, fake = torch.rand(2, 1, 16, 16, 16), torch.rand(2, 1, 16, 16, 16)
    penalty = gradient_penalty(critic, real, fake)
    penalty.backward()
    assert torch.isfinite(penalty) and critic.net[0].weight.grad is not None


# ------------------------------------------------------------------------------------------------ the loop
def _train(config: dict, tmp_path: Path, resume: bool = False, stop_at: int | None = None):
    from MRISuperResLib.training.loop import Trainer

    trainer = Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda message: None)
    return trainer, trainer.run(resume=resume, stop_at=stop_at)


def test_training_runs_validates_and_writes_a_usable_model(brain_files: list[Path], tmp_path: Path) -> None:
    config = tiny_config(brain_files, tmp_path / "run", run={"steps": 40, "validate_every": 20})
    trainer, result = _train(config, tmp_path)
    assert result.model_path is not None and result.model_path.name == "tiny.safetensors"
    from MRISuperResLib.engine.checkpoint import load_model_file

    edges = [s for subject in trainer.train_subjects for s in subject.high_grid.spacing]
    assert load_model_file(result.model_path).metadata.trained_voxel_mm == (min(edges), max(edges))
    rows = [row for row in result.history if "val_psnr" in row]
    assert [row["step"] for row in rows] == [20, 40]
    assert all(np.isfinite(row["val_psnr"]) and row["baseline_psnr"] > 10 for row in rows)
    for name in ("state.pt", "best.safetensors", "log.csv", "curves.png", "config.yaml"):
        assert (tmp_path / "run" / name).is_file(), name
    # The trained file works unchanged with enhance, and carries its training metadata.
    from MRISuperResLib.engine.checkpoint import read_metadata
    from MRISuperResLib.cli.app import main

    metadata = read_metadata(result.model_path)
    assert metadata["training"]["validation"] == ["brain2.nii.gz"]
    assert metadata["metrics"]["validation"]["psnr"] == pytest.approx(result.best.psnr)
    assert metadata["degradation"]["noise"] == [0.0, 0.02]
    # The consistency threshold is calibrated on the validation inputs.
    calibration = metadata["consistency"]
    assert calibration["threshold"] == pytest.approx(1.5 * max(calibration["validation_values"]))
    out = tmp_path / "sr.nii.gz"
    assert main(["enhance", str(brain_files[2]), str(out), "--model", str(result.model_path), "--quiet"]) == 0
    assert out.is_file()


def test_a_stopped_run_resumes_to_the_same_result(brain_files: list[Path], tmp_path: Path) -> None:
    straight, _ = _train(tiny_config(brain_files, tmp_path / "straight"), tmp_path)
    config = tiny_config(brain_files, tmp_path / "resumed")
    _, stopped = _train(config, tmp_path, stop_at=7)
    assert stopped.interrupted and stopped.steps_done == 7 and stopped.model_path is None
    resumed, result = _train(config, tmp_path, resume=True)
    assert result.steps_done == 12
    for (name, a), (_, b) in zip(straight.network.state_dict().items(), resumed.network.state_dict().items()):
        assert torch.equal(a, b), name
    assert [r.get("val_psnr") for r in straight.history] == [r.get("val_psnr") for r in result.history]


def test_cosine_schedule_anneals_to_min_lr_and_resumes_exactly(brain_files: list[Path], tmp_path: Path) -> None:
    schedule = {"lr": 0.002, "schedule": "cosine", "min_lr": 0.0001}
    straight, result = _train(tiny_config(brain_files, tmp_path / "straight", optim=schedule), tmp_path)
    rates = [row["lr"] for row in result.history]
    assert rates == sorted(rates, reverse=True) and rates[0] < 0.002
    assert rates[-1] == pytest.approx(0.0001)
    config = tiny_config(brain_files, tmp_path / "resumed", optim=schedule)
    _train(config, tmp_path, stop_at=5)
    resumed, _ = _train(config, tmp_path, resume=True)
    for (name, a), (_, b) in zip(straight.network.state_dict().items(), resumed.network.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_time_budget_ends_the_run_in_time_with_the_schedule_completed(brain_files: list[Path], tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    ticks = iter(range(10**9))
    # The loop's clock advances 0.1 s per reading, whatever the machine's load: a 6 s budget is then ~60 readings.
    monkeypatch.setattr("MRISuperResLib.training.loop.time", SimpleNamespace(time=lambda: 0.1 * next(ticks)))
    schedule = {"lr": 0.002, "schedule": "cosine", "min_lr": 0.0001}
    config = tiny_config(brain_files, tmp_path / "run", optim=schedule,
                         run={"steps": 100000, "validate_every": 50, "max_minutes": 0.1})
    _, result = _train(config, tmp_path)
    assert 20 < result.steps_done < 100 and not result.interrupted
    assert result.model_path is not None and result.model_path.is_file()
    last = result.history[-1]
    assert last["step"] == result.steps_done and "val_psnr" in last
    assert last["lr"] == pytest.approx(0.0001)
    # Resumed without a budget: the cosine is refitted to the configured steps from where the run stopped (no rate
    # stuck at min_lr, no new cycle), and still ends at min_lr.
    monkeypatch.undo()
    ended = result.steps_done
    config["run"].update({"steps": ended + 12, "max_minutes": None})
    _, resumed = _train(config, tmp_path, resume=True)
    rates = [row["lr"] for row in resumed.history if row["step"] > ended]
    assert rates[0] > 0.0002 and rates == sorted(rates, reverse=True)
    assert rates[-1] == pytest.approx(0.0001)


def test_the_time_budget_plans_from_the_measured_pace() -> None:
    from MRISuperResLib.training.time_budget import TimeBudget

    budget = TimeBudget(1.0, started=90.0, total_steps=1000)  # 60 s from 90 s
    for step in range(1, 11):  # warm-up: slow first steps are left out of the pace
        assert budget.plan(step, now=100.0 + step) == 1000
    for step in range(11, 20):
        assert budget.plan(step, now=110.0 + 0.5 * (step - 10)) == 1000  # too few steps measured
    assert budget.plan(20, now=115.0) == 20 + int((150.0 - 3.0 - 115.0) / 0.5)  # 0.5 s per step, 5 % reserve
    assert budget.plan(40, now=151.0) == 40  # spent: end now
    short = TimeBudget(1.0, started=90.0, total_steps=50)
    assert all(short.plan(step, now=100.0 + 0.1 * step) == 50 for step in range(1, 40))  # the configured steps fit


def test_a_non_positive_time_budget_is_refused() -> None:
    for value in (0, -1, "ten", True, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="run.max_minutes"):
            config_from_dict({"run": {"max_minutes": value}})


def test_an_existing_run_is_not_overwritten_without_resume(brain_files: list[Path], tmp_path: Path) -> None:
    config = tiny_config(brain_files, tmp_path / "run", run={"steps": 2, "validate_every": 2})
    _train(config, tmp_path)
    with pytest.raises(MRISuperResError, match="--resume"):
        _train(config, tmp_path)


def test_resume_without_a_saved_state_starts_at_step_0_with_a_warning(brain_files: list[Path],
                                                                     tmp_path: Path) -> None:
    # A requeued job passes --resume also when its first try stopped while loading (no state.pt yet).
    config = tiny_config(brain_files, tmp_path / "run", run={"steps": 2, "validate_every": 2})
    with pytest.warns(InputWarning, match="nothing to resume .* starting at step 0"):
        _, result = _train(config, tmp_path, resume=True)
    assert result.steps_done == 2 and (tmp_path / "run" / "state.pt").is_file()


def test_train_threads_option_sets_run_threads(brain_files: list[Path], tmp_path: Path, capsys) -> None:
    from MRISuperResLib.cli.app import main

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_config(brain_files, tmp_path / "run", run={"steps": 2, "validate_every": 2})))
    assert main(["train", "--config", str(recipe), "--threads", "0", "--quiet", "--no-register"]) == 1
    assert "--threads must be a positive number" in capsys.readouterr().err
    threads = torch.get_num_threads()
    try:
        assert main(["train", "--config", str(recipe), "--threads", "1", "--quiet", "--no-register"]) == 0
    finally:
        torch.set_num_threads(threads)  # the run set torch's threads for this whole process
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["run"]["threads"] == 1


def test_too_small_volumes_for_the_patch_are_refused(brain_files: list[Path], tmp_path: Path) -> None:
    config = tiny_config(brain_files, tmp_path / "run", data={"patch_size": [64, 64, 64]})
    with pytest.raises(MRISuperResError, match="smaller than data.patch_size"):
        _train(config, tmp_path)
    # A run that fails before its first step leaves nothing it wrote: no folder holding only a config.yaml ...
    assert not (tmp_path / "run").exists()
    # ... and in a folder that was there, only what was there before.
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(MRISuperResError, match="smaller than data.patch_size"):
        _train(config, tmp_path)
    assert [f.name for f in (tmp_path / "run").iterdir()] == ["notes.txt"]


def test_adversarial_training_runs(brain_files: list[Path], tmp_path: Path) -> None:
    config = tiny_config(brain_files, tmp_path / "run", run={"steps": 3, "validate_every": 3},
                         loss={"l1": 1.0, "adversarial": 0.01, "n_critic": 2},
                         model={"family": "edsr3d", "config": {"scale": [2, 2, 2], "channels": 8, "blocks": 1,
                                                                 "upsample_features": 2},
                                "critic": {"channels": 4, "layers": 2}})
    _, result = _train(config, tmp_path)
    assert "critic" in result.history[-1] and np.isfinite(result.history[-1]["critic"])


def test_two_process_ddp_keeps_the_ranks_in_sync(brain_files: list[Path], tmp_path: Path) -> None:
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config(brain_files, tmp_path / "ddp",
                                                      run={"steps": 4, "validate_every": 4})))
    script = tmp_path / "ddp_check.py"
    script.write_text(
        "import os, sys, hashlib\n"
        f"sys.path.insert(0, {str(ROOT / 'MRISuperRes')!r})\n"
        "from MRISuperResLib.training.config import load_config\n"
        "from MRISuperResLib.training.loop import Trainer\n"
        "trainer = Trainer(load_config(sys.argv[1]), show_progress=False, log=lambda m: None)\n"
        "trainer.run()\n"
        "digest = hashlib.sha256()\n"
        "for value in trainer.network.state_dict().values():\n"
        "    digest.update(value.detach().numpy().tobytes())\n"
        "open(os.path.join(sys.argv[2], f\"rank{trainer.context.rank}.txt\"), 'w').write(digest.hexdigest())\n"
    )
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()),
         str(script), str(config_path), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=environment,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    rank0, rank1 = (tmp_path / "rank0.txt").read_text(), (tmp_path / "rank1.txt").read_text()
    assert rank0 == rank1
    assert (tmp_path / "ddp" / "tiny.safetensors").is_file()


def test_an_empty_glob_is_reported(tmp_path: Path) -> None:
    from MRISuperResLib.training.data import expand_paths

    with pytest.raises(MRISuperResError, match="matches no files"):
        expand_paths(["*.nii.gz"], lambda p: tmp_path / p)


def test_simulate_and_evaluate_commands(brain_files: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from MRISuperResLib.cli.app import main
    from MRISuperResLib.imaging.volume_io import read_volume

    low_path = tmp_path / "low.nrrd"
    assert main(["simulate", str(brain_files[0]), str(low_path), "--scale", "1,1,2", "--kind", "kspace,kspace,box",
                 "--gap", "0.2", "--noise", "0.02", "--seed", "4"]) == 0
    high, low = read_volume(brain_files[0]), read_volume(low_path)
    assert low.shape == (high.shape[0], high.shape[1], high.shape[2] // 2)
    assert low.spacing[2] == pytest.approx(2 * high.spacing[2])
    capsys.readouterr()
    figures = tmp_path / "figures"
    figures.mkdir()
    assert main(["evaluate", str(brain_files[1]), str(brain_files[2]), "--scale", "2", "--json",
                 "--device", "cpu", "--figure", str(figures)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [v["name"] for v in report["volumes"]] == ["brain1.nii.gz", "brain2.nii.gz"]
    for volume in report["volumes"]:
        assert volume["psnr_baseline"] > 15 and np.isfinite(volume["psnr_sr"])
        assert volume["gain"] == pytest.approx(volume["psnr_sr"] - volume["psnr_baseline"])
    assert sorted(p.name for p in figures.iterdir()) == ["brain1_x2.png", "brain2_x2.png"]
    assert main(["evaluate", str(brain_files[1]), "--figure", str(tmp_path / "missing")]) == 1
    assert "figure folder" in capsys.readouterr().err
    assert main(["evaluate", str(brain_files[1]), "--scale", "3", "--device", "cpu"]) == 1
    assert "no shipped model does scale 3" in capsys.readouterr().err


def test_training_can_start_from_a_model_file(brain_files: list[Path], tmp_path: Path) -> None:
    from MRISuperResLib import models
    from MRISuperResLib.engine.checkpoint import save_model
    from MRISuperResLib.training.loop import Trainer

    config = tiny_config(brain_files, tmp_path / "run")
    torch.manual_seed(11)
    start = models.create("edsr3d", **config["model"]["config"])
    path = save_model(start, tmp_path / "start.safetensors", name="start", family="edsr3d",
                      config=config["model"]["config"])
    config["model"]["init_from"] = str(path)
    trainer = Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda m: None)
    for (name, a), (_, b) in zip(trainer.network.state_dict().items(), start.state_dict().items()):
        assert torch.equal(a, b), name
    config["model"]["config"] = {**config["model"]["config"], "channels": 4}
    with pytest.raises(ConfigError, match="must match"):
        Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda m: None)


def test_partial_initialisation_copies_the_body_of_a_model_of_another_scale(
    brain_files: list[Path], tmp_path: Path
) -> None:
    from MRISuperResLib import models
    from MRISuperResLib.engine.checkpoint import save_model
    from MRISuperResLib.training.loop import Trainer

    config = tiny_config(brain_files, tmp_path / "run")
    other = {**config["model"]["config"], "scale": [1, 1, 4]}
    torch.manual_seed(12)
    start = models.create("edsr3d", **other)
    path = save_model(start, tmp_path / "thick4.safetensors", name="thick4", family="edsr3d", config=other)
    config["model"]["init_from"] = str(path)
    with pytest.raises(ConfigError, match="init_partial"):
        Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda m: None)
    config["model"]["init_partial"] = True
    messages: list[str] = []
    trainer = Trainer(config_from_dict(config, tmp_path), show_progress=False, log=messages.append)
    source = start.state_dict()
    copied = [name for name, tensor in trainer.network.state_dict().items()
              if name in source and source[name].shape == tensor.shape]
    fresh = [name for name, tensor in trainer.network.state_dict().items() if name not in copied]
    assert copied and fresh
    assert all(torch.equal(trainer.network.state_dict()[name], source[name]) for name in copied)
    assert any(f"initialised {len(copied)} of" in message for message in messages)
    config["model"]["family"], config["model"]["config"] = "srdensenet", {"spatial_dims": 3}
    with pytest.raises(ConfigError, match="must still be a srdensenet"):
        Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda m: None)


def test_init_grow_starts_a_wider_deeper_model_at_the_smaller_models_output(
    brain_files: list[Path], tmp_path: Path
) -> None:
    from MRISuperResLib import models
    from MRISuperResLib.engine.checkpoint import save_model
    from MRISuperResLib.training.loop import Trainer

    config = tiny_config(brain_files, tmp_path / "run")
    small = dict(config["model"]["config"])
    torch.manual_seed(13)
    start = models.create("edsr3d", **small)
    for parameter in start.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    path = save_model(start, tmp_path / "small.safetensors", name="small", family="edsr3d", config=small)
    config["model"]["init_from"] = str(path)
    config["model"]["config"] = {**small, "channels": 12, "blocks": 3}
    config["model"]["init_grow"] = True
    messages: list[str] = []
    trainer = Trainer(config_from_dict(config, tmp_path), show_progress=False, log=messages.append)
    x = torch.randn(1, 1, 9, 8, 7)
    with torch.no_grad():
        torch.testing.assert_close(trainer.network.eval()(x), start.eval()(x), rtol=1e-4, atol=1e-4)
    assert any("grown from small.safetensors (8 channels x 1 blocks to 12 x 3)" in m for m in messages)
    config["model"]["config"] = {**small, "channels": 4}
    with pytest.raises(ConfigError, match="init_grow.*can only grow"):
        Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda m: None)
    config["model"]["init_partial"] = True
    with pytest.raises(ConfigError, match="exclude each other"):
        Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda m: None)
    config["model"]["init_partial"] = False
    other = {"spatial_dims": 3}
    other_path = save_model(models.create("srdensenet", **other), tmp_path / "dense.safetensors", name="dense",
                            family="srdensenet", config=other)
    config["model"]["init_from"] = str(other_path)
    with pytest.raises(ConfigError, match="dense.safetensors is a srdensenet"):
        Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda m: None)
    config["model"].pop("init_from")
    with pytest.raises(ConfigError, match="init_grow needs model.init_from"):
        config_from_dict(config, tmp_path)
    config["model"]["init_grow"] = "yes"
    with pytest.raises(ConfigError, match="init_grow must be true or false"):
        config_from_dict(config, tmp_path)


def test_a_user_supplied_mask_drives_patch_sampling(brain_files: list[Path], tmp_path: Path) -> None:
    from MRISuperResLib.processing.normalization import NormalizationSettings
    from MRISuperResLib.training.data import load_subject
    from MRISuperResLib.imaging.volume_io import read_volume

    volume = read_volume(brain_files[0])
    box = np.zeros(volume.shape, np.uint8)
    box[10:20, 10:22, 8:16] = 1
    mask_path = write_volume(volume.with_array(box), tmp_path / "mask.nii.gz")
    normalization = NormalizationSettings()
    subject = load_subject(brain_files[0], (2, 2, 2), normalization=normalization, crop_foreground=False, n4=False,
                           mask_path=mask_path)
    assert subject.mask_high.sum() == box[: subject.mask_high.shape[0], : subject.mask_high.shape[1],
                                          : subject.mask_high.shape[2]].sum()
    assert 0 < subject.mask_low.sum() <= box.sum() / 8


def test_evaluation_spec_overrides_the_models_forward_model() -> None:
    from MRISuperResLib.evaluation.evaluate import evaluation_spec

    model = {"kind": "kspace", "noise": [0.0, 0.02], "bias": 0.1}
    spec = evaluation_spec(model, "kspace,kspace,box", 0.01, 0.2)
    assert tuple(spec.kind) == ("kspace", "kspace", "box") and spec.noise == (0.01, 0.01) and spec.gap == 0.2
    assert evaluation_spec(model).noise == (0.0, 0.02)
    with pytest.raises(ValueError):
        evaluation_spec(model, "sinc")
