"""Entry of every background process the Slicer modules start: runs an engine module (``MRISuperResLib.cli.app``) the
way ``python -m`` does, inside a small supervisor that makes the process controllable through Slicer's launcher.

Usage (built by :class:`~MRISuperResLib.slicer.runner.BackgroundProcess`, not by hand)::

    PythonSlicer -m MRISuperResLib.slicer.child --control <folder> [--owner <pid>] MRISuperResLib.cli.app train ...

Inside Slicer, ``PythonSlicer`` is a launcher that starts the real interpreter as its *child* and handles no
signal, so the process Slicer started is not the one doing the work. This supervisor, running in the real
interpreter, therefore

* writes its process ID to ``<folder>/child.pid`` and holds an exclusive lock on that file for as long as it lives
  (the operating system releases it when the process ends, even when killed): the parent knows the worker is gone
  when it can take the lock (:func:`~MRISuperResLib.slicer.runner.worker_alive`), whatever happened to the launcher;
* watches for ``<folder>/stop`` and for the end of the owner process (Slicer): either delivers ``SIGTERM`` to the
  main thread once the engine handles it, so the trainer saves its state after the current step and exits
  (status 130). This works on Windows too, where no signal can be sent to another process.

It prints nothing: the engine's stdout (``--json`` summaries, progress lines) passes through unchanged.
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO

from ..imaging.staging import process_alive

#: The lock / process-ID file and the stop-request file in the control folder.
PID_FILE = "child.pid"
STOP_FILE = "stop"

#: Seconds between checks of the stop file and of the owner process.
WATCH_INTERVAL_S = 0.2


def lock_file(handle: IO[str]) -> bool:
    """Take an exclusive, non-blocking lock on the first byte of an open file; ``False`` when another process
    holds it."""
    try:
        if os.name == "nt":
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def unlock_file(handle: IO[str]) -> None:
    if os.name == "nt":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _watch(stop_file: Path, owner: int | None) -> None:
    """Daemon thread: on a stop request or the owner's end, interrupt the main thread with SIGTERM (once the
    engine installed a handler for it, so that it is never lost nor fatal)."""
    import _thread

    while not stop_file.exists() and (owner is None or process_alive(owner)):
        time.sleep(WATCH_INTERVAL_S)
    while True:
        handler = signal.getsignal(signal.SIGTERM)
        if callable(handler):
            _thread.interrupt_main(signal.SIGTERM)
            return
        time.sleep(WATCH_INTERVAL_S)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m MRISuperResLib.slicer.child")
    parser.add_argument("--control", required=True, type=Path, help="control folder (lock, stop request)")
    parser.add_argument("--owner", type=int, default=None, help="stop when this process (Slicer) ends")
    parser.add_argument("module", help="the module to run as __main__ (MRISuperResLib.cli.app)")
    parser.add_argument("arguments", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    args.control.mkdir(parents=True, exist_ok=True)
    # Kept open (and locked) until the process ends: the lock is what the parent watches.
    handle = open(args.control / PID_FILE, "a+", encoding="utf-8")
    if not lock_file(handle):
        print(f"mrisuperres: error: another process already runs in {args.control}", file=sys.stderr)
        sys.exit(1)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    threading.Thread(target=_watch, args=(args.control / STOP_FILE, args.owner), daemon=True,
                     name="MRISuperRes stop watcher").start()
    sys.argv = [args.module, *args.arguments]
    runpy.run_module(args.module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
