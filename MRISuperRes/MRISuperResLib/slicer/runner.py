"""The one way the Slicer modules run the engine in the background: Enhance and Training both use it (no Qt).

:class:`BackgroundProcess` starts ``<python> -m MRISuperResLib.slicer.child --control <folder> --owner <pid>
MRISuperResLib.cli.app <command> ...``. Inside Slicer ``<python>`` is ``PythonSlicer``, a launcher (CTKAppLauncher) that
starts the real interpreter as a child process and forwards no signal, so the process this module starts is not
the one doing the work. Therefore:

* **Is it still running?** :attr:`BackgroundProcess.running` is true while the launcher *or* the worker lives; the
  worker holds a lock on ``<folder>/child.pid`` for its whole life (see :mod:`.child`), so a worker whose
  launcher was killed is still seen, and one that was killed is seen gone.
* **Stop** (:meth:`~BackgroundProcess.request_stop`) writes ``<folder>/stop``; the worker turns it into ``SIGTERM``
  to itself (on Windows too), so the trainer saves its state after the current step and exits with status 130.
  No signal reaches the launcher, which exits when the worker has.
* **Kill** (:meth:`~BackgroundProcess.kill`) ends the whole tree at once: ``killpg(SIGKILL)`` on POSIX (the child
  leads a new session, and the worker stays in its process group), ``taskkill /T /F`` of the launcher and of the
  worker's own process ID on Windows; then waits until the worker's lock is free.
* **No console window** on Windows: ``CREATE_NO_WINDOW`` and a hidden ``STARTUPINFO`` (as Slicer's own
  ``launchConsoleProcess`` does); ``CREATE_NEW_PROCESS_GROUP`` keeps Ctrl+C of Slicer's terminal away from it.
* **Slicer ends** (even by a crash): the worker watches the owner process ID and stops itself as on Stop.

Output goes either to pipes read by two threads into a queue (:meth:`~BackgroundProcess.lines`, for Enhance's
progress lines and ``--json`` summary) or appended to a log file (Training's ``process.log``). A failed child's
reason is read the same way for both: its last ``mrisuperres: error:`` line (:func:`child_error` from the stderr
lines, :func:`last_error_line` from a log file).
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from .child import PID_FILE, STOP_FILE, lock_file, unlock_file

#: The folder holding the ``MRISuperResLib`` package: the child needs it first on ``PYTHONPATH``.
LIBRARY_PARENT = Path(__file__).resolve().parents[2]

#: The engine's command-line module, run by every background process.
ENGINE_MODULE = "MRISuperResLib.cli"

#: Prefix of the engine's one-line error messages on stderr (``mrisuperres: error: ...``, see :mod:`..cli.app`).
ERROR_PREFIX = "mrisuperres: error:"

#: Exit status of an engine command that was interrupted (Stop, Ctrl+C); a trainer has saved its state. The
#: command line's own value (``cli.app.EXIT_INTERRUPTED``; the Slicer bridge does not import the CLI).
EXIT_INTERRUPTED = 130

#: Windows process-creation flags (numeric: ``subprocess`` defines the names on Windows only).
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000

#: Seconds to wait for the reader threads after the child is gone (they end at end-of-file at once).
_READER_JOIN_S = 5.0


def default_python() -> str:
    """Slicer's ``PythonSlicer`` launcher when on the PATH (it sets up the application's environment; inside
    Slicer ``sys.executable`` is the application itself), else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with ``extra`` on top, the ``MRISuperResLib`` folder first on
    ``PYTHONPATH`` and UTF-8, unbuffered output."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(LIBRARY_PARENT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def windows_creation_flags() -> int:
    """``creationflags`` of a background process on Windows: its own process group, no console window."""
    return CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW


def new_process_group_options() -> dict[str, Any]:
    """``subprocess.Popen`` options: the child leads a new process group (POSIX session / Windows process group)
    so that its whole tree can be killed at once, with no console window on Windows."""
    if os.name == "nt":
        startupinfo = subprocess.STARTUPINFO()  # type: ignore[attr-defined]
        startupinfo.dwFlags |= subprocess.STARTF_USESHOWWINDOW  # type: ignore[attr-defined]
        startupinfo.wShowWindow = 0  # SW_HIDE
        return {"creationflags": windows_creation_flags(), "startupinfo": startupinfo}
    return {"start_new_session": True}


def kill_process_tree(process: subprocess.Popen[Any], worker_pid: int | None = None) -> None:
    """Kill ``process``, every process it started and the worker ``worker_pid`` (which may have outlived the
    launcher on Windows)."""
    if os.name == "nt":
        no_window = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": False,
                     "creationflags": CREATE_NO_WINDOW}
        for pid in (process.pid, worker_pid):
            if pid is not None:
                subprocess.run(["taskkill", "/T", "/F", "/PID", str(pid)], **no_window)
        process.kill()  # in case taskkill is unavailable; harmless when the process is already gone
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # the whole group has already exited
        pass


def worker_alive(control: Path) -> bool:
    """Whether the worker of control folder ``control`` still lives: it holds the lock on its PID file."""
    try:
        handle = open(control / PID_FILE, encoding="utf-8")
    except OSError:
        return False
    with handle:
        if lock_file(handle):
            unlock_file(handle)
            return False
        return True


class BackgroundProcess:
    """One engine command (``mrisuperres <command> ...``) running in the background through ``python``.

    Args:
        arguments: the engine command line after ``mrisuperres`` (``["train", "--config", path]``).
        python: the interpreter or launcher (default :func:`default_python`).
        cwd: the working folder of the child.
        env: extra environment variables (see :func:`child_environment`).
        log: append the child's stdout and stderr to this file; ``None``: read them through pipes
            (:meth:`lines`).
        control: the folder for the lock and stop files (default: a new temporary folder, removed by
            :meth:`close`).
        module: the module the worker runs as ``__main__`` (default: the engine's CLI).
        owner: the worker stops itself when this process ends (default: this process, i.e. Slicer).
    """

    def __init__(self, arguments: Sequence[str], python: str | os.PathLike | None = None, *,
                 cwd: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                 log: str | os.PathLike | None = None, control: str | os.PathLike | None = None,
                 module: str = ENGINE_MODULE, owner: int | None = None) -> None:
        self.arguments = [str(a) for a in arguments]
        self.python = str(python) if python is not None else default_python()
        self.cwd = cwd
        self.env = dict(env or {})
        self.log = Path(log) if log is not None else None
        self.module = module
        self.owner = os.getpid() if owner is None else owner
        self._own_control = control is None
        self.control = Path(control) if control is not None else Path(tempfile.mkdtemp(prefix="MRISuperRes-ctl-"))
        self.process: subprocess.Popen[str] | None = None
        self._log_handle: IO[bytes] | None = None
        self._lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._readers: list[threading.Thread] = []
        self.stop_requested = False

    def command(self) -> list[str]:
        """The full command line: the supervisor (:mod:`.child`) running the engine's CLI."""
        return [self.python, "-m", "MRISuperResLib.slicer.child", "--control", str(self.control),
                "--owner", str(self.owner), self.module, *self.arguments]

    def start(self) -> None:
        """Launch the child (returns at once).

        Raises:
            OSError: the interpreter cannot be started.
        """
        self.control.mkdir(parents=True, exist_ok=True)
        for name in (STOP_FILE, PID_FILE):
            (self.control / name).unlink(missing_ok=True)
        options: dict[str, Any] = {"stdin": subprocess.DEVNULL, "cwd": self.cwd, "env": child_environment(self.env),
                                   **new_process_group_options()}
        if self.log is not None:
            self._log_handle = open(self.log, "ab")
            self._log_handle.write(f"\n$ {' '.join(self.command())}\n".encode())
            self._log_handle.flush()
            options.update(stdout=self._log_handle, stderr=subprocess.STDOUT)
        else:
            options.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                           errors="replace", bufsize=1)
        try:
            self.process = subprocess.Popen(self.command(), **options)
        except OSError:
            self._close_log()
            raise
        if self.log is None:
            for name, stream in (("stdout", self.process.stdout), ("stderr", self.process.stderr)):
                reader = threading.Thread(target=_read_lines, args=(stream, name, self._lines),
                                          name=f"MRISuperRes {name} reader", daemon=True)
                reader.start()
                self._readers.append(reader)

    @property
    def pid(self) -> int | None:
        """Process ID of the process started (the launcher inside Slicer; it leads the process group)."""
        return self.process.pid if self.process is not None else None

    @property
    def worker_pid(self) -> int | None:
        """Process ID of the interpreter doing the work (the launcher's child inside Slicer), once known."""
        try:
            return int((self.control / PID_FILE).read_text(encoding="utf-8").split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def running(self) -> bool:
        """The launcher or the worker is alive."""
        if self.process is None:
            return False
        return self.process.poll() is None or worker_alive(self.control)

    @property
    def returncode(self) -> int | None:
        """The exit status once nothing runs any more (the launcher forwards the worker's); else ``None``."""
        return None if self.running else self.process.returncode if self.process is not None else None

    def lines(self, wait_s: float = 0.0) -> list[tuple[str, str | None]]:
        """The output lines read since the last call, as ``(stream, line)``; ``(stream, None)`` marks a stream's
        end. Waits up to ``wait_s`` for the first. Only without ``log``."""
        out: list[tuple[str, str | None]] = []
        try:
            out.append(self._lines.get(timeout=wait_s) if wait_s > 0 else self._lines.get_nowait())
            while True:
                out.append(self._lines.get_nowait())
        except queue.Empty:
            pass
        return out

    def request_stop(self) -> None:
        """Ask the worker to stop (it saves its state after the current step and exits with status 130)."""
        if self.running:
            self.stop_requested = True
            (self.control / STOP_FILE).write_text("stop\n", encoding="utf-8")

    def kill(self, timeout: float = 30.0) -> None:
        """End the whole process tree at once and wait (up to ``timeout`` seconds) until the worker is gone."""
        if self.process is None:
            return
        self.stop_requested = True
        if self.running:
            kill_process_tree(self.process, self.worker_pid)
        self.process.wait()
        deadline = time.monotonic() + timeout
        while worker_alive(self.control) and time.monotonic() < deadline:
            time.sleep(0.05)
        for reader in self._readers:
            reader.join(_READER_JOIN_S)
        self._close_log()

    def wait(self, timeout: float | None = None, interval: float = 0.1) -> int | None:
        """Wait until nothing runs any more (or ``timeout`` seconds); returns :attr:`returncode`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running and (deadline is None or time.monotonic() < deadline):
            time.sleep(interval)
        if not self.running:
            self._close_log()
        return self.returncode

    def close(self) -> None:
        """Release the log file and remove a temporary control folder (kill first if still running)."""
        if self.running:
            self.kill()
        self._close_log()
        if self._own_control:
            shutil.rmtree(self.control, ignore_errors=True)

    def _close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None


def child_error(stderr_lines: list[str], returncode: int) -> str:
    """The one-line reason a child failed: its last ``mrisuperres: error:`` message (prefix removed), else its
    last stderr line, else a sentence naming the exit status or signal."""
    for line in reversed(stderr_lines):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX):].strip()
    last = next((line.strip() for line in reversed(stderr_lines) if line.strip()), "")
    if last:
        return last
    if returncode < 0:
        return f"the engine process was killed by signal {-returncode} (out of memory?)"
    return f"the engine process stopped with exit status {returncode}"


def last_error_line(path: Path, limit: int = 65536) -> str:
    """The last ``mrisuperres: error:`` line of a process log (``log=`` of :class:`BackgroundProcess`), else its
    last non-empty line (``""`` if none); reads at most the last ``limit`` bytes."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - limit))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    return (errors or lines or [""])[-1]


def _read_lines(stream: IO[str], name: str, lines: queue.Queue[tuple[str, str | None]]) -> None:
    """Reader thread: every line of ``stream`` into ``lines`` as ``(name, line)``, then ``(name, None)``."""
    try:
        for line in stream:
            lines.put((name, line.rstrip("\r\n")))
    finally:
        stream.close()
        lines.put((name, None))
