"""The modules' one background-process runner (:mod:`MRISuperResLib.slicer.runner`) behind a launcher like
Slicer's ``PythonSlicer``: it starts the real interpreter as a *child* and handles no signal.

The worker here is a small module that behaves like the trainer: on SIGTERM it finishes its current "step"
(half a second), writes its state and exits with status 130; so these tests take seconds, not a training run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from MRISuperResLib.slicer.runner import (
    CREATE_NEW_PROCESS_GROUP,
    CREATE_NO_WINDOW,
    BackgroundProcess,
    windows_creation_flags,
    worker_alive,
)

posix_only = pytest.mark.skipif(os.name == "nt", reason="kills one process of the tree with os.kill")

#: What CTKAppLauncher does (Base/ctkAppLauncher.cpp): start the interpreter as a child, forward its exit status,
#: install no signal handler.
LAUNCHER = "import subprocess, sys\nsys.exit(subprocess.call([sys.executable, *sys.argv[1:]]))\n"

WORKER = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    requested = []
    signal.signal(signal.SIGTERM, lambda *a: requested.append(True))
    Path(sys.argv[1], "started").write_text("")
    while not requested:
        time.sleep(0.02)
    time.sleep(0.5)                      # the current step finishes
    Path(sys.argv[1], "state").write_text("saved")
    sys.exit(130)
""")

#: Safety net for a stuck child; never reached by a working runner (not a speed requirement).
STUCK_S = 60.0


@pytest.fixture()
def rig(tmp_path: Path):
    (tmp_path / "PythonSlicer").write_text(LAUNCHER)
    (tmp_path / "fake_trainer.py").write_text(WORKER)
    launcher = tmp_path / "launcher.sh"
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} {tmp_path / 'PythonSlicer'} \"$@\"\n")
    launcher.chmod(0o755)
    processes: list[BackgroundProcess] = []

    def start(owner: int | None = None) -> BackgroundProcess:
        out = tmp_path / f"run{len(processes)}"
        out.mkdir()
        process = BackgroundProcess([str(out)], launcher, cwd=out, env={"PYTHONPATH": str(tmp_path)},
                                    log=out / "process.log", module="fake_trainer", owner=owner)
        process.start()
        processes.append(process)
        until(lambda: (out / "started").exists() and process.worker_pid is not None)
        assert process.worker_pid != process.pid  # the launcher is in between
        return process

    yield start
    for process in processes:
        process.close()


def until(condition, timeout: float = STUCK_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "stuck"
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan is reaped by whoever is PID 1, maybe never here)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


@posix_only
def test_stop_waits_for_the_worker_behind_the_launcher(rig) -> None:
    process = rig()
    worker = process.worker_pid
    process.request_stop()
    time.sleep(0.2)
    # The worker is finishing its step: the run is not over, so nothing may start on its folder yet.
    assert process.running and process.returncode is None and alive(worker)
    assert process.wait(timeout=STUCK_S) == 130
    assert (Path(process.cwd) / "state").read_text() == "saved"
    assert not process.running and not worker_alive(process.control)


@posix_only
def test_a_worker_whose_launcher_died_still_counts_and_kill_ends_it(rig) -> None:
    process = rig()
    worker = process.worker_pid
    os.kill(process.pid, signal.SIGKILL)  # only the launcher: what a SIGTERM to it did before
    process.process.wait()
    assert process.running and alive(worker)
    process.kill()
    assert not process.running and not alive(worker)
    assert not (Path(process.cwd) / "state").exists()


@posix_only
def test_the_worker_stops_itself_when_its_owner_ends(rig) -> None:
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        process = rig(owner=owner.pid)
        owner.kill()
        owner.wait()
        assert process.wait(timeout=STUCK_S) == 130  # Slicer ended: state saved, no orphan
        assert (Path(process.cwd) / "state").read_text() == "saved"
    finally:
        owner.kill()


def test_windows_children_get_no_console_window_and_their_own_group() -> None:
    flags = windows_creation_flags()
    assert flags & CREATE_NO_WINDOW and flags & CREATE_NEW_PROCESS_GROUP
