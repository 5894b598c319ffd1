"""Mixed-precision training: the float16 path scales its gradients (generator and critic), the scaler's state
resumes exactly, and bfloat16 / float32 paths are left as they were."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from MRISuperResLib.engine.device import DeviceChoice
from MRISuperResLib.training.config import config_from_dict
from MRISuperResLib.engine import mixed_precision as precision
from MRISuperResLib.training import loop
from MRISuperResLib.training.loop import Trainer
from MRISuperResLib.engine.mixed_precision import cpu_has_bfloat16, grad_scaler, training_dtype
from helpers import tiny_config


def adversarial_config(paths: list[Path], output: Path, device: str = "cpu") -> dict:
    return tiny_config(
        paths, output, run={"steps": 6, "validate_every": 3, "checkpoint_every": 2, "device": device, "amp": True},
        loss={"l1": 1.0, "adversarial": 0.05, "n_critic": 2},
        model={"family": "edsr3d", "config": {"scale": [2, 2, 2], "channels": 8, "blocks": 1,
                                                "upsample_features": 2},
               "critic": {"channels": 4, "layers": 2}},
    )


def train(config: dict, tmp_path: Path, **run_options) -> Trainer:
    trainer = Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda message: None)
    trainer.run(**run_options)
    return trainer


@pytest.fixture
def float16_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every device choose float16 autocast, as a CUDA GPU without bfloat16 does (CPU autocast supports it)."""
    monkeypatch.setattr(DeviceChoice, "autocast_dtype", property(lambda self: torch.float16))
    monkeypatch.setattr(loop, "training_dtype", lambda choice, amp: torch.float16 if amp else None)


@pytest.mark.parametrize("dtype, enabled", [(torch.float16, True), (torch.bfloat16, False), (None, False)])
def test_the_scaler_is_enabled_exactly_for_float16(dtype: torch.dtype | None, enabled: bool) -> None:
    assert grad_scaler(torch.device("cpu"), dtype).is_enabled() is enabled


@pytest.mark.parametrize("has_bfloat16", [True, False])
def test_cpu_training_autocasts_to_bfloat16_only_with_bfloat16_instructions(
        has_bfloat16: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: has_bfloat16)
    cpu = DeviceChoice(torch.device("cpu"))
    assert training_dtype(cpu, amp=True) == (torch.bfloat16 if has_bfloat16 else None)
    assert training_dtype(cpu, amp=False) is None
    assert training_dtype(DeviceChoice(torch.device("mps")), amp=True) is None


def test_cpu_training_has_no_scaler(brain_files: list[Path], tmp_path: Path) -> None:  # noqa: F811
    for amp in (True, False):
        config = adversarial_config(brain_files, tmp_path / "run")
        config["run"]["amp"] = amp
        trainer = Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda message: None)
        assert trainer.amp_dtype == (torch.bfloat16 if amp and cpu_has_bfloat16() else None)
        assert not trainer.scaler.is_enabled() and trainer.critic is not None
        assert not trainer.critic.scaler.is_enabled()


def test_bfloat16_training_keeps_float32_weights_and_learns_as_float32_does(
        brain_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """CPU bfloat16 autocast (forced here, so that CPUs without the instructions test it too, slowly) trains the
    same problem to the same validation PSNR as float32 (within 0.05 dB of a +0.25 dB gain over B-spline); weights,
    saved state and the optimiser's updates stay float32."""
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: True)
    results = {}
    for amp in (True, False):
        config = tiny_config(brain_files, tmp_path / f"amp-{amp}",
                             run={"steps": 100, "validate_every": 50, "checkpoint_every": 100, "amp": amp},
                             optim={"lr": 0.001}, augment={"gmm_contrast": 0.0},
                             data={"patch_size": [12, 12, 12], "batch_size": 4,
                                   "degradation": {"kind": "kspace", "noise": [0, 0]}})
        config["model"]["config"]["channels"] = 16
        trainer = train(config, tmp_path)
        assert trainer.amp_dtype == (torch.bfloat16 if amp else None)
        assert all(tensor.dtype == torch.float32 for tensor in trainer.network.state_dict().values())
        state = torch.load(tmp_path / f"amp-{amp}" / "state.pt", weights_only=True)
        assert all(tensor.dtype == torch.float32 for tensor in state["network"].values())
        results[amp] = trainer.best
    assert results[True] is not None and results[False] is not None
    assert results[False].psnr > results[False].baseline_psnr + 0.15  # a gain that precision could spoil
    assert abs(results[True].psnr - results[False].psnr) < 0.05, (results[True].psnr, results[False].psnr)


def test_float16_training_scales_gradients_and_resumes_exactly(brain_files: list[Path], tmp_path: Path,  # noqa: F811
                                                               float16_autocast: None) -> None:
    straight = train(adversarial_config(brain_files, tmp_path / "straight"), tmp_path)
    assert straight.amp_dtype == torch.float16
    assert straight.scaler.is_enabled() and straight.critic is not None and straight.critic.scaler.is_enabled()
    rows = [row for row in straight.history if "val_psnr" in row]
    assert rows and all(np.isfinite(row["val_psnr"]) and np.isfinite(row["critic"]) for row in rows)
    state = torch.load(tmp_path / "straight" / "state.pt", weights_only=True)
    # Both scalers are saved; the generator's has counted its steps (no overflow on this well-behaved problem).
    assert state["scaler"]["scale"] == 65536.0 and state["scaler"]["_growth_tracker"] == 6
    # The critic's gradient-penalty updates overflow float16 at the default scale of 2**16 at first: the scaler
    # skips those updates and halves its scale, as dynamic loss scaling should (never above its start).
    assert state["critic_scaler"] == straight.critic.scaler.state_dict()
    assert 0 < state["critic_scaler"]["scale"] < 65536.0

    config = adversarial_config(brain_files, tmp_path / "resumed")
    stopped = train(config, tmp_path, stop_at=3)
    assert stopped.step == 3 and stopped.scaler.state_dict()["_growth_tracker"] == 3
    resumed = train(config, tmp_path, resume=True)
    assert resumed.scaler.state_dict() == straight.scaler.state_dict()
    assert resumed.critic.scaler.state_dict() == straight.critic.scaler.state_dict()  # type: ignore[union-attr]
    for (name, a), (_, b) in zip(straight.network.state_dict().items(), resumed.network.state_dict().items()):
        assert torch.equal(a, b), name
    for (name, a), (_, b) in zip(straight.critic.network.state_dict().items(),
                                 resumed.critic.network.state_dict().items()):  # type: ignore[union-attr]
        assert torch.equal(a, b), name


def test_an_overflowing_float16_step_is_skipped_and_the_scale_backs_off(brain_files: list[Path],  # noqa: F811
                                                                         tmp_path: Path,
                                                                         float16_autocast: None) -> None:
    config = adversarial_config(brain_files, tmp_path / "run")
    config["loss"]["adversarial"] = 0.0
    trainer = Trainer(config_from_dict(config, tmp_path), show_progress=False, log=lambda message: None)
    trainer.load_data()
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 60)  # float16 gradients overflow at this scale
    before = {name: tensor.clone() for name, tensor in trainer.network.state_dict().items()}
    trainer._refresh(0)
    trainer.train_step(0)
    assert trainer.scaler.get_scale() == 2.0 ** 59
    assert all(torch.equal(before[name], tensor) for name, tensor in trainer.network.state_dict().items())
    trainer.scaler = torch.amp.GradScaler("cpu")  # the default scale: this step is taken
    trainer.train_step(1)
    assert any(not torch.equal(before[name], tensor) for name, tensor in trainer.network.state_dict().items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_float16_adversarial_training_on_a_cuda_gpu(brain_files: list[Path], tmp_path: Path,  # noqa: F811
                                                    float16_autocast: None) -> None:
    """The Titan X path of seed 002 on whatever CUDA GPU is present (float16 forced where bfloat16 exists)."""
    trainer = train(adversarial_config(brain_files, tmp_path / "run", device="cuda"), tmp_path)
    assert trainer.device.device.type == "cuda" and trainer.amp_dtype == torch.float16
    assert trainer.scaler.is_enabled() and trainer.critic is not None and trainer.critic.scaler.is_enabled()
    assert trainer.best is not None and np.isfinite(trainer.best.psnr)
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0 and state["critic_scaler"]["scale"] > 0
    assert (tmp_path / "run" / "tiny.safetensors").is_file()
