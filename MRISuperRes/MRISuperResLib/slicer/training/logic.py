"""The Training module's logic: one facade over preparing, running, watching and publishing a run (no Qt).

:class:`TrainingLogic` keeps the state of one scene's training (the pairs' registrations, the current job, its
background process, its curves and published model) and hands the work to the modules beside it:
:mod:`.registration` (aligning real pairs), :mod:`.prepare` (pairs and settings to a run folder),
:class:`~..runner.BackgroundProcess` (the trainer in the background), :mod:`.monitor` (``log.csv`` to tables,
charts and :class:`~.monitor.TrainingStatus`) and :mod:`.publish` (the model where Enhance finds it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import InputError, OutputError
from ..runner import BackgroundProcess, default_python
from . import prepare as preparing
from .job import CONFIG_FILE, RUNS_FOLDER, TrainingJob, TrainingPair, TrainingSettings, parse_training_scale
from .monitor import TrainingCurves, TrainingNodes, TrainingStatus, carry_progress, fill_progress, set_end_state
from .publish import ModelPublisher
from .registration import BrainsFitRunner, RegistrationOutcome, adopt_registration, register_nodes
from .subjects import check_item


class TrainingLogic:
    """Train super-resolution models on the volumes of one scene, in a background process.

    Args:
        scene: the ``vtkMRMLScene`` holding the pairs' nodes; it receives the registered volumes, the log tables
            and the charts.
        python: the interpreter running ``-m MRISuperResLib.cli train`` (default: :func:`~..runner.default_python`).
        brainsfit: runs BRAINSFit (the desktop module passes one wrapping ``slicer.cli.runSync``); without it,
            ``method="brainsfit"`` is refused.

    One logic runs one training process at a time (:attr:`job`). Registrations of real pairs are kept in
    :attr:`registrations` by ``(high node ID, low node ID)`` and used by :meth:`prepare`.
    """

    def __init__(self, scene: Any, python: str | None = None, brainsfit: BrainsFitRunner | None = None) -> None:
        self.scene = scene
        self.python = python or default_python()
        self.brainsfit = brainsfit
        self.registrations: dict[tuple[str, str], RegistrationOutcome] = {}
        self.job: TrainingJob | None = None
        self._curves: TrainingCurves | None = None
        self._publisher = ModelPublisher()
        self._process: BackgroundProcess | None = None
        self._last_status = TrainingStatus("idle")

    # ---------------------------------------------------------------------------------------- registration
    def register_pair(self, pair: TrainingPair, scale: Any = 2, method: str = "simpleitk",
                      **options: Any) -> RegistrationOutcome:
        """Align a real pair's low-resolution node with its high-resolution node, and show the result.

        Adds (or updates) a node ``<low>_registered``: the low-resolution voxels placed in the high-resolution
        frame, beside the low-resolution node in the subject hierarchy; shows it over the high-resolution node in
        every slice view (foreground opacity 0.5). The pair's nodes are only read. Blocks (seconds to a minute).

        Args:
            pair: a row with a high- and a low-resolution node.
            scale: the training scale, to warn when the pair's voxel sizes do not match it.
            method: ``"simpleitk"`` (rigid then affine, Mattes mutual information) or ``"brainsfit"``.
            options: passed to :func:`~...processing.registration.register` (``iterations``, ``seed`` ...).

        Raises:
            InputError: missing nodes, a bad scale, BRAINSFit unavailable, or a metric above the threshold: the
                two scans do not show the same anatomy (the message gives the metric); nothing is added then.
        """
        if pair.low is None:
            raise InputError("this pair has no low-resolution volume to register: it is simulated from the "
                             "high-resolution volume")
        if isinstance(pair.high, (str, os.PathLike)) or isinstance(pair.low, (str, os.PathLike)):
            raise InputError("pairs of files are registered by the training process itself; register_pair aligns "
                             "volume nodes")
        high_node = check_item(self.scene, pair.high, "high-resolution", None)
        low_node = check_item(self.scene, pair.low, "low-resolution", None)
        outcome = register_nodes(self.scene, high_node, low_node, parse_training_scale(scale), method,
                                 self.brainsfit, **options)
        self.registrations[(high_node.GetID(), low_node.GetID())] = outcome
        return outcome

    def adopt_registration(self, high_node: Any, low_node: Any, aligned_path: Path, summary: dict[str, Any],
                           scale: tuple[int, int, int], source_mtimes: tuple[int, int]) -> RegistrationOutcome:
        """Take in a registration computed by ``mrisuperres register --grid moving --json`` (a background run, see
        :class:`~.registration.RegistrationRun`): the aligned file becomes ``<low>_registered`` over the
        high-resolution node, and the outcome is kept for :meth:`prepare` as :meth:`register_pair`'s is."""
        outcome = adopt_registration(self.scene, high_node, low_node, aligned_path, summary, scale, source_mtimes)
        self.registrations[(high_node.GetID(), low_node.GetID())] = outcome
        return outcome

    # --------------------------------------------------------------------------------------------- prepare
    def prepare(self, pairs: Sequence[TrainingPair], settings: TrainingSettings) -> TrainingJob:
        """Check the pairs and settings, write the data and ``train.yaml`` into a new run folder; start nothing.

        Real pairs registered with :meth:`register_pair` (and unchanged since) are written aligned; the training
        process registers the others itself.

        Raises:
            InputError: a run in progress, a row without a high-resolution volume, a removed node, fewer than two
                subjects, bad settings.
            OutputError: the name is taken, or the disk lacks space for the run.
        """
        if self.running:
            raise InputError("a training run is in progress; stop it before preparing another")
        job = preparing.prepare(self.scene, pairs, settings, self.registrations)
        self._adopt(job)
        return job

    def open_run(self, run_folder: str | os.PathLike) -> TrainingJob:
        """Adopt a run prepared earlier (e.g. before Slicer was restarted), to watch, publish or resume it."""
        from ...training.config import ConfigError, load_config

        run_folder = Path(run_folder).expanduser().absolute()
        try:
            config = load_config(run_folder / CONFIG_FILE)
        except ConfigError as error:
            raise InputError(f"{run_folder} is not a training run of this module: {error}") from None
        if self.running:
            raise InputError("a training run is in progress; stop it before opening another")
        output_folder = run_folder.parent.parent if run_folder.parent.name == RUNS_FOLDER else run_folder
        job = TrainingJob(config.name, output_folder, run_folder, config.run.steps)
        self._adopt(job)
        if (run_folder / f"{job.name}.safetensors").is_file():
            self._last_status.state = "finished"
        elif (run_folder / "state.pt").is_file():
            self._last_status.state = "stopped"
        return job

    def _adopt(self, job: TrainingJob) -> None:
        self.job = job
        self._curves = TrainingCurves(self.scene, job)
        self._publisher = ModelPublisher()
        self._process = None
        self._last_status = TrainingStatus("prepared", total_steps=job.total_steps)

    # ---------------------------------------------------------------------------------------------- process
    @property
    def running(self) -> bool:
        """A training process of this logic is alive: the trainer itself, or Slicer's launcher in front of it."""
        return self._process is not None and self._process.running

    @property
    def status(self) -> TrainingStatus:
        """What the last :meth:`poll` found (no file is read)."""
        return self._last_status

    @property
    def pid(self) -> int | None:
        """Process ID of the process started (also its process group's on POSIX), while it runs."""
        return self._process.pid if self.running else None  # type: ignore[union-attr]

    @property
    def trainer_pid(self) -> int | None:
        """Process ID of the interpreter that trains (behind Slicer's launcher), while it runs."""
        return self._process.worker_pid if self.running else None  # type: ignore[union-attr]

    def start(self, job: TrainingJob | None = None) -> TrainingJob:
        """Start training ``job`` (default: the prepared one) in a background process; returns at once."""
        if job is not None and job is not self.job:
            self._adopt(job)
        if self.job is None:
            raise InputError("nothing to train: prepare a run first")
        if (self.job.run_folder / "state.pt").exists():
            raise InputError(f"{self.job.run_folder} already holds a started run; resume it instead")
        self._launch(resume=False)
        return self.job

    def resume(self) -> TrainingJob:
        """Continue the current job from its saved state (or from the start when it never saved one)."""
        if self.job is None:
            raise InputError("nothing to resume: prepare or open a run first")
        if self.running:
            raise InputError("the training run is still in progress")
        self._launch(resume=(self.job.run_folder / "state.pt").exists())
        return self.job

    def _launch(self, resume: bool) -> None:
        assert self.job is not None
        # The module publishes the model into its own registered folder; the run folder stays unregistered.
        arguments = ["train", "--config", str(self.job.config_path), "--quiet", "--no-register",
                     *(["--resume"] if resume else [])]
        if self._process is not None:
            self._process.close()
        self._process = BackgroundProcess(arguments, self.python, cwd=self.job.run_folder, log=self.job.log_path,
                                          control=self.job.run_folder / "control")
        try:
            self._process.start()
        except OSError as error:
            self._process = None
            raise InputError(f"cannot start the training process {self.python}: {error.strerror or error}") from None
        self._last_status = TrainingStatus("running", step=self._last_status.step, total_steps=self.job.total_steps)
        self.ensure_nodes()

    def stop(self, wait: float = 0.0) -> TrainingStatus:
        """Ask the trainer to stop: it saves its state after the current step (resume continues from there) and
        keeps the best checkpoint. The run stays ``"stopping"`` (and cannot be resumed) until the trainer itself
        is gone. Waits up to ``wait`` seconds for it to end."""
        if self.running:
            assert self._process is not None
            self._process.request_stop()
        if wait > 0:
            return self.wait(timeout=wait)
        return self.poll()

    def kill(self) -> TrainingStatus:
        """End the training process tree at once (it resumes from its last checkpoint); returns once the trainer
        is gone."""
        if self._process is not None and self.running:
            self._process.kill()
        return self.poll()

    def wait(self, timeout: float | None = None, interval: float = 0.5) -> TrainingStatus:
        """Poll until the process ends (or ``timeout`` seconds pass); the blocking mode for scripts and tests."""
        deadline = None if timeout is None else time.monotonic() + timeout
        status = self.poll()
        while self.running and (deadline is None or time.monotonic() < deadline):
            time.sleep(interval)
            status = self.poll()
        return self.poll() if not self.running else status

    def cleanup(self) -> None:
        """Stop a running training process (its state is saved; resume later) and close its log."""
        if self.running:
            self.stop(wait=30.0)
            if self.running:
                self.kill()
        if self._process is not None:
            self._process.close()

    # ------------------------------------------------------------------------------------------------- poll
    def poll(self) -> TrainingStatus:
        """Read the run's progress into the scene, publish an improved model, and say where the run stands.

        Cheap when nothing changed (one ``stat`` of ``log.csv``); call it from a timer.
        """
        job = self.job
        if job is None or self._curves is None:
            return TrainingStatus("idle")
        status = TrainingStatus(self._last_status.state, total_steps=job.total_steps)
        rows = self._curves.update()
        if rows is not None:
            fill_progress(status, rows)
        else:
            carry_progress(status, self._last_status)
        process = self._process
        if process is not None and process.running:
            status.state = "stopping" if process.stop_requested else "running"
            status.message = f"step {status.step} of {status.total_steps}"
        elif process is not None:
            returncode = process.wait(timeout=0)
            assert returncode is not None
            status.returncode = returncode
            set_end_state(status, job, returncode, process.stop_requested)
        try:
            status.model_updated = self._publisher.publish(job, final=status.state == "finished")
        except OutputError as error:  # e.g. the output folder's disk filled up: say so, keep training
            status.message = str(error)
        status.model_path = job.model_path if job.model_path.is_file() else None
        self._last_status = status
        return status

    @property
    def nodes(self) -> TrainingNodes | None:
        """The current run's tables and charts, once created."""
        return self._curves.nodes if self._curves is not None else None

    def ensure_nodes(self) -> TrainingNodes:
        """The run's tables and charts, created in the scene on first use (named after the model)."""
        if self._curves is None:
            raise InputError("no training run: prepare or open one first")
        return self._curves.ensure_nodes()
