"""The ``mrisuperres`` command line: :mod:`.app` parses and dispatches; one module per verb family.

``python -m MRISuperResLib.cli`` runs the same program as the installed ``mrisuperres`` command.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Run ``mrisuperres`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    The console script's entry: a run that fails while torch is still being imported on a background thread
    (an input refused as soon as it is read) exits at once instead of waiting for the import to finish.
    """
    from .app import main as run

    code = run(argv)
    exit_without_waiting(code)
    return code


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
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
