"""Register a real training pair in a background process, so that Slicer never waits for it (MRML side, no Qt).

``run = RegistrationRun(training_logic, TrainingPair(high_node, low_node)).start()`` writes both nodes to a
private temporary folder (MRML storage nodes: Slicer's C++ writer) and runs ``mrisuperres register HIGH LOW
ALIGNED --grid moving --json`` through the modules' background-process runner. :meth:`RegistrationRun.poll`
never blocks; once the child is done it reads the aligned low-resolution volume into the node
``<low>_registered``, shows it over the high-resolution node and returns the same
:class:`~.slicer_training.RegistrationOutcome` as :meth:`~.slicer_training.TrainingLogic.register_pair`, which is
then used when training starts. A pair whose metric says the scans do not show the same anatomy fails with the
child's one-line message (with the metric) and adds nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from .runner import BackgroundProcess

if TYPE_CHECKING:
    from .training import RegistrationOutcome, TrainingLogic, TrainingPair


class RegistrationRun:
    """One background registration of a real pair of volume nodes.

    Args:
        logic: the scene's training logic; it keeps the outcome (:attr:`TrainingLogic.registrations`).
        pair: a row with a high- and a low-resolution node.
        scale: the training scale, to warn when the pair's voxel sizes do not match it.
        python: the interpreter or launcher (default: Slicer's ``PythonSlicer``).
        temp_root: where the temporary folder is made (in Slicer: ``slicer.app.temporaryPath``).
    """

    def __init__(self, logic: TrainingLogic, pair: TrainingPair, scale: Any = 2,
                 python: str | os.PathLike | None = None, temp_root: str | os.PathLike | None = None) -> None:
        from .training import parse_training_scale

        if pair.low is None:
            raise InputError("this pair has no low-resolution volume to register: it is simulated from the "
                             "high-resolution volume")
        self.logic = logic
        self.high = logic._check_node(pair.high, "high-resolution", None)
        self.low = logic._check_node(pair.low, "low-resolution", None)
        self.scale = parse_training_scale(scale)
        self.python = python if python is not None else logic.python
        self.temp_root = temp_root
        self.folder: Path | None = None
        self.process: BackgroundProcess | None = None
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._mtimes = (0, 0)

    def start(self) -> RegistrationRun:
        """Write both volumes and start the registration; returns at once."""
        from .enhance_process import write_volume_node

        self.folder = Path(tempfile.mkdtemp(prefix="MRISuperRes-register-", dir=self.temp_root))
        try:
            write_volume_node(self.high, self.folder / "high.nrrd")
            write_volume_node(self.low, self.folder / "low.nrrd")
            self._mtimes = (self.high.GetMTime(), self.low.GetMTime())
            self.process = BackgroundProcess(
                ["register", "high.nrrd", "low.nrrd", "aligned.nrrd", "--grid", "moving", "--transform",
                 "low_to_high.tfm", "--json"], self.python, cwd=self.folder, control=self.folder / "control")
            self.process.start()
        except BaseException:
            self._remove_folder()
            raise
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def poll(self) -> RegistrationOutcome | None:
        """``None`` while the child registers; then the outcome (node added, overlay shown).

        Raises:
            InputError: the registration failed or the scans do not show the same anatomy (the child's message).
        """
        from .enhance_process import child_error

        if self.process is None:
            raise RuntimeError("start() the registration first")
        for stream, line in self.process.lines():
            if line is not None:
                (self._stdout if stream == "stdout" else self._stderr).append(line)
        if self.process.running:
            return None
        self.process.wait()
        for stream, line in self.process.lines():
            if line is not None:
                (self._stdout if stream == "stdout" else self._stderr).append(line)
        try:
            if self.process.returncode != 0:
                raise InputError(f"{self.low.GetName()} was not registered onto {self.high.GetName()}: "
                                 f"{child_error(self._stderr, self.process.returncode or 1)}")
            summary = json.loads("\n".join(self._stdout))
            assert self.folder is not None
            return self.logic.adopt_registration(self.high, self.low, self.folder / "aligned.nrrd", summary,
                                                 self.scale, self._mtimes)
        finally:
            self._remove_folder()

    def cancel(self) -> None:
        """Stop the registration; nothing is added."""
        if self.process is not None and self.process.running:
            self.process.kill()
        self._remove_folder()

    def _remove_folder(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
