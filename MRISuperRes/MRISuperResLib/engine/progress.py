"""The progress-line protocol between a background ``mrisuperres`` process and whoever reads its output.

``mrisuperres enhance --progress-lines`` prints one line per update (:func:`format_progress_line`); the Slicer
modules read them back (:func:`parse_progress_line`). Both sides import this module, so the format is defined once.
"""

from __future__ import annotations

#: First word of every progress line.
PROGRESS_PREFIX = "MRISUPERRES_PROGRESS"


def format_progress_line(fraction: float, stage: str) -> str:
    """One ``--progress-lines`` line: ``MRISUPERRES_PROGRESS 0.4200 super-resolving: tile 3/8``.

    ``fraction`` is clamped to ``[0, 1]``; line breaks in ``stage`` become spaces so the update stays one line.
    """
    clamped = min(1.0, max(0.0, float(fraction)))
    text = " ".join(str(stage).split())
    return f"{PROGRESS_PREFIX} {clamped:.4f} {text}".rstrip()


def parse_progress_line(line: str) -> tuple[float, str] | None:
    """``(fraction, stage)`` from a ``--progress-lines`` line, or ``None`` for any other line.

    The inverse of :func:`format_progress_line`; a trailing newline is ignored.
    """
    words = line.strip().split(" ", 2)
    if len(words) < 2 or words[0] != PROGRESS_PREFIX:
        return None
    try:
        fraction = float(words[1])
    except ValueError:
        return None
    if not 0.0 <= fraction <= 1.0:  # also refuses nan
        return None
    return fraction, words[2] if len(words) > 2 else ""
