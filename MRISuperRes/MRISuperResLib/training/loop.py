"""The training loop: patches -> model -> losses -> validation -> best checkpoint, resumable and distributed.

Outputs in ``output_dir``: ``state.pt`` (everything needed to resume: weights, optimiser, scheduler, critic,
gradient scalers, history; written atomically every ``checkpoint_every`` steps, at every validation and when
stopped by a signal; read back with ``torch.load(weights_only=True)``), ``best.safetensors`` (best validation PSNR so far, engine
format), ``<name>.safetensors`` (the final model: the best weights with full metadata: data, degradation, config,
validation metrics, code revision) and its card ``<name>.md``, ``log.csv``, ``curves.png`` and a copy of the config.

A run is a pure function of its config and seed: patches, augmentations and simulations are drawn from streams
keyed by the step (see :mod:`.data`), and torch's generator (gradient-penalty interpolation, dropout) is reseeded
from ``(seed, step, rank)`` before every step, so no random state needs saving: a run killed and resumed ends
exactly where an uninterrupted one does, with one process or with DDP (where every process also holds the same
generator and critic).
"""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from .. import models
from ..processing.acquisition import AcquisitionRanges
from ..engine.checkpoint import save_model
from ..engine.conditioning import ContextSpec, slice_positions, subject_contexts
from ..processing.degradation import DegradationSpec
from ..engine.device import DeviceChoice, select_device
from ..errors import InputError, MRISuperResError
from ..engine.inference import run_tiled
from ..evaluation.metrics import psnr, ssim
from ..processing.normalization import NormalizationSettings
from .adversarial import CriticTrainer
from .augment import ElasticSettings, PatchBatch, augment_batch
from .config import ConfigError, TrainConfig
from .data import (
    Subject,
    integer_scale,
    patch_rng,
    refresh_rng,
    refresh_subject,
    sample_patches,
)
from .distributed import barrier, broadcast_float, init_distributed, shutdown
from ..processing.exclusion import fill_from_estimate
from .losses import ReconstructionLoss
from .point_sampling import PointSampler, point_step
from .precision import autocast, grad_scaler

STATE_FILE = "state.pt"
BEST_FILE = "best.safetensors"
LOG_FILE = "log.csv"
CURVES_FILE = "curves.png"


@dataclass
class Validation:
    """Mean validation metrics of the model and of the B-spline baseline (PSNR in dB inside the foreground)."""

    psnr: float
    ssim: float
    baseline_psnr: float
    baseline_ssim: float


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    model_path: Path | None
    best: Validation | None
    best_step: int
    steps_done: int
    stopped_early: bool
    interrupted: bool
    history: list[dict[str, Any]] = field(default_factory=list)


class _StopRequest:
    """Turns SIGINT / SIGTERM into a flag checked between steps, so the state is saved before leaving."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def code_revision() -> str:
    """The git commit of the engine's checkout (``"unknown"`` outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Trainer:
    """Train one model from a :class:`TrainConfig`.

    Args:
        config: the run's configuration.
        show_progress: draw a progress bar with ETA (main process, terminals only).
        log: callable receiving one-line status messages.
    """

    def __init__(self, config: TrainConfig, show_progress: bool = True, log=print) -> None:  # type: ignore[no-untyped-def]
        self.config = config
        self.show_progress = show_progress
        self.log = log
        self.context, device_request = init_distributed(config.run.device)
        self.device: DeviceChoice = select_device(device_request)
        if self.device.note and self.context.is_main:
            log(f"warning: {self.device.note}")
        if config.run.threads:
            torch.set_num_threads(int(config.run.threads))
        self.output_dir = config.output_path()
        scale = config.data.scale or config.model.config.get("scale") or [2, 2, 2]
        self.scale = integer_scale(scale if len(scale) == 3 else list(scale) * 3)
        self.spec = DegradationSpec.from_dict(config.data.degradation)
        self.acquisition = (AcquisitionRanges.from_dict(config.data.acquisition)
                            if config.data.acquisition is not None else None)
        self.normalization = NormalizationSettings.from_dict(config.data.normalization)
        torch.manual_seed(config.seed)
        model_config = dict(config.model.config)
        if "scale" in models.family_class(config.model.family).__init__.__code__.co_varnames:
            model_config.setdefault("scale", list(self.scale))
        self.context_spec = ContextSpec.from_config(config.data.context["variables"]) if config.data.context else None
        if self.context_spec is not None:  # the network's context follows the variables (seed 002 conditioning)
            model_config.update(context_dim=self.context_spec.dim,
                                slice_position_index=self.context_spec.slice_position_index)
        self.model_config = model_config
        try:
            self.network = models.create(config.model.family, **model_config).to(self.device.device)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"model.config does not fit family {config.model.family}: {error}") from None
        if config.model.init_from:
            self._initialise_from(config.resolve(config.model.init_from))
        self.arbitrary_scale = bool(getattr(self.network, "arbitrary_scale", False))
        self.residual = bool(getattr(self.network, "residual_to_baseline", False))
        self.sampler: PointSampler | None = None  # arbitrary-scale batches of drawn points (seed 004)
        self.trained: nn.Module = self.network
        if self.context.enabled:
            ids = [self.device.device.index] if self.device.device.type == "cuda" else None
            self.trained = nn.parallel.DistributedDataParallel(self.network, device_ids=ids)
        optim = config.optim
        optimizer_class = torch.optim.AdamW if optim.name == "adamw" else torch.optim.Adam
        self.optimizer = optimizer_class(self.network.parameters(), lr=optim.lr, betas=tuple(optim.betas),
                                         weight_decay=optim.weight_decay)
        self.scheduler = self._make_scheduler()
        self.loss = ReconstructionLoss(
            l1=config.loss.l1, mse=config.loss.mse, ssim=config.loss.ssim, gradient=config.loss.gradient,
            fft=config.loss.fft, perceptual=config.loss.perceptual,
            perceptual_weights=config.resolve(config.loss.perceptual_weights) if config.loss.perceptual_weights
            else None,
        ).to(self.device.device)
        self.amp_dtype = self.device.autocast_dtype if config.run.amp else None
        self.scaler = grad_scaler(self.device.device, self.amp_dtype)
        self.critic: CriticTrainer | None = None
        if config.loss.adversarial > 0:
            self.critic = CriticTrainer(config.model.critic, config.loss.critic_lr, self.device.device,
                                        self.amp_dtype, self.context)
        self.train_subjects: list[Subject] = []
        self.validation_subjects: list[Subject] = []
        self.validation_inputs: list[tuple[np.ndarray, ...]] = []
        self.history: list[dict[str, Any]] = []
        self.best: Validation | None = None
        self.best_step = -1
        self.bad_validations = 0
        self.step = 0

    # ----------------------------------------------------------------------------------------------- setup
    def _initialise_from(self, path: Path) -> None:
        from ..engine.checkpoint import load_model_file

        start = load_model_file(path)
        family, config = start.metadata.family, start.metadata.config
        if self.config.model.init_partial:
            if family != self.config.model.family:
                raise ConfigError(f"model.init_from {path} is a {family}; with init_partial it must still be a "
                                  f"{self.config.model.family}")
            own = self.network.state_dict()
            matching = {name: tensor for name, tensor in start.network.state_dict().items()
                        if name in own and own[name].shape == tensor.shape}
            if not matching:
                raise ConfigError(f"model.init_from {path} shares no tensor of matching name and shape with this "
                                  "model; start from a model of the same family and channels")
            self.network.load_state_dict(matching, strict=False)
            self.log(f"initialised {len(matching)} of {len(own)} tensors from {path.name}; "
                     f"{len(own) - len(matching)} start fresh")
            return
        if family != self.config.model.family or config != self.model_config:
            raise ConfigError(f"model.init_from {path} is a {family} with config {config}; it must match "
                              "model.family and model.config (or set model.init_partial: true)")
        self.network.load_state_dict(start.network.state_dict())

    def _make_scheduler(self):  # type: ignore[no-untyped-def]
        optim = self.config.optim
        if optim.schedule == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="max", factor=optim.factor, patience=optim.patience, min_lr=optim.min_lr)
        if optim.schedule == "step":
            return torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=optim.step_size, gamma=optim.factor)
        if optim.schedule == "exponential":
            return torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=optim.factor)
        if optim.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(1, self.config.run.steps),
                                                              eta_min=optim.min_lr)
        return None

    def load_data(self) -> None:
        """Read, crop and normalise every subject; split by subject; draw the validation inputs (:mod:`.loading`)."""
        from .loading import load_training_data

        loaded = load_training_data(self.config, self.scale, self.normalization, self.spec,
                                    show_progress=self.show_progress and self.context.is_main,
                                    log=self.log if self.context.is_main else (lambda message: None))
        self.train_subjects, self.validation_subjects = loaded.train, loaded.validation
        self.validation_inputs = [self._validation_arrays(subject) for subject in self.validation_subjects]
        data = self.config.data
        self.train_contexts: list[np.ndarray] | None = None
        self.validation_contexts: list[np.ndarray] = []
        if self.context_spec is not None:
            values = (data.context or {}).get("subjects") or {}
            self.train_contexts = subject_contexts(self.context_spec, values, [s.name for s in self.train_subjects])
            self.validation_contexts = subject_contexts(self.context_spec, values,
                                                        [s.name for s in self.validation_subjects])
        if data.scale_range is not None or data.sample_coordinates is not None:
            scale_range = data.scale_range or [self.scale[0], self.scale[0]]
            self.sampler = PointSampler(self.train_subjects, tuple(data.patch_size), scale_range,
                                        data.sample_coordinates, self.spec, data.foreground_fraction)

    def _validation_arrays(self, subject: Subject) -> tuple[np.ndarray, ...]:
        low = subject.low.astype(np.float32)  # type: ignore[union-attr]
        baseline = subject.baseline.astype(np.float32)  # type: ignore[union-attr]
        target = subject.target.astype(np.float32)  # type: ignore[union-attr]
        mask = subject.mask_high
        excluded = subject.excluded_high if subject.excluded_high is not None else np.zeros(mask.shape, bool)
        crop = self.config.data.validation_crop
        if crop:
            starts = [max(0, (n - c) // 2) for n, c in zip(low.shape, crop)]
            low_region = tuple(slice(s, s + c) for s, c in zip(starts, crop))
            high_region = tuple(slice(s * f, (s + c) * f) for s, c, f in zip(starts, crop, self.scale))
            low, baseline, target, mask = low[low_region], baseline[high_region], target[high_region], mask[high_region]
            excluded = excluded[high_region]
        return low, baseline, target, mask, excluded

    # -------------------------------------------------------------------------------------------- training
    def _refresh(self, step: int) -> None:
        index = step // self.config.data.resimulate_every
        if self.sampler is not None:  # every point batch is simulated afresh
            return
        for number, subject in enumerate(self.train_subjects):
            refresh_subject(subject, self.spec, refresh_rng(self.config.seed, index, number), self.normalization,
                            self.config.augment.gmm_contrast, self.acquisition,
                            elastic=ElasticSettings.from_config(self.config.augment.elastic))

    def _predict(self, network: nn.Module, batch: PatchBatch) -> torch.Tensor:
        low = batch.low.to(self.device.device)
        if self.arbitrary_scale:
            out = network(low, tuple(batch.high.shape[2:]))
        elif batch.context is not None:
            positions = batch.slice_positions.to(low.device) if batch.slice_positions is not None else None
            out = network(low, context=batch.context.to(low.device), slice_positions=positions)
        else:
            out = network(low)
        return out + batch.baseline.to(self.device.device) if self.residual else out

    def train_step(self, step: int) -> dict[str, float]:
        """One optimisation step (and the critic's steps when adversarial); returns loss values."""
        config = self.config
        torch.manual_seed(config.seed * 1_000_003 + step * 1009 + self.context.rank)
        rng = patch_rng(config.seed, step, self.context.rank)
        if self.sampler is not None:
            return point_step(self, step, rng)
        slice_axis = getattr(self.network, "slice_axis", None)
        batch = sample_patches(self.train_subjects, rng, config.data.patch_size, config.data.batch_size,
                               config.data.foreground_fraction, self.train_contexts, slice_axis)
        augment = config.augment
        batch = augment_batch(batch, rng, scale=self.scale, flips=augment.flips, rot90=augment.rot90,
                              intensity_scale=augment.intensity_scale, intensity_shift=augment.intensity_shift,
                              noise=augment.noise, slice_axis=slice_axis)
        target = batch.high.to(self.device.device)
        values: dict[str, float] = {}
        self.trained.train()
        if self.critic is not None:
            with torch.no_grad():
                fake = self._predict(self.trained, batch).float()
            real = fill_from_estimate(target, fake)  # excluded slices: real equals fake there
            values.update(self.critic.update(real, fake, config.loss.n_critic, config.loss.gp_weight))
        with autocast(self.device.device, self.amp_dtype):
            prediction = self._predict(self.trained, batch)
            target = fill_from_estimate(target, prediction.float())  # excluded slices add nothing
            total, terms = self.loss(prediction.float(), target)
            if self.critic is not None:
                adversarial = -self.critic(prediction.float()).float().mean()
                total = total + config.loss.adversarial * adversarial
                terms["adversarial"] = float(adversarial.detach())
        values.update(terms)
        values["loss"] = self.optimise(total, step)
        return values

    # ------------------------------------------------------------------------------------------ validation
    def optimise(self, total: torch.Tensor, step: int) -> float:
        """One optimiser (and scheduler) step on the generator's loss ``total`` through the gradient scaler, with
        gradient clipping; returns the loss value.

        Raises:
            MRISuperResError: the loss is not finite (training diverged).
        """
        config = self.config
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if config.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None and config.optim.schedule in ("step", "exponential", "cosine"):
            self.scheduler.step()
        loss = float(total.detach())
        if not math.isfinite(loss):
            raise MRISuperResError(f"training diverged at step {step} (loss {loss}); lower optim.lr")
        return loss

    def validate(self) -> Validation:
        """Whole-volume (or cropped) inference on every validation subject; mean PSNR / SSIM vs the targets."""
        self.network.eval()
        scores = []
        for index, (low, baseline, target, mask, excluded) in enumerate(self.validation_inputs):
            if self.arbitrary_scale:
                with torch.inference_mode():
                    out = self.network(torch.from_numpy(low)[None, None].to(self.device.device),
                                       target.shape)[0, 0].float().cpu().numpy()
            else:
                out = run_tiled(self.network, low, self.device, **self._validation_condition(index, low.shape))
            prediction = baseline + out if self.residual else out
            scores.append((psnr(prediction, target, mask), ssim(prediction, target, excluded),
                           psnr(baseline, target, mask), ssim(baseline, target, excluded)))
        self.network.train()
        means = np.mean(np.asarray(scores), axis=0)
        return Validation(*(float(v) for v in means))

    def _validation_condition(self, index: int, shape: tuple[int, ...]) -> dict[str, Any]:
        """Context and slice positions of validation input ``index`` (a central crop of its subject, or all)."""
        if self.context_spec is None:
            return {}
        subject, axis = self.validation_subjects[index], self.network.slice_axis
        size, factor = subject.low_grid.shape[axis], self.scale[axis]
        start = max(0, (size - shape[axis]) // 2)
        whole = slice_positions(subject.high_grid.shape[axis])
        return {"context": self.validation_contexts[index],
                "slice_positions": whole[start * factor:(start + shape[axis]) * factor]}

    # ----------------------------------------------------------------------------------------- persistence
    def _state(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "scaler": self.scaler.state_dict(),
            "best": vars(self.best) if self.best else {},
            "best_step": self.best_step,
            "bad_validations": self.bad_validations,
            "history": self.history,
            "config": self.config.to_dict(),
        }
        if self.critic is not None:
            state.update(self.critic.state_dict())
        return state

    def save_state(self) -> None:
        """Write the resumable state atomically (main process only)."""
        if not self.context.is_main:
            return
        path = self.output_dir / STATE_FILE
        temporary = path.with_name(f".{path.name}.partial")
        torch.save(self._state(), temporary)
        os.replace(temporary, path)

    def load_state(self) -> None:
        """Resume from ``state.pt`` (read with ``weights_only=True``: no code runs)."""
        path = self.output_dir / STATE_FILE
        if not path.is_file():
            raise InputError(f"nothing to resume: {path} does not exist; start without --resume")
        state = torch.load(path, map_location=self.device.device, weights_only=True)
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.critic is not None and "critic" in state:
            self.critic.load_state_dict(state)
        self.step = int(state["step"])
        self.best = Validation(**state["best"]) if state["best"] else None
        self.best_step = int(state["best_step"])
        self.bad_validations = int(state["bad_validations"])
        self.history = list(state["history"])

    def _model_metadata(self) -> dict[str, Any]:
        config = self.config
        validation = vars(self.best) if self.best else {}
        return {
            "name": config.name,
            "family": config.model.family,
            "config": self.model_config,
            "version": config.version,
            "description": config.description or f"{config.model.family} trained by mrisuperres train",
            "normalization": self.normalization.to_dict(),
            "degradation": self.spec.to_dict(),
            "training": {
                "train": [s.name for s in self.train_subjects],
                "validation": [s.name for s in self.validation_subjects],
                "scale": list(self.scale),
                "scale_range": self.config.data.scale_range,
                "sample_coordinates": self.config.data.sample_coordinates,
                "steps": self.step,
                "best_step": self.best_step,
                "seed": config.seed,
                "config": config.to_dict(),
                "code_revision": code_revision(),
            },
            "metrics": {"validation": validation},
            "extra": {**({"consistency": self.calibration} if getattr(self, "calibration", None) else {}),
                      **({"conditioning": self.context_spec.to_metadata()} if self.context_spec else {})} or None,
        }

    def _save_model(self, path: Path) -> Path:
        metadata = self._model_metadata()
        return save_model(self.network, path, name=metadata.pop("name"), family=metadata.pop("family"),
                          config=metadata.pop("config"), **metadata)

    def _write_log(self) -> None:
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        temporary = self.output_dir / f".{LOG_FILE}.partial"
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)
        os.replace(temporary, self.output_dir / LOG_FILE)
        try:
            from .curves import plot_curves

            plot_curves(self.history, self.output_dir / CURVES_FILE)
        except ImportError:
            pass

    # ------------------------------------------------------------------------------------------------ run
    def run(self, resume: bool = False, stop_at: int | None = None) -> TrainResult:
        """Train until ``run.steps``, early stopping, or a stop signal (state saved; resume later).

        ``stop_at`` behaves as a stop signal arriving after that step (to stop a run part-way on purpose).
        """
        config = self.config
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if not resume and (self.output_dir / STATE_FILE).exists():
            raise InputError(f"{self.output_dir} already holds a run; pass --resume to continue it or choose "
                             "another output_dir")
        if self.context.is_main:
            (self.output_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        self.load_data()
        if resume:
            self.load_state()
        bar = self._progress_bar()
        writer = self._tensorboard()
        started = time.time()
        stopped_early = interrupted = False
        self._refresh(self.step)
        with _StopRequest() as stop:
            while self.step < config.run.steps:
                if self.step % config.data.resimulate_every == 0 and self.step > 0:
                    self._refresh(self.step)
                values = self.train_step(self.step)
                self.step += 1
                row: dict[str, Any] = {}
                if self.step % config.run.log_every == 0 or self.step == config.run.steps:
                    row = {"step": self.step, "time_s": round(time.time() - started, 2),
                           "lr": self.optimizer.param_groups[0]["lr"], **values}
                if self.step % config.run.validate_every == 0 or self.step == config.run.steps:
                    row = row or {"step": self.step, "time_s": round(time.time() - started, 2),
                                  "lr": self.optimizer.param_groups[0]["lr"], **values}
                    stopped_early = self._validate_and_track(row)
                if row:
                    self.history.append(row)
                    if writer is not None:
                        for key, value in row.items():
                            if key != "step":
                                writer.add_scalar(key, value, self.step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(self._postfix(values), refresh=False)
                requested = stop.requested or (stop_at is not None and self.step >= stop_at)
                stop_now = broadcast_float(float(requested), self.context) > 0
                if self.step % config.run.checkpoint_every == 0 or stopped_early or stop_now:
                    self.save_state()
                    if self.context.is_main:
                        self._write_log()
                if stopped_early:
                    break
                if stop_now:
                    interrupted = True
                    break
        if bar is not None:
            bar.close()
        self.save_state()
        model_path = None
        if self.context.is_main:
            self._write_log()
            if self.best is not None and not interrupted:
                model_path = self._finalise()
        barrier(self.context)
        shutdown(self.context)
        return TrainResult(model_path, self.best, self.best_step, self.step, stopped_early, interrupted,
                           self.history)

    def _validate_and_track(self, row: dict[str, Any]) -> bool:
        """Validate (main process), keep the best weights, step the plateau schedule; True to stop early."""
        score = float("nan")
        if self.context.is_main:
            result = self.validate()
            score = result.psnr
            row.update({"val_psnr": result.psnr, "val_ssim": result.ssim, "baseline_psnr": result.baseline_psnr,
                        "baseline_ssim": result.baseline_ssim})
            if self.best is None or result.psnr > self.best.psnr:
                self.best, self.best_step, self.bad_validations = result, self.step, 0
                self._save_model(self.output_dir / BEST_FILE)
            else:
                self.bad_validations += 1
            self.log(f"step {self.step}: validation PSNR {result.psnr:.2f} dB (B-spline {result.baseline_psnr:.2f}),"
                     f" SSIM {result.ssim:.4f} (B-spline {result.baseline_ssim:.4f}); best {self.best.psnr:.2f} at "
                     f"step {self.best_step}")
        score = broadcast_float(score, self.context)
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(score)
        bad = broadcast_float(float(self.bad_validations), self.context)
        patience = self.config.run.early_stop_patience
        return patience > 0 and bad >= patience

    def _finalise(self) -> Path:
        """The final model: the best weights, with full metadata and a calibrated consistency threshold."""
        from ..engine.checkpoint import load_model_file

        best = load_model_file(self.output_dir / BEST_FILE)
        self.network.load_state_dict(best.network.state_dict())
        self.calibration = self._calibrate_consistency(best)
        path = self._save_model(self.output_dir / f"{self.config.name}.safetensors")
        from ..engine.model_zoo import baseline_verdict, write_model_card

        write_model_card(path)  # its card says, too, when the model is worse or barely better than B-spline
        verdict = baseline_verdict(vars(self.best)) if self.best else None
        if verdict:
            self.log(f"{path.name}: {verdict}")
        return path

    def _calibrate_consistency(self, model) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        """Consistency NRMSE of the best model on each whole validation input, run through ``enhance``; the
        threshold above which ``enhance`` warns is 1.5 times the largest of them."""
        from ..engine.enhance import enhance_volume
        from ..imaging.volume import Volume

        values = []
        for subject in self.validation_subjects:
            low = Volume(subject.low.astype(np.float32), subject.low_grid)  # type: ignore[union-attr]
            context = ((self.config.data.context or {}).get("subjects") or {}).get(subject.name) if self.context_spec \
                else None
            result = enhance_volume(low, model, self.scale, device=str(self.device.device), context=context)
            values.append(result.consistency_nrmse)
        return {"threshold": 1.5 * max(values), "validation_values": values,
                "rule": "1.5 x the largest consistency NRMSE on the validation inputs"}

    def _progress_bar(self):  # type: ignore[no-untyped-def]
        if not (self.show_progress and self.context.is_main):
            return None
        from tqdm import tqdm

        return tqdm(total=self.config.run.steps, initial=self.step, desc="training", unit="step", file=sys.stderr,
                    disable=None, dynamic_ncols=True)

    def _tensorboard(self):  # type: ignore[no-untyped-def]
        if not (self.config.run.tensorboard and self.context.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("run.tensorboard needs the tensorboard package: pip install tensorboard") from None
        return SummaryWriter(str(self.output_dir / "tensorboard"))

    @staticmethod
    def _postfix(values: dict[str, float]) -> str:
        return " ".join(f"{k} {v:.4f}" for k, v in values.items() if k in ("loss", "critic"))
