"""The ``mrisuperres`` command line: :mod:`.app` parses and dispatches; one module per verb family.

``python -m MRISuperResLib.cli`` runs the same program as the installed ``mrisuperres`` command.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run ``mrisuperres`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    from .app import main as run

    return run(argv)
