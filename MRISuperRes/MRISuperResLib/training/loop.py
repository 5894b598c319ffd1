"""The training loop: patches -> model -> losses -> validation -> best checkpoint, resumable and distributed.

Outputs in ``output_dir``: ``state.pt`` (everything needed to resume: weights, optimiser, scheduler, critic,
gradient scalers, history; written atomically every ``checkpoint_every`` steps, at every validation and when
stopped by a signal; read back with ``torch.load(weights_only=True)``), ``best.safetensors`` (best validation PSNR
so far, engine format), ``<name>.safetensors`` (the final model: the best weights with full metadata: data,
degradation, config, validation metrics, code revision) and its card ``<name>.md``, ``log.csv``, ``curves.png``
and a copy of the config.

A run is a pure function of its config and seed: patches, augmentations and simulations are drawn from streams
keyed by the step (see :mod:`.data`), and torch's generator (gradient-penalty interpolation, dropout) is reseeded
from ``(seed, step, rank)`` before every step, so no random state needs saving: a run killed and resumed ends
exactly where an uninterrupted one does, with one process or with DDP (where every process also holds the same
generator and critic).

The :class:`Trainer` holds the run's state and drives it; its parts live beside it: :mod:`.builders` (network,
optimiser, schedule, loss, critic, validation inputs), :mod:`.patch_step` and :mod:`.point_sampling` (one step),
:mod:`.validation` (metrics, consistency calibration), :mod:`.run_files` (state, log, curves) and
:mod:`.model_files` (best and final model files).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from ..engine.conditioning import ContextSpec
from ..engine.device import DeviceChoice, precision_name, select_device
from ..errors import InputError, InputWarning, MRISuperResError
from ..processing.degradation.acquisition import AcquisitionRanges
from ..processing.degradation import DegradationSpec
from ..processing.normalization import NormalizationSettings
from . import builders
from .augment import ElasticSettings
from .config import TrainConfig
from .data import Subject, integer_scale, patch_rng, refresh_rng, refresh_subject
from .distributed import barrier, broadcast_float, init_distributed, shutdown
from .model_files import finalise, save_model_file
from .patch_step import draw_batch, patch_step
from .point_sampling import PointSampler, point_step
from .prefetch import BatchPrefetcher, StoppedWaiting
from ..engine.mixed_precision import grad_scaler, training_dtype
from .run_files import (
    BEST_FILE,
    CURVES_FILE,
    LOG_FILE,
    STATE_FILE,
    code_revision,
    postfix,
    progress_bar,
    read_state,
    tensorboard_writer,
    write_log,
    write_state,
)
from .time_budget import TimeBudget
from .weight_average import WeightAverage
from .validation import Validation, validate, validation_condition

#: Batches prepared ahead on an accelerator when ``run.prefetch`` is unset.
DEVICE_PREFETCH = 4

__all__ = ["BEST_FILE", "CURVES_FILE", "LOG_FILE", "STATE_FILE", "TrainResult", "Trainer", "Validation",
           "code_revision"]


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
        if self.device.device.type == "cuda":
            # Patches and validation crops keep their shapes, so cuDNN's per-shape algorithm search pays once.
            torch.backends.cudnn.benchmark = True
        self.output_dir = config.output_path()
        scale = config.data.scale or config.model.config.get("scale") or [2, 2, 2]
        self.scale = integer_scale(scale if len(scale) == 3 else list(scale) * 3)
        self.spec = DegradationSpec.from_dict(config.data.degradation)
        self.acquisition = (AcquisitionRanges.from_dict(config.data.acquisition)
                            if config.data.acquisition is not None else None)
        self.normalization = NormalizationSettings.from_dict(config.data.normalization)
        torch.manual_seed(config.seed)  # the builders below draw initial weights in this order
        self.context_spec = ContextSpec.from_config(config.data.context["variables"]) if config.data.context else None
        self.model_config = builders.model_config(config, self.scale, self.context_spec)
        self.network = builders.build_network(config.model.family, self.model_config, self.device.device)
        if config.model.init_from:
            builders.initialise_from(self.network, config.resolve(config.model.init_from), config,
                                     self.model_config, self.log)
        self.arbitrary_scale = bool(getattr(self.network, "arbitrary_scale", False))
        self.residual = bool(getattr(self.network, "residual_to_baseline", False))
        self.sampler: PointSampler | None = None  # arbitrary-scale batches of drawn points (seed 004)
        self.trained: nn.Module = self.network
        if self.context.enabled:
            ids = [self.device.device.index] if self.device.device.type == "cuda" else None
            self.trained = nn.parallel.DistributedDataParallel(self.network, device_ids=ids)
        self.optimizer = builders.build_optimizer(self.network, config.optim)
        self.weight_average = WeightAverage(self.network, config.optim.ema) if config.optim.ema > 0 else None
        if self.weight_average is not None and self.context.is_main:
            log(f"optim.ema {config.optim.ema:g}: validation and the saved models use the weights' moving average")
        self.scheduler = builders.build_scheduler(self.optimizer, config.optim, config.run.steps)
        self.loss = builders.build_loss(config, self.device.device)
        self.amp_dtype = training_dtype(self.device, config.run.amp)
        if self.amp_dtype is not None and self.context.is_main:
            log(f"run.amp: {precision_name(self.amp_dtype)} autocast on {self.device.device.type} "
                "(weights, optimiser and loss in float32; run.amp false trains in float32)")
        self.scaler = grad_scaler(self.device.device, self.amp_dtype)
        self.critic = builders.build_critic(config, self.device.device, self.amp_dtype, self.context)
        self.train_subjects: list[Subject] = []
        self.validation_subjects: list[Subject] = []
        self.validation_inputs: list[tuple[np.ndarray, ...]] = []
        self.train_contexts: list[np.ndarray] | None = None
        self.validation_contexts: list[np.ndarray] = []
        self.calibration: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.best: Validation | None = None
        self.best_step = -1
        self.best_weights: str | None = None  # with optim.ema: "average" or "last", the weights of the best model
        self.bad_validations = 0
        self.step = 0
        self._budget_noted = False
        self._warmup_warned = False
        self._prefetcher: BatchPrefetcher | None = None
        self._stop_request = _StopRequest()  # the running loop's (set by run)

    # ----------------------------------------------------------------------------------------------- setup
    def load_data(self) -> None:
        """Read, crop and normalise every subject; split by subject; draw the validation inputs (:mod:`.loading`)."""
        from .loading import load_training_data

        loaded = load_training_data(self.config, self.scale, self.normalization, self.spec,
                                    show_progress=self.show_progress and self.context.is_main,
                                    log=self.log if self.context.is_main else (lambda message: None))
        self.train_subjects, self.validation_subjects = loaded.train, loaded.validation
        data = self.config.data
        self.validation_inputs = [builders.validation_arrays(subject, data.validation_crop, self.scale)
                                  for subject in self.validation_subjects]
        self.train_contexts = builders.contexts(self.context_spec, data, self.train_subjects)
        self.validation_contexts = builders.contexts(self.context_spec, data, self.validation_subjects) or []
        self.sampler = builders.point_sampler(data, self.train_subjects, self.scale, self.spec)

    # -------------------------------------------------------------------------------------------- training
    def _simulate(self, subject: Subject, refresh: int, index: int) -> None:
        """Fill ``subject``'s current input, baseline and target with simulation number ``refresh`` (``index``:
        its position among the training subjects, which keys its random stream)."""
        refresh_subject(subject, self.spec, refresh_rng(self.config.seed, refresh, index), self.normalization,
                        self.config.augment.gmm_contrast, self.acquisition,
                        elastic=ElasticSettings.from_config(self.config.augment.elastic),
                        min_low_shape=self.config.data.patch_size)

    def _refresh(self, step: int) -> None:
        index = step // self.config.data.resimulate_every
        if self.sampler is not None:  # every point batch is simulated afresh
            return
        # Each subject draws from its own generator, so the result does not depend on the order; the FFTs and
        # filters release the GIL, so threads use the cores (a GPU otherwise waits on this: see run.prefetch).
        with ThreadPoolExecutor(max_workers=self._simulation_workers()) as pool:
            list(pool.map(lambda number: self._simulate(self.train_subjects[number], index, number),
                          range(len(self.train_subjects))))

    def _simulation_workers(self) -> int:
        """Threads simulating subjects in parallel: ``run.threads`` (or every core), at most one per subject."""
        return max(1, min(len(self.train_subjects), self.config.run.threads or os.cpu_count() or 1))

    def _start_prefetch(self) -> BatchPrefetcher | None:
        """A :class:`~.prefetch.BatchPrefetcher` from this step when ``run.prefetch`` asks for one (patch runs)."""
        ahead = self.config.run.prefetch
        if ahead is None:
            ahead = 0 if self.device.device.type == "cpu" else DEVICE_PREFETCH
        if ahead <= 0:
            return None
        if self.sampler is not None:
            if self.config.run.prefetch and self.context.is_main:
                self.log("run.prefetch: an arbitrary-scale run draws its points in the step (not ahead)")
            return None
        return BatchPrefetcher(self.train_subjects, self._simulate,
                               lambda subjects, step: draw_batch(self, subjects, step),
                               self.config.data.resimulate_every, self.step, ahead, self._simulation_workers(),
                               end=lambda: self.config.run.steps)

    @contextlib.contextmanager
    def _batches_ahead(self) -> Iterator[None]:
        """Draw the run's batches ahead (:meth:`_start_prefetch`) while inside; without prefetching, simulate the
        current refresh now (later ones are simulated in the loop)."""
        self._prefetcher = self._start_prefetch()
        if self._prefetcher is None:
            self._refresh(self.step)
            yield
            return
        started, first = time.perf_counter(), self.step
        try:
            yield
        finally:
            self._prefetcher.close()
            waited, self._prefetcher = self._prefetcher.wait_s, None
            elapsed = time.perf_counter() - started
            if self.context.is_main and self.step > first and elapsed > 0:
                self.log(f"batches drawn ahead (run.prefetch): steps {first}-{self.step} waited {waited:.1f} s of "
                         f"{elapsed:.1f} s for their inputs ({100 * waited / elapsed:.0f} %)")

    def train_step(self, step: int) -> dict[str, float]:
        """One optimisation step (and the critic's steps when adversarial); returns loss values."""
        config = self.config
        torch.manual_seed(config.seed * 1_000_003 + step * 1009 + self.context.rank)
        if self.sampler is not None:
            return point_step(self, step, patch_rng(config.seed, step, self.context.rank))
        batch = None
        if self._prefetcher is not None:
            # One process may give up waiting on a stop signal; DDP ranks wait, so that all take the same steps.
            stop = None if self.context.enabled else (lambda: self._stop_request.requested)
            batch = self._prefetcher.batch(step, stop)
        return patch_step(self, step, batch)

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
        # The warmup scales the scheduled rate for this step only, so that the schedulers' own (recursive) updates
        # keep seeing their rates.
        warm = builders.warmup_factor(step, config.optim.warmup_steps)
        scheduled = [group["lr"] for group in self.optimizer.param_groups] if warm < 1.0 else []
        for group, rate in zip(self.optimizer.param_groups, scheduled):
            group["lr"] = rate * warm
        self.scaler.step(self.optimizer)
        self.scaler.update()
        for group, rate in zip(self.optimizer.param_groups, scheduled):
            group["lr"] = rate
        if self.weight_average is not None:
            self.weight_average.update(self.network)
        if self.scheduler is not None and config.optim.schedule in builders.PER_STEP_SCHEDULES:
            self.scheduler.step()
        loss = float(total.detach())
        if not math.isfinite(loss):
            raise MRISuperResError(f"training diverged at step {step} (loss {loss}); lower optim.lr")
        return loss

    # ------------------------------------------------------------------------------------------ validation
    def validate(self, network: nn.Module | None = None) -> Validation:
        """Whole-volume (or cropped) inference on every validation subject; mean PSNR / SSIM vs the targets.
        ``network`` defaults to :attr:`evaluated`."""
        conditions = None
        if self.context_spec is not None:
            conditions = [validation_condition(subject, context, low.shape, self.network.slice_axis, self.scale)
                          for subject, context, (low, *_) in zip(self.validation_subjects, self.validation_contexts,
                                                                 self.validation_inputs)]
        return validate(network if network is not None else self.evaluated, self.validation_inputs, self.device,
                        self.residual, conditions)

    @property
    def evaluated(self) -> nn.Module:
        """The network validated and saved: the weight average with ``optim.ema``, else the trained network."""
        return self.weight_average.module if self.weight_average is not None else self.network

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
            "best_weights": self.best_weights or "",
            "bad_validations": self.bad_validations,
            "history": self.history,
            "config": self.config.to_dict(),
        }
        if self.critic is not None:
            state.update(self.critic.state_dict())
        if self.weight_average is not None:
            state["weight_average"] = self.weight_average.state_dict()
        return state

    def save_state(self) -> None:
        """Write the resumable state atomically (main process only)."""
        if self.context.is_main:
            write_state(self._state(), self.output_dir)

    def load_state(self) -> None:
        """Resume from ``state.pt`` (read with ``weights_only=True``: no code runs)."""
        state = read_state(self.output_dir, self.device.device)
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
            # A run ended early by run.max_minutes saved a cosine fitted to its planned end: resume towards run.steps.
            self._refit_cosine(self.config.run.steps)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.critic is not None and "critic" in state:
            self.critic.load_state_dict(state)
        if self.weight_average is not None and "weight_average" in state:
            self.weight_average.load_state_dict(state["weight_average"])
        self.step = int(state["step"])
        self.best = Validation(**state["best"]) if state["best"] else None
        self.best_step = int(state["best_step"])
        self.best_weights = state.get("best_weights") or None
        self.bad_validations = int(state["bad_validations"])
        self.history = list(state["history"])

    # ------------------------------------------------------------------------------------------------ run
    def run(self, resume: bool = False, stop_at: int | None = None) -> TrainResult:
        """Train until ``run.steps``, early stopping, or a stop signal (state saved; resume later).

        ``stop_at`` behaves as a stop signal arriving after that step (to stop a run part-way on purpose).
        """
        config = self.config
        created = not self.output_dir.exists()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        saved = (self.output_dir / STATE_FILE).exists()
        if not resume and saved:
            raise InputError(f"{self.output_dir} already holds a run; pass --resume to continue it or choose "
                             "another output_dir")
        if resume and not saved:
            # As nnU-Net's --c: a requeued job always passes --resume, also when its first try stopped before a
            # state was saved (during data loading); that run starts at step 0, said in one line.
            warnings.warn(f"nothing to resume in {self.output_dir} (no {STATE_FILE}: the run stopped before its "
                          "first step, or never ran): starting at step 0", InputWarning, stacklevel=2)
            resume = False
        self._warn_short_warmup(config.run.steps)
        config_file = self.output_dir / "config.yaml"
        had_config = config_file.exists()
        if self.context.is_main:
            config_file.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        run_started = time.time()
        try:
            self.load_data()
            if resume:
                self.load_state()
        except BaseException:
            # A run that fails or is stopped before its first step leaves nothing behind that it wrote: a folder
            # holding only its config.yaml would read as a run elsewhere (Slicer's run list, --resume).
            if self.context.is_main and not had_config and not (self.output_dir / STATE_FILE).exists():
                config_file.unlink(missing_ok=True)
                if created and not any(self.output_dir.iterdir()):
                    self.output_dir.rmdir()
            raise
        bar = progress_bar(config.run.steps, self.step) if self.show_progress and self.context.is_main else None
        writer = tensorboard_writer(self.output_dir) if config.run.tensorboard and self.context.is_main else None
        started = time.time()
        budget = (TimeBudget(config.run.max_minutes, run_started, config.run.steps)
                  if config.run.max_minutes is not None else None)
        stopped_early = interrupted = False
        with _StopRequest() as stop, self._batches_ahead():
            self._stop_request = stop
            while self.step < config.run.steps:
                if self._prefetcher is None and self.step % config.data.resimulate_every == 0 and self.step > 0:
                    self._refresh(self.step)
                try:
                    values = self.train_step(self.step)
                except StoppedWaiting:  # a stop signal while the step waited for its inputs: state saved below
                    interrupted = True
                    break
                self.step += 1
                if budget is not None:
                    self._fit_to_budget(budget, bar)
                last = self.step == config.run.steps
                validating = self.step % config.run.validate_every == 0 or last
                row: dict[str, Any] = {}
                if validating or self.step % config.run.log_every == 0 or last:
                    row = {"step": self.step, "time_s": round(time.time() - started, 2),
                           "lr": self.optimizer.param_groups[0]["lr"]
                           * builders.warmup_factor(self.step, config.optim.warmup_steps), **values}
                if validating:
                    stopped_early = self._validate_and_track(row)
                if row:
                    self.history.append(row)
                    if writer is not None:
                        for key, value in row.items():
                            if key != "step":
                                writer.add_scalar(key, value, self.step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(postfix(values), refresh=False)
                requested = stop.requested or (stop_at is not None and self.step >= stop_at)
                stop_now = broadcast_float(float(requested), self.context) > 0
                if self.step % config.run.checkpoint_every == 0 or stopped_early or stop_now:
                    self.save_state()
                    if self.context.is_main:
                        write_log(self.history, self.output_dir)
                if stopped_early:
                    break
                if stop_now:
                    interrupted = True
                    break
        if bar is not None:
            bar.close()
        if budget is not None and self.step < budget.total_steps and not (interrupted or stopped_early):
            self.log(f"run.max_minutes {config.run.max_minutes:g}: ended at step {self.step} of {budget.total_steps} "
                     "(--resume continues)")
        self.save_state()
        model_path = None
        if self.context.is_main:
            write_log(self.history, self.output_dir)
            if self.best is not None and not interrupted:
                model_path = finalise(self)
        barrier(self.context)
        shutdown(self.context)
        return TrainResult(model_path, self.best, self.best_step, self.step, stopped_early, interrupted,
                           self.history)

    def _fit_to_budget(self, budget: TimeBudget, bar: Any) -> None:
        """Set ``run.steps`` to the steps that fit in ``run.max_minutes`` (every rank agrees on rank 0's plan); a
        cosine schedule is refitted to end there."""
        run = self.config.run
        planned = int(broadcast_float(float(budget.plan(self.step, time.time())), self.context))
        if planned == run.steps:
            return
        self._refit_cosine(planned)
        if planned < budget.total_steps and not self._budget_noted:
            self._budget_noted = True
            self.log(f"run.max_minutes {run.max_minutes:g}: the run will end before step {budget.total_steps} to "
                     f"finish in time (planned now: step {planned}; the plan follows the measured pace)")
        run.steps = planned
        self._warn_short_warmup(planned)
        if bar is not None:
            bar.total = planned

    def _warn_short_warmup(self, steps: int) -> None:
        """Say once when ``optim.warmup_steps`` reaches the run's (planned) last step: the whole run then trains
        below ``optim.lr``."""
        warmup = self.config.optim.warmup_steps
        if warmup >= steps > self.step and not self._warmup_warned:
            self._warmup_warned = True
            warnings.warn(f"optim.warmup_steps {warmup} is not shorter than the run (it ends at step {steps}): every "
                          f"step trains below optim.lr; lower optim.warmup_steps or give more steps", InputWarning,
                          stacklevel=2)

    def _refit_cosine(self, total: int) -> None:
        """Make a cosine schedule end at step ``total``: its ``T_max``, and the current rates from its closed form
        at this step (so that the rate neither jumps on later steps nor restarts a cycle)."""
        scheduler = self.scheduler
        if not isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR) or scheduler.T_max == max(1, total):
            return
        scheduler.T_max = max(1, total)
        done = min(scheduler.last_epoch, scheduler.T_max)
        rates = [scheduler.eta_min + (base - scheduler.eta_min) * (1 + math.cos(math.pi * done / scheduler.T_max)) / 2
                 for base in scheduler.base_lrs]
        for group, rate in zip(self.optimizer.param_groups, rates):
            group["lr"] = rate
        scheduler._last_lr = rates  # what get_last_lr() reports

    def _validate_and_track(self, row: dict[str, Any]) -> bool:
        """Validate (main process), keep the best weights, step the plateau schedule; True to stop early."""
        score = float("nan")
        if self.context.is_main:
            result, candidate, kept, compared = self.validate(), self.evaluated, "", ""
            if self.weight_average is not None:
                # The last weights are scored too: the run keeps whichever of the two validates better, and the
                # log shows what the average gives.
                average, last = result, self.validate(self.network)
                kept = "average" if average.psnr >= last.psnr else "last"
                if kept == "last":
                    result, candidate = last, self.network
                compared = (f"; weights' average {average.psnr:.2f} dB, last weights {last.psnr:.2f} dB "
                            f"(kept: {kept})")
            score = result.psnr
            row.update({"val_psnr": result.psnr, "val_ssim": result.ssim, "baseline_psnr": result.baseline_psnr,
                        "baseline_ssim": result.baseline_ssim})
            if kept:
                row.update({"val_psnr_average": average.psnr, "val_psnr_last_weights": last.psnr,
                            "val_weights": kept})
            if self.best is None or result.psnr > self.best.psnr:
                self.best, self.best_step, self.bad_validations = result, self.step, 0
                self.best_weights = kept or None
                save_model_file(self, self.output_dir / BEST_FILE, candidate)
            else:
                self.bad_validations += 1
            self.log(f"step {self.step}: validation PSNR {result.psnr:.2f} dB (B-spline {result.baseline_psnr:.2f}),"
                     f" SSIM {result.ssim:.4f} (B-spline {result.baseline_ssim:.4f}){compared}; best "
                     f"{self.best.psnr:.2f} at step {self.best_step}")
        score = broadcast_float(score, self.context)
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(score)
        bad = broadcast_float(float(self.bad_validations), self.context)
        patience = self.config.run.early_stop_patience
        return patience > 0 and bad >= patience
