"""Keep what ITK, GDCM and MetaIO print on the process's stderr away from the user's terminal.

The C++ libraries behind SimpleITK write multi-line warnings (``WARNING: In .../itkNiftiImageIO.cxx, line
2008 ...``) straight to file descriptor 2, past Python. :func:`library_output` redirects that descriptor into a
temporary file around a library call; the text is then turned into one-line :class:`LibraryWarning` warnings
(known harmless notices dropped, notices the engine already checks itself dropped, anything else summarised in
one line), and the raw text is echoed on stderr only when :data:`SHOW_RAW` is set (``--debug``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator

from ..errors import InputWarning

#: Echo the libraries' raw text on stderr as well (set by the command line's ``--debug``).
SHOW_RAW = False


#: Warnings already given in this process.
_WARNED: set[str] = set()


class LibraryWarning(InputWarning):
    """A notice from ITK / GDCM about a file, reduced to one line."""


#: Notices dropped: harmless, or about conditions the engine checks itself and refuses in its own words.
_DROPPED = (
    re.compile(r"unexpected scales in sform", re.I),  # nifti_header refuses sheared frames itself
    re.compile(r"orthonormal", re.I),
    re.compile(r"non uniform sampling or missing slices", re.I),  # dicom_io refuses uneven series itself
    re.compile(r"data not read completely", re.I),  # file_integrity refuses incomplete files itself
    re.compile(r"ideal = \d+ : actual = \d+", re.I),
    re.compile(r"no series were found", re.I),  # dicom_io says the folder holds no series itself
)

_ITK_LOCATION = re.compile(r"^(WARNING|ERROR|Warning|Error|Debug)[:]? In .*?, line \d+.*$")
_ITK_OBJECT = re.compile(r"^\w+ \(0x[0-9a-fA-F]+\):\s*")


def messages(text: str) -> list[str]:
    """The distinct notices in ``text``, one line each, without source locations and object addresses."""
    found: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        lines = [line for line in lines if not _ITK_LOCATION.match(line)]
        if not lines:
            continue
        line = " ".join(_ITK_OBJECT.sub("", line) for line in lines)
        line = re.sub(r"\s+", " ", line).strip()
        if line and line not in found:
            found.append(line)
    return found


def one_line_warnings(text: str, context: str) -> list[str]:
    """The one-line warnings :func:`library_output` emits for captured ``text`` about ``context`` (a file)."""
    result = []
    for message in messages(text):
        if any(pattern.search(message) for pattern in _DROPPED):
            continue
        short = message if len(message) <= 160 else message[:157] + "..."
        result.append(f"{context}: the image library reported: {short} (--debug shows its full text)")
    return result


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name.split('.')[0]}: {record.getMessage()}")


@contextlib.contextmanager
def _library_logs() -> Iterator[_Collect]:
    """Collect what nibabel logs (header fixes, printed on stderr by its own handler) inside the block."""
    logger = logging.getLogger("nibabel.global")
    handlers, propagate = list(logger.handlers), logger.propagate
    collect = _Collect()
    for handler in handlers:
        logger.removeHandler(handler)
    logger.addHandler(collect)
    logger.propagate = False
    try:
        yield collect
    finally:
        logger.removeHandler(collect)
        for handler in handlers:
            logger.addHandler(handler)
        logger.propagate = propagate


@contextlib.contextmanager
def library_output(context: str) -> Iterator[None]:
    """Capture what native code prints on stderr (and nibabel logs) inside the block; warn in one line afterwards.

    Args:
        context: what the block works on (a file name), named in the warnings.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real descriptor 2 (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as capture, _library_logs() as logs:
        os.dup2(capture.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            text += "".join(f"\n\n{line}\n" for line in logs.lines)
            if text.strip() and SHOW_RAW:
                print(f"[raw image library output, {context}]\n{text.rstrip()}", file=sys.stderr)
            # After a failure the error itself is the one line the user sees.
            for line in [] if failed else one_line_warnings(text, context):
                if line not in _WARNED:  # one file is opened by several checks; say each thing once
                    _WARNED.add(line)
                    warnings.warn(line, LibraryWarning, stacklevel=3)
