"""Enhance a volume node in a background process, so Slicer never freezes (MRML side, no Qt).

``EnhanceProcess(EnhanceLogic(scene), node, model="default", scale=2).start()`` returns at once; the caller
polls it (the module's widget from a ``QTimer``), cancels it, or, once it finished, calls :meth:`finish` to put
the outputs into the scene. :meth:`EnhanceProcess.run_blocking` does all of it in one call, for scripts and
tests.

How the data flows:

1. :meth:`~EnhanceProcess.start` writes the input node to a private temporary folder as NRRD through a new MRML
   storage node (the node's own storage node and modified state are left alone), then launches the engine's
   CLI, ``mrisuperres enhance ... --json --progress-lines`` (options from
   :meth:`~..engine.options.EnhanceOptions.to_argv`, output files from :func:`.enhance_files.output_arguments`),
   through the modules' one background-process runner (:class:`~.runner.BackgroundProcess`: a new process
   group, no console window, the worker tracked behind Slicer's ``PythonSlicer`` launcher).
2. :meth:`~EnhanceProcess.poll` never blocks: the runner's reader threads move the child's stdout and stderr
   lines into a queue, and poll parses what has arrived (progress lines, see :func:`~..engine.progress.parse_progress_line`, and the
   final ``--json`` summary).
3. :meth:`~EnhanceProcess.finish` loads the output files into nodes with Slicer's C++ reader (an MRML storage
   node; no Python copy of the voxels on the GUI thread) and takes the ``MRISuperRes.*`` provenance from their
   NRRD key-values (:meth:`~MRISuperResLib.slicer.outputs.EnhanceLogic.add_output_files`).
4. :meth:`~EnhanceProcess.cancel` kills the process tree (``killpg`` / ``taskkill /T /F``) and waits until the
   worker is gone.

Whatever happens, the input node is never modified, the temporary folder is removed when the run ends, and the
scene gets either every output or none: a failed or cancelled run adds nothing.

Nothing here imports torch: the heavy engine runs only in the child process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.model_zoo import portable_model_argument
from ..engine.options import EnhanceOptions
from ..engine.outputs import OPTIONAL_KEYS
from ..engine.progress import parse_progress_line
from ..errors import CancelledError, InputError, MRISuperResError
from ..imaging.geometry import Scale, format_scale, parse_scale
from .enhance_files import (  # noqa: F401  (INPUT_FILE, OUTPUT_FILES, write_volume_node: re-exported)
    INPUT_FILE,
    OUTPUT_FILES,
    OutputLoader,
    add_output_files_to_scene,
    output_arguments,
    write_volume_node,
)
from .runner import (  # noqa: F401  (re-exported: these used to live here)
    ERROR_PREFIX,
    LIBRARY_PARENT,
    BackgroundProcess,
    child_environment,
    child_error,
    kill_process_tree,
    new_process_group_options,
)

if TYPE_CHECKING:
    from .outputs import EnhanceLogic, EnhanceNodes

#: ``(fraction 0..1, stage text)`` callback of :meth:`EnhanceProcess.run_blocking`.
ProgressCallback = Callable[[float, str], None]


class ProcessState(str, Enum):
    """Where a background run stands."""

    IDLE = "idle"  #: not started yet
    RUNNING = "running"
    FINISHED = "finished"  #: the child succeeded; :meth:`EnhanceProcess.finish` adds the outputs
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class EnhanceStatus:
    """A snapshot of a background run.

    Attributes:
        state: where the run stands.
        fraction: progress of the whole run in ``[0, 1]`` (1 once finished).
        stage: what the engine is doing (``"super-resolving: tile 3/8"``).
        elapsed_s: wall-clock seconds since :meth:`EnhanceProcess.start`, frozen when the run ends.
        error: the child's one-line error message when ``state`` is ``FAILED``, else ``""``.
    """

    state: ProcessState
    fraction: float
    stage: str
    elapsed_s: float
    error: str = ""

    @property
    def done(self) -> bool:
        """True once the run will not change any more (started and no longer running)."""
        return self.state not in (ProcessState.IDLE, ProcessState.RUNNING)


class ChildOutput:
    """The engine CLI's output lines as they arrive (``--progress-lines --json``): progress lines (see
    :func:`~..engine.progress.parse_progress_line`) update the stage, the other stdout lines are the ``--json``
    summary, the stderr lines explain a failure (:func:`.runner.child_error`)."""

    def __init__(self) -> None:
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._open_streams = 2  # stdout and stderr

    @property
    def closed(self) -> bool:
        """Both streams reached their end."""
        return self._open_streams == 0

    def take(self, stream: str, line: str | None) -> tuple[float, str] | None:
        """Take one line of ``stream`` (``None``: the stream closed); returns the ``(fraction, stage)`` update
        of a progress line, else ``None``."""
        if line is None:
            self._open_streams -= 1
        elif stream == "stderr":
            self.stderr.append(line)
        elif (update := parse_progress_line(line)) is not None:
            return update
        else:
            self.stdout.append(line)
        return None

    def summary(self) -> dict[str, Any]:
        """The ``--json`` summary printed on stdout.

        Raises:
            ValueError: stdout is not one JSON document.
        """
        return json.loads("\n".join(self.stdout))


class EnhanceProcess:
    """One enhance run of a volume node in a background process of the engine's CLI.

    Args:
        logic: the scene's :class:`~MRISuperResLib.slicer.outputs.EnhanceLogic`; its scene receives the outputs.
        volume_node: the input scalar volume node (never modified).
        model: shipped model name, ``"default"`` (picked by scale) or a model file path.
        scale: per-axis factors in image index order (``2``, ``"1,1,4"``, ``(1, 1, 4)``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (the options' device when ``options`` is given).
        options: the run's :class:`~..engine.options.EnhanceOptions` (tile, overlap, threads, mask_background ...);
            keyword arguments named like its fields (``tile=32``) replace single values.
        maps: the optional output maps to compute as well (``["uncertainty"]``, 8 times the work); a keyword
            argument named like one (``uncertainty=True``) does the same.
        context: the subject's conditioning values for a conditioned model (``"age=63,sex=F"`` or a mapping;
            passed as ``--context``); ``None`` or empty: none.
        outputs: existing nodes to reuse, by role (updated in place by :meth:`finish`).
        python: the Python that runs the engine (in Slicer: the ``PythonSlicer`` launcher); default
            ``sys.executable``.
        env: extra environment variables for the child; the folder holding ``MRISuperResLib`` is put first on
            its ``PYTHONPATH``.
        temp_root: where the temporary folder is made (in Slicer: ``slicer.app.temporaryPath``); default the
            system's temporary folder.

    Raises:
        MRISuperResError: the scale cannot be understood.
        TypeError: ``model`` is a loaded model (a background run needs a name or a path), or a keyword argument
            is neither an option nor an optional map.
    """

    def __init__(
        self,
        logic: EnhanceLogic,
        volume_node: Any,
        model: str | os.PathLike = "default",
        scale: float | str | Scale = 2,
        device: str | None = None,
        *,
        options: EnhanceOptions | None = None,
        maps: Iterable[str] = (),
        context: str | Mapping[str, Any] | None = None,
        adapt_seconds: float | None = None,
        outputs: EnhanceNodes | None = None,
        python: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        temp_root: str | os.PathLike | None = None,
        **values: Any,
    ) -> None:
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError(f"a background run needs a model name or file path, not {type(model).__name__}")
        self.logic = logic
        self.volume_node = volume_node
        self.model = portable_model_argument(model)
        self.scale = parse_scale(scale)
        self.options, self.maps = _options_and_maps(options, device, maps, values)
        self.context = (",".join(f"{k}={v}" for k, v in context.items()) if isinstance(context, Mapping)
                        else (context or "").strip())
        if adapt_seconds is not None and not adapt_seconds > 0:
            raise ValueError(f"adapt_seconds must be positive, got {adapt_seconds}")
        self.adapt_seconds = adapt_seconds
        self.outputs = outputs
        self.python = str(python) if python is not None else sys.executable
        self.env = dict(env or {})
        self.temp_root = temp_root
        self._folder: Path | None = None
        self._process: BackgroundProcess | None = None
        self._output = ChildOutput()
        self._state = ProcessState.IDLE
        self._fraction = 0.0
        self._stage = ""
        self._error = ""
        self._started_at: float | None = None
        self._ended_at: float | None = None
        self._summary: dict[str, Any] | None = None
        self._loader: OutputLoader | None = None
        self._nodes: EnhanceNodes | None = None

    # ------------------------------------------------------------------------------------------- public API

    @property
    def pid(self) -> int | None:
        """Process ID of the child (the launcher inside Slicer; also the process group ID on POSIX); ``None``
        before :meth:`start`."""
        return self._process.pid if self._process is not None else None

    @property
    def temp_folder(self) -> Path | None:
        """The run's temporary folder while it exists, else ``None``."""
        return self._folder

    def command(self) -> list[str]:
        """The engine's command line (the runner starts it under its supervisor, see :mod:`MRISuperResLib.slicer.child`); its
        files lie in the temporary folder (before :meth:`start` creates it, in a placeholder folder)."""
        folder = self._folder or Path(tempfile.gettempdir()) / "MRISuperRes-run"
        command = [self.python, "-m", "MRISuperResLib.cli", "enhance", str(folder / INPUT_FILE),
                   *output_arguments(folder, self.maps), "--model", self.model, "--scale", format_scale(self.scale),
                   *self.options.to_argv(), "--no-sidecar", "--no-compress", "--json", "--progress-lines"]
        if self.context:
            command += ["--context", self.context]
        if self.adapt_seconds is not None:
            command += ["--adapt", repr(float(self.adapt_seconds))]
        return command

    def start(self) -> None:
        """Write the input to the temporary folder and launch the engine; returns at once.

        Raises:
            RuntimeError: this run was started before (make a new one to run again).
            ValueError: the input or a reused output node is not a scalar volume of the logic's scene.
            InputError: the input node has no voxels.
            OutputError: the input cannot be written to the temporary folder.
            OSError: the Python executable cannot be launched.
        """
        if self._state is not ProcessState.IDLE:
            raise RuntimeError(f"this run is {self._state.value}; make a new EnhanceProcess to run again")
        self._check_nodes()
        self._folder = Path(tempfile.mkdtemp(prefix="MRISuperRes-", dir=self.temp_root))
        try:
            write_volume_node(self.volume_node, self._folder / INPUT_FILE)
            self._process = BackgroundProcess(self.command()[3:], self.python, cwd=self._folder, env=self.env,
                                              control=self._folder / "control")
            self._process.start()
        except BaseException:
            self._remove_folder()
            raise
        self._started_at = time.monotonic()
        self._state, self._stage = ProcessState.RUNNING, "starting"

    def poll(self) -> EnhanceStatus:
        """Take in what the child printed since the last call, without blocking, and say where the run stands.

        A failed run's temporary folder is removed here; a finished one keeps its outputs for :meth:`finish`.
        """
        self._take_lines(wait_s=0.0)
        return self.status()

    def status(self) -> EnhanceStatus:
        """Where the run stood at the last :meth:`poll` (reads nothing new)."""
        if self._started_at is None:
            elapsed = 0.0
        else:
            elapsed = (self._ended_at if self._ended_at is not None else time.monotonic()) - self._started_at
        return EnhanceStatus(self._state, self._fraction, self._stage, elapsed, self._error)

    def cancel(self) -> EnhanceStatus:
        """Stop the run: kill the child's whole process tree, remove the temporary files, add nothing.

        Does nothing to a run that already failed or whose outputs :meth:`finish` added.
        """
        if self._state in (ProcessState.IDLE, ProcessState.RUNNING, ProcessState.FINISHED) and self._nodes is None:
            if self._process is not None:
                self._stop_child()
            self._state, self._stage = ProcessState.CANCELLED, "cancelled"
            if self._started_at is not None and self._ended_at is None:
                self._ended_at = time.monotonic()
        self._remove_folder()
        return self.status()

    def finish(self) -> EnhanceNodes:
        """Put the finished run's outputs into the scene (all of them or, on an error, none); returns them.

        New nodes are named ``<input>_SR_x<scale>`` and so on (see :mod:`MRISuperResLib.slicer.outputs`); reused ones keep
        their names. ``summary`` is the engine's ``--json`` summary (model, device, ``timings_s``,
        ``consistency_nrmse`` ...) with ``input`` set to the node name, ``wall_time_s`` (seconds from
        :meth:`start` to the child's exit) added and the temporary ``outputs`` paths left out. Calling it again
        returns the same nodes.

        Raises:
            RuntimeError: the run was not started or is still running.
            MRISuperResError: the run failed (the child's one-line message).
            CancelledError: the run was cancelled.
            ValueError: the input or a reused output node left the scene during the run (the run is then failed).
        """
        if self._nodes is not None:
            return self._nodes
        status = self.poll()
        if status.state in (ProcessState.IDLE, ProcessState.RUNNING):
            raise RuntimeError(f"the run is {status.state.value}; call finish() once poll() says finished")
        if status.state is ProcessState.FAILED:
            raise MRISuperResError(status.error)
        if status.state is ProcessState.CANCELLED:
            raise CancelledError("the run was cancelled; nothing was added to the scene")
        try:
            nodes = self._add_to_scene()
        except Exception as error:
            self._fail(str(error))
            raise
        finally:
            self._remove_folder()
        self._nodes = nodes
        return nodes

    def run_blocking(self, timeout: float | None = None, progress: ProgressCallback | None = None) -> EnhanceNodes:
        """Start (unless started), wait for the child and :meth:`finish`: the blocking mode for scripts and tests.

        Args:
            timeout: seconds to wait before the run is cancelled; ``None`` waits as long as it takes.
            progress: called with ``(fraction, stage)`` whenever either changes.

        Raises:
            MRISuperResError: the run failed (the child's one-line message) or ran past ``timeout``.
        """
        if self._state is ProcessState.IDLE:
            self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        shown: tuple[float, str] | None = None
        try:
            while True:
                self._take_lines(wait_s=0.1)
                status = self.status()
                if progress is not None and (status.fraction, status.stage) != shown:
                    shown = (status.fraction, status.stage)
                    progress(*shown)
                if status.done:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    self.cancel()
                    raise MRISuperResError(f"enhance did not finish within {timeout:g} s and was stopped; "
                                           "allow more time or use a smaller volume")
        except BaseException:  # Ctrl-C in a script included: never leave the child running
            self.cancel()
            raise
        return self.finish()

    def __del__(self) -> None:
        # A run dropped while going (a closed scene, a reloaded module) must not leave the engine computing.
        with contextlib.suppress(Exception):
            if self._state is ProcessState.RUNNING:
                self.cancel()

    # --------------------------------------------------------------------------------------------- helpers

    def _check_nodes(self) -> None:
        self.logic.check_nodes(self.volume_node, self.outputs)
        image = self.volume_node.GetImageData()
        if image is None or image.GetNumberOfPoints() == 0:
            raise InputError(f"volume {self.volume_node.GetName()} has no voxels; load or select a volume with "
                             "image data")

    def _take_lines(self, wait_s: float) -> None:
        """Handle the queued output lines (waiting up to ``wait_s`` for the first), then check for the exit."""
        if self._state is not ProcessState.RUNNING:
            return
        if self._process is None:
            return
        for stream, line in self._process.lines(wait_s):
            if (update := self._output.take(stream, line)) is not None:
                self._fraction, self._stage = update
        if self._loader is not None:
            self._check_loader(wait_s)
        elif self._output.closed and not self._process.running:
            self._on_exit(self._process.returncode)

    def _on_exit(self, returncode: int) -> None:
        if returncode == 0:
            try:
                self._summary = self._output.summary()
            except ValueError:
                self._ended_at = time.monotonic()
                self._fail("the engine finished without a readable --json summary on stdout")
            else:
                # The outputs are read into memory by a worker thread: the GUI thread only hands them to nodes.
                self._stage = "loading the outputs"
                assert self._folder is not None
                self._loader = OutputLoader(self._folder, self._summary.get("outputs", {})).start()
            return
        self._ended_at = time.monotonic()
        self._fail(child_error(self._output.stderr, returncode))

    def _check_loader(self, wait_s: float) -> None:
        assert self._loader is not None
        if not self._loader.wait(wait_s):
            return
        self._ended_at = time.monotonic()
        if self._loader.error is not None:
            self._fail(f"cannot read the outputs of the run: {self._loader.error}")
        else:
            self._state, self._fraction, self._stage = ProcessState.FINISHED, 1.0, "done"

    def _fail(self, message: str) -> None:
        self._state, self._stage, self._error = ProcessState.FAILED, "failed", message
        self._remove_folder()

    def _stop_child(self) -> None:
        assert self._process is not None
        self._process.kill()

    def _add_to_scene(self) -> EnhanceNodes:
        assert self._summary is not None and self._folder is not None
        return add_output_files_to_scene(self.logic, self.volume_node, self._folder, self._summary, self.scale,
                                         self.outputs, self._loader.loaded if self._loader else {},
                                         self.status().elapsed_s)

    def _remove_folder(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


def _options_and_maps(options: EnhanceOptions | None, device: str | None, maps: Iterable[str],
                      values: Mapping[str, Any]) -> tuple[EnhanceOptions, tuple[str, ...]]:
    """The run's options (``options`` with ``device`` and the option-named ``values`` put in) and its optional
    maps (``maps`` plus the map-named ``values`` that are true).

    Raises:
        TypeError: a value that names neither an option nor an optional map; an unknown map.
    """
    names = {spec.name for spec in fields(EnhanceOptions)}
    unknown = set(values) - names - set(OPTIONAL_KEYS)
    if unknown or set(maps) - set(OPTIONAL_KEYS):
        raise TypeError(f"not an enhance option nor an optional output map: {sorted(unknown or set(maps))}; options: "
                        f"{', '.join(sorted(names))}; optional maps: {', '.join(OPTIONAL_KEYS)}")
    chosen = {key: value for key, value in values.items() if key in names}
    if device is not None:
        chosen["device"] = device
    merged = EnhanceOptions(**{**(options.engine_kwargs() if options is not None else {}), **chosen})
    requested = {*maps, *(key for key in OPTIONAL_KEYS if values.get(key))}
    return merged, tuple(key for key in OPTIONAL_KEYS if key in requested)
