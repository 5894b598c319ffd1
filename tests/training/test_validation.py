"""Held-out real pairs as validation (scale 1 included) and excluded (corrupted) slices, on small real volumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from MRISuperResLib.errors import InputError
from MRISuperResLib.imaging.volume import Grid, Volume
from MRISuperResLib.imaging.volume_io import read_volume, write_volume

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def brains(tmp_path_factory: pytest.TempPathFactory, mni_volume: Volume) -> list[Path]:
    """Three small real brains (MNI152 box-averaged to 3 mm, shifted crops, different gains)."""
    from MRISuperResLib.processing.degradation import box_downsample
    from MRISuperResLib.imaging.geometry import resampled_grid

    folder = tmp_path_factory.mktemp("brains")
    usable = tuple(n - n % 3 for n in mni_volume.shape)
    shape = tuple(n // 3 for n in usable)
    grid = resampled_grid(Grid(usable, mni_volume.spacing, mni_volume.grid.origin, mni_volume.grid.direction), shape)
    coarse = box_downsample(mni_volume.array[: usable[0], : usable[1], : usable[2]].astype(np.float32), shape)
    paths = []
    for index, gain in enumerate((1.0, 0.8, 1.3)):
        region = tuple(slice(4 + index, n - 6 + index) for n in shape)
        origin = grid.physical_points(np.array([float(r.start) for r in region]))
        crop = coarse[region] * gain
        paths.append(write_volume(Volume(crop.astype(np.float32), Grid(crop.shape, grid.spacing, tuple(origin),
                                                                       grid.direction)), folder / f"b{index}.nii.gz"))
    return paths


def synthetic_low(high_path: Path, out: Path, seed: int) -> Path:
    """A real-pair stand-in: the volume blurred, noisy and on its own coarser grid (twice the spacing)."""
    from scipy.ndimage import gaussian_filter

    from MRISuperResLib.processing.degradation import box_downsample
    from MRISuperResLib.imaging.geometry import resampled_grid

    high = read_volume(high_path)
    usable = tuple(n - n % 2 for n in high.shape)
    array = gaussian_filter(high.array.astype(np.float32), 0.8)[: usable[0], : usable[1], : usable[2]]
    shape = tuple(n // 2 for n in usable)
    grid = resampled_grid(Grid(usable, high.spacing, high.grid.origin, high.grid.direction), shape)
    low = box_downsample(array, shape)
    low = low + np.random.default_rng(seed).normal(0, 0.02 * float(np.percentile(low, 99)), low.shape)
    return write_volume(Volume(np.clip(low, 0, None).astype(np.float32), grid), out)


def base_config(output: Path, **data) -> dict:
    return {
        "name": "pairs",
        "output_dir": str(output),
        "seed": 1,
        "model": {"family": "edsr3d", "config": {"scale": [1, 1, 1], "channels": 8, "blocks": 1,
                                                  "upsample_features": 2, "global_skip": "baseline"}},
        "data": {"patch_size": [8, 8, 8], "batch_size": 2, "resimulate_every": 100,
                 "degradation": {"kind": "kspace", "noise": [0.0, 0.0]}, **data},
        "augment": {"intensity_scale": [1.0, 1.0], "intensity_shift": [0.0, 0.0]},
        "optim": {"lr": 0.002},
        "run": {"steps": 6, "validate_every": 3, "checkpoint_every": 100, "log_every": 1, "device": "cpu",
                "early_stop_patience": 0, "threads": 1},
    }


def train(config: dict, base: Path):
    from MRISuperResLib.training.config import config_from_dict
    from MRISuperResLib.training.loop import Trainer

    messages: list[str] = []
    trainer = Trainer(config_from_dict(config, base), show_progress=False, log=messages.append)
    return trainer, trainer.run(), messages


# ---------------------------------------------------------------------------------------------- real pairs
def test_scale_one_simulated_validation_is_refused_with_the_way_out(brains: list[Path], tmp_path: Path) -> None:
    config = base_config(tmp_path / "run", train=[str(brains[0])], validation=[str(brains[1])])
    with pytest.raises(InputError, match="infinite PSNR: hold out real pairs in data.validation_pairs"):
        train(config, tmp_path)


def test_held_out_real_pair_validates_a_scale_one_run(brains: list[Path], tmp_path: Path) -> None:
    lows = [synthetic_low(path, tmp_path / f"low{i}.nii.gz", i) for i, path in enumerate(brains[:2])]
    config = base_config(tmp_path / "run", pairs=[{"high": str(brains[0]), "low": str(lows[0])}],
                         validation_pairs=[{"high": str(brains[1]), "low": str(lows[1])}])
    trainer, result, messages = train(config, tmp_path)
    # Validation is the held-out pair: its input is the registered low-resolution scan, its baseline that input
    # itself on the target grid (scale 1), not a simulation. The network sees it clipped to [0, 1], as in enhance;
    # the baseline is the unclipped input, as enhance's B-spline of the input volume.
    (subject,) = trainer.validation_subjects
    assert subject.name == "b1.nii.gz" and subject.real_low is not None
    assert np.array_equal(np.clip(subject.baseline, 0, 1), subject.low)
    rows = [row for row in result.history if "val_psnr" in row]
    assert [row["step"] for row in rows] == [3, 6]
    assert all(np.isfinite(row["baseline_psnr"]) and 15 < row["baseline_psnr"] < 60 for row in rows)
    assert all(np.isfinite(row["val_psnr"]) for row in rows)
    assert not any("inf" in message for message in messages)
    assert any("B-spline" in message for message in messages)
    assert any("loading 2 volume(s), registering 2 real pair(s)" in message for message in messages)
    from MRISuperResLib.engine.checkpoint import read_metadata

    assert read_metadata(result.model_path)["training"]["validation"] == ["b1.nii.gz"]


def test_ixi002_pair_as_validation(shared_data: Path, brains: list[Path], tmp_path: Path) -> None:
    """The real IXI002 T1/T2 pair (two acquisitions, two grids), cropped and coarsened, held out at scale 1."""
    from MRISuperResLib.processing.degradation import box_downsample
    from MRISuperResLib.imaging.geometry import resampled_grid

    files = []
    for name in ("IXI002_T1", "IXI002_T2"):
        volume = read_volume(shared_data / "pairs" / f"{name}.nii.gz")
        usable = tuple(n - n % 4 for n in volume.shape)
        shape = tuple(n // 4 for n in usable)
        grid = resampled_grid(Grid(usable, volume.spacing, volume.grid.origin, volume.grid.direction), shape)
        coarse = box_downsample(volume.array[: usable[0], : usable[1], : usable[2]].astype(np.float32), shape)
        files.append(write_volume(Volume(coarse, grid), tmp_path / f"{name}.nii.gz"))
    config = base_config(tmp_path / "run", train=[str(brains[0])],
                         validation_pairs=[{"high": str(files[0]), "low": str(files[1])}])
    config["data"]["degradation"] = {"kind": "kspace", "noise": [0.01, 0.03]}
    trainer, result, messages = train(config, tmp_path)
    rows = [row for row in result.history if "val_psnr" in row]
    assert rows and all(np.isfinite(row["baseline_psnr"]) and np.isfinite(row["val_psnr"]) for row in rows)
    assert not any("inf" in message for message in messages)


# -------------------------------------------------------------------------------------------- excluded slices
def corrupted(path: Path, out: Path, value: float, axis: int, indices: list[int]) -> Path:
    volume = read_volume(path)
    array = volume.array.astype(np.float32).copy()
    region: list = [slice(None)] * 3
    region[axis] = indices
    array[tuple(region)] = value
    return write_volume(volume.with_array(array), out)


def test_excluded_slices_never_contribute_to_training(brains: list[Path], tmp_path: Path) -> None:
    axis, indices = 2, [5, 9, 20]
    exclude = {"axis": axis, "indices": indices}
    histories = {}
    for label, value in (("clean", None), ("spikes", 3e4)):
        folder = tmp_path / label
        folder.mkdir()
        paths = [p if value is None else corrupted(p, folder / p.name, value, axis, indices) for p in brains]
        config = base_config(folder / "run", train=[str(p) for p in paths[:2]], validation=[str(paths[2])],
                             exclude_slices={p.name: exclude for p in paths})
        config["model"]["config"]["scale"] = [2, 2, 2]
        config["data"]["degradation"] = {"kind": "kspace", "noise": [0.0, 0.02]}
        trainer, result, _ = train(config, tmp_path)
        histories[label] = result.history
        assert all(np.isfinite(v) for row in result.history for v in row.values() if isinstance(v, float))
    keys = ("loss", "val_psnr", "val_ssim", "baseline_psnr", "baseline_ssim")
    clean = [[row.get(k) for k in keys] for row in histories["clean"]]
    assert [[row.get(k) for k in keys] for row in histories["spikes"]] == clean
    # Control: one spiked slice without the exclusion changes the run.
    folder = tmp_path / "unexcluded"
    folder.mkdir()
    paths = [corrupted(p, folder / p.name, 3e4, axis, indices[-1:]) for p in brains]
    config = base_config(folder / "run", train=[str(p) for p in paths[:2]], validation=[str(paths[2])])
    config["model"]["config"]["scale"] = [2, 2, 2]
    config["data"]["degradation"] = {"kind": "kspace", "noise": [0.0, 0.02]}
    _, result, _ = train(config, tmp_path)
    assert [[row.get(k) for k in keys] for row in result.history] != clean


def test_excluded_targets_add_nothing_to_the_loss() -> None:
    from MRISuperResLib.processing.exclusion import fill_from_estimate
    from MRISuperResLib.training.losses import ReconstructionLoss

    torch.manual_seed(0)
    target, estimate = torch.rand(2, 1, 8, 8, 8), torch.rand(2, 1, 8, 8, 8, requires_grad=True)
    marked = target.clone()
    marked[:, :, :, :, 3] = float("nan")
    filled = fill_from_estimate(marked, estimate)
    total, _ = ReconstructionLoss(l1=1.0)(estimate, filled)
    total.backward()
    assert torch.isfinite(total) and float(estimate.grad[:, :, :, :, 3].abs().max()) == 0.0
    assert float(estimate.grad[:, :, :, :, 2].abs().max()) > 0


def test_exclusion_specs_are_checked(brains: list[Path], tmp_path: Path) -> None:
    from MRISuperResLib.processing.exclusion import excluded_voxels, parse_exclusion, parse_exclusion_text

    assert parse_exclusion_text("2:3,7,10-12")[0].indices == (3, 7, 10, 11, 12)
    with pytest.raises(InputError, match="neither AXIS:INDICES"):
        parse_exclusion_text("3:1")
    with pytest.raises(InputError, match=r"write \{axis: 0\|1\|2, indices"):
        parse_exclusion({"axis": 2, "slices": [1]}, Path, "data.exclude_slices[b0]")
    volume = read_volume(brains[0])
    rules = parse_exclusion({"axis": 1, "indices": [volume.shape[1]]}, Path, "x")
    with pytest.raises(InputError, match="outside axis 1"):
        excluded_voxels(rules, volume, "b0")


def test_masked_ssim_ignores_excluded_voxels_only() -> None:
    from MRISuperResLib.evaluation.metrics import ssim

    rng = np.random.default_rng(0)
    reference = rng.random((20, 20, 20)).astype(np.float32)
    estimate = reference + rng.normal(0, 0.1, reference.shape).astype(np.float32)
    none = np.zeros(reference.shape, bool)
    one = none.copy()
    one[:, :, 0] = True
    # An excluded edge slice leaves out exactly the windows that touch it: the SSIM of the volume without that
    # slice, whatever the slice holds.
    assert ssim(estimate, reference, none) == ssim(estimate, reference)
    broken = estimate.copy()
    broken[:, :, 0] = np.nan
    value = ssim(broken, reference, one)
    assert np.isfinite(value) and value == pytest.approx(ssim(estimate[:, :, 1:], reference[:, :, 1:]), abs=1e-6)
    assert value != pytest.approx(ssim(estimate, reference), abs=1e-4)


def test_evaluate_leaves_excluded_slices_out(brains: list[Path], tmp_path: Path, capsys) -> None:
    from helpers import make_tiny_model

    from MRISuperResLib.cli.app import main

    model = make_tiny_model(tmp_path / "tiny.safetensors")
    spiked = corrupted(brains[2], tmp_path / "spiked.nii.gz", 3e4, 0, [10, 11])
    results = {}
    for label, reference, extra in (("clean", brains[2], ["--exclude-slices", "0:10-11"]),
                                    ("spiked", spiked, ["--exclude-slices", "0:10-11"]),
                                    ("spiked-unexcluded", spiked, [])):
        assert main(["evaluate", str(reference), "--model", str(model), "--device", "cpu", "--json", *extra]) == 0
        results[label] = json.loads(capsys.readouterr().out)["volumes"][0]
    keys = ("psnr_sr", "psnr_baseline", "psnr_sr_whole", "psnr_baseline_whole", "ssim_sr", "ssim_baseline")
    assert all(np.isfinite(results["spiked"][k]) for k in keys)
    assert [results["spiked"][k] for k in keys] == pytest.approx([results["clean"][k] for k in keys], abs=1e-6)
    assert results["spiked-unexcluded"]["psnr_baseline"] != pytest.approx(results["clean"]["psnr_baseline"], abs=0.5)
    assert main(["evaluate", str(spiked), "--model", str(model), "--exclude-slices", "0:1", "1:2"]) != 0


# ------------------------------------------------------------------------------------------- as a new user
def test_cli_train_writes_under_the_working_directory_and_registers_the_model(
        brains: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import yaml

    from MRISuperResLib.engine import model_zoo
    from MRISuperResLib.engine.checkpoint import read_metadata
    from MRISuperResLib.cli.app import main

    monkeypatch.setenv("MRISUPERRES_CONFIG_DIR", str(tmp_path / "settings"))
    monkeypatch.delenv("MRISUPERRES_MODEL_PATH", raising=False)
    recipes, work = tmp_path / "recipes", tmp_path / "work"
    recipes.mkdir()
    work.mkdir()
    config = base_config(Path("runs/mine"), train=[str(p) for p in brains[:2]], validation=[str(brains[2])])
    config["name"] = "my-x2"
    config["model"]["config"]["scale"] = [2, 2, 2]
    config["data"]["degradation"] = {"kind": "kspace", "noise": [0.0, 0.02]}
    config["output_dir"] = "runs/mine"
    (recipes / "recipe.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(work)
    assert main(["train", "--config", str(recipes / "recipe.yaml"), "--quiet"]) == 0
    out = capsys.readouterr().out
    folder = (work / "runs" / "mine").resolve()
    assert f"output folder: {folder}" in out
    assert (folder / "my-x2.safetensors").is_file() and not (recipes / "runs").exists()
    assert "use --model my-x2" in out
    # Called by name, the final model (not best.safetensors, which carries the same name) is found.
    assert model_zoo.resolve_model("my-x2", (2, 2, 2)).path == folder / "my-x2.safetensors"
    card = (folder / "my-x2.md").read_text()
    verdict = model_zoo.baseline_verdict(read_metadata(folder / "my-x2.safetensors")["metrics"]["validation"])
    # Six steps leave the model at or below B-spline: the saved model says so in one line and in its card.
    assert verdict is not None and f"my-x2.safetensors: {verdict}" in out and verdict in card
    assert main(["enhance", str(brains[2]), str(tmp_path / "sr.nii.gz"), "--model", "my-x2", "--quiet"]) == 0


def test_baseline_verdict_thresholds() -> None:
    from MRISuperResLib.engine.model_zoo import BARELY_BETTER_DB, baseline_verdict, model_card_text

    assert "1.50 dB worse than B-spline" in baseline_verdict({"psnr": 30.0, "baseline_psnr": 31.5})
    assert "only +0.10 dB better" in baseline_verdict({"psnr": 30.1, "baseline_psnr": 30.0})
    assert baseline_verdict({"psnr": 30.0 + BARELY_BETTER_DB + 0.01, "baseline_psnr": 30.0}) is None
    assert baseline_verdict({}) is None
    card = model_card_text({"name": "m", "metrics": {"validation": {"psnr": 29.0, "baseline_psnr": 30.0,
                                                                     "ssim": 0.9}}})
    assert "**warning: 1.00 dB worse than B-spline" in card


def test_seed_recipes_follow_their_seeds_hyper_parameters() -> None:
    """The recipes named after a source document use its loss, critic and learning rates (see their comments)."""
    from helpers import ROOT

    from MRISuperResLib.training.config import load_config

    edsr = load_config(ROOT / "configs" / "edsr3d_x2_seed.yaml")  # seed 001: MSE on 32^3 blocks
    assert (edsr.loss.mse, edsr.loss.l1, edsr.data.patch_size) == (1.0, 0.0, [16, 16, 16])
    dense = load_config(ROOT / "configs" / "srdensenet_x2_seed.yaml")  # seed 003: MSE, 20 slices of 16x16
    assert (dense.loss.mse, dense.loss.l1) == (1.0, 0.0)
    assert dense.data.batch_size * dense.data.patch_size[2] == 20 and dense.data.patch_size[:2] == [16, 16]
    arssr = load_config(ROOT / "configs" / "arssr_rdn_seed.yaml")  # seed 004: lr 1e-4 halved, bs 15
    assert (arssr.optim.lr, arssr.optim.factor, arssr.data.batch_size) == (1e-4, 0.5, 15)
    gan = load_config(ROOT / "configs" / "unet25d_wgan_seed.yaml")  # seed 002, tables 2 and 3
    assert (gan.loss.adversarial, gan.loss.critic_lr, gan.loss.n_critic, gan.loss.gp_weight) == (0.2, 2e-5, 5, 10.0)
    assert gan.model.critic == {"family": "patch_discriminator", "config": {"channels": 256, "layers": 4}}
    assert (gan.model.config["channels"], gan.model.config["groups"], gan.model.config["res_blocks"]) == (256, 64, 4)
    assert (gan.optim.lr, gan.optim.betas, gan.optim.factor) == (1e-4, [0.9, 0.999], 0.8)
    assert gan.data.batch_size * gan.data.patch_size[2] * 2 == 48
    unet = load_config(ROOT / "configs" / "unet25d_x2_seed.yaml")
    assert (unet.optim.lr, unet.optim.factor, unet.optim.step_size) == (1e-4, 0.5, 200)
    assert unet.data.batch_size * unet.data.patch_size[2] * 2 == 16
