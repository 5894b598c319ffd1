"""The ``mrisuperres`` command line: :mod:`.app` parses and dispatches; one module per verb family.

``python -m MRISuperResLib.cli`` runs the same program as the installed ``mrisuperres`` command.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any


EXIT_INTERRUPTED = 130
INTERRUPTED = "mrisuperres: interrupted; no partial output was written"


def raise_interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: stop as Ctrl-C does (``KeyboardInterrupt``), so the same clean-up runs."""
    raise KeyboardInterrupt


def on_stop(handler: Callable[[int, Any], None], *names: str) -> None:
    """Handle the named signals (``"SIGTERM"``, ...) with ``handler``; signals only the main thread may handle, and
    only those the platform has, are left alone."""
    import signal

    if threading.current_thread() is threading.main_thread():
        for name in names:
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), handler)


def main(argv: list[str] | None = None) -> int:
    """Run ``mrisuperres`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    The console script's entry (also of ``python -m MRISuperResLib.cli`` and of the Slicer modules' background
    process): a run that fails while torch is still being imported on a background thread (an input refused as
    soon as it is read) exits at once instead of waiting for the import to finish, and every other run ends
    without the interpreter's teardown (:func:`exit_without_teardown`).
    """
    # First, before the imports below take their half second: a SIGTERM then still gets the one-line message.
    on_stop(raise_interrupt, "SIGTERM")
    try:
        from .app import main as run
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        code = EXIT_INTERRUPTED
    else:
        code = run(argv)
    end_at_once_on_stop(code)
    exit_without_waiting(code)
    exit_without_teardown(code)
    return code


def end_at_once_on_stop(code: int) -> None:
    """From now on, Ctrl-C or SIGTERM ends the process at once with ``code`` (flushed), without a traceback.

    The run is over and its outputs are committed: a stop arriving while the process exits (joining threads,
    running exit handlers) has nothing left to interrupt, and raised as ``KeyboardInterrupt`` there it printed
    a traceback.
    """
    def end(signum: int, frame: object) -> None:
        os._exit(flushed(code))

    on_stop(end, "SIGINT", "SIGTERM")


def flushed(code: int) -> int:
    """Flush stdout and stderr; returns ``code``, or 120 (as the interpreter does) when a flush fails."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            code = code or 120
    return code


def exit_without_teardown(code: int) -> None:
    """End the process with ``code`` after what a normal exit does that matters, without tearing down modules.

    Destroying torch's modules at interpreter exit takes 0.5-0.9 s on a 2-core machine, paid by every run (and
    every Enhance click in Slicer) after its work is done. By the time the command returns, every output is
    committed and flushed to disk (:mod:`..imaging.verified_write`), so this ends the process the way the
    interpreter would, minus that teardown: it runs ``threading``'s shutdown (executors' exit hooks, then joining
    every non-daemon thread) and the ``atexit`` handlers (logging, multiprocessing), flushes stdout and stderr,
    then ``os._exit``. A flush that fails (a closed pipe) exits 120, as the interpreter does. Where the
    interpreter lacks either hook, it returns and the normal exit happens.
    """
    import atexit

    shutdown_threads = getattr(threading, "_shutdown", None)
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if threading.current_thread() is not threading.main_thread() or shutdown_threads is None \
            or run_exit_handlers is None:
        return
    shutdown_threads()
    run_exit_handlers()
    os._exit(flushed(code))


def exit_without_waiting(code: int) -> None:
    """End the process now with ``code`` when it failed (non-zero) while a background import is still running.

    The import thread cannot be stopped, and Python's normal exit waits for it (seconds for torch); nothing is
    left to clean up at this point (outputs are staged and removed inside the run), so the process ends at once
    with its output flushed.
    """
    if code == 0:
        return
    from ..engine.prepared_input import imports_in_flight

    if imports_in_flight():
        os._exit(flushed(code))
