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
import threading
import warnings
from collections.abc import Iterator
from typing import IO

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


class _SharedCapture:
    """One redirection of descriptor 2 (and of nibabel's log) for every block that is open at the same time.

    Descriptor 2 belongs to the whole process: two threads each redirecting and restoring it would undo each
    other (one thread's text reaching the terminal raw, or stderr left pointing into a deleted file). So the
    first block to open redirects, the last to close restores, and each block, as it closes, takes the text that
    arrived since the previous block closed; text written while two blocks overlap goes to one of them, never to
    the terminal and never twice.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = 0
        self._saved = -1
        self._file: IO[bytes] | None = None
        self._read_at = 0
        self._logs = _Collect()
        self._log_handlers: list[logging.Handler] = []
        self._log_propagate = True

    def enter(self) -> None:
        """Start capturing (or join the capture already running). Raises OSError without a real descriptor 2."""
        with self._lock:
            if self._open == 0:
                sys.stderr.flush()
                saved = os.dup(2)
                capture = tempfile.TemporaryFile()
                os.dup2(capture.fileno(), 2)
                self._saved, self._file, self._read_at = saved, capture, 0
                logger = logging.getLogger("nibabel.global")
                self._log_handlers, self._log_propagate = list(logger.handlers), logger.propagate
                for handler in self._log_handlers:
                    logger.removeHandler(handler)
                self._logs.lines = []
                logger.addHandler(self._logs)
                logger.propagate = False
            self._open += 1

    def leave(self) -> str:
        """Stop this block's capture; returns the text that arrived since the last block left."""
        with self._lock:
            assert self._file is not None
            self._file.seek(self._read_at)
            data = self._file.read()
            self._read_at += len(data)
            text = data.decode("utf-8", errors="replace") + "".join(f"\n\n{line}\n" for line in self._logs.lines)
            self._logs.lines = []
            self._open -= 1
            if self._open == 0:
                os.dup2(self._saved, 2)
                os.close(self._saved)
                self._file.close()
                self._file = None
                logger = logging.getLogger("nibabel.global")
                logger.removeHandler(self._logs)
                for handler in self._log_handlers:
                    logger.addHandler(handler)
                logger.propagate = self._log_propagate
            return text


_CAPTURE = _SharedCapture()


@contextlib.contextmanager
def library_output(context: str) -> Iterator[None]:
    """Capture what native code prints on stderr (and nibabel logs) inside the block; warn in one line afterwards.

    Safe to use from several threads at once (see :class:`_SharedCapture`).

    Args:
        context: what the block works on (a file name), named in the warnings.
    """
    try:
        _CAPTURE.enter()
    except (OSError, ValueError, AttributeError):  # no real descriptor 2 (embedded interpreters)
        yield
        return
    failed = True
    try:
        yield
        failed = False
    finally:
        text = _CAPTURE.leave()
        if text.strip() and SHOW_RAW:
            print(f"[raw image library output, {context}]\n{text.rstrip()}", file=sys.stderr)
        # After a failure the error itself is the one line the user sees.
        for line in [] if failed else one_line_warnings(text, context):
            if line not in _WARNED:  # one file is opened by several checks; say each thing once
                _WARNED.add(line)
                warnings.warn(line, LibraryWarning, stacklevel=3)
