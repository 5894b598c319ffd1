"""The cohort manifest: one row per scan and run, appended to a CSV or JSON Lines file.

Written by ``mrisuperres enhance --manifest FILE`` and by scripts (the Slicer Python console loop) through
:func:`append_manifest_row`; read by ``mrisuperres report``. The format follows the file name: ``.jsonl`` /
``.ndjson`` are JSON Lines, anything else is CSV with a header line. Several processes (the tasks of a job
array) may append to one file: each row is one locked ``write`` of a whole line.

Columns (:data:`FIELDS`): ``time`` (UTC, ISO 8601), ``input``, ``output``, ``status`` (``done``, ``skipped``:
already complete, ``failed``), ``error`` (one line), ``seconds`` (wall time of the scan in this run),
``device``, ``consistency_nrmse`` and ``consistency_threshold`` (see the README's outputs table), ``flagged``
(``true`` when the consistency NRMSE is above the model's calibrated threshold, empty when not known),
``model``, ``model_sha256``, ``input_sha256``, ``shard`` (``I/N``), ``host``, ``warnings`` (joined by ``" | "``),
``noise_nrmse`` (the input's background noise on the consistency scores' scale, empty when not measured). A CSV
written before ``noise_nrmse`` existed keeps its columns: rows are appended without it.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import math
import os
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from ..errors import InputError, OutputError

FIELDS = ("time", "input", "output", "status", "error", "seconds", "device", "consistency_nrmse",
          "consistency_threshold", "flagged", "model", "model_sha256", "input_sha256", "shard", "host", "warnings",
          "noise_nrmse")

#: The columns of a CSV manifest written before ``noise_nrmse`` was added; appending to one keeps them.
EARLIER_FIELDS = FIELDS[:-1]

STATUSES = ("done", "skipped", "failed")

JSONL_SUFFIXES = (".jsonl", ".ndjson")


def is_jsonl(path: str | os.PathLike) -> bool:
    """True when ``path`` names a JSON Lines manifest (by its suffix)."""
    return Path(path).suffix.lower() in JSONL_SUFFIXES


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def make_row(
    *,
    input: str | os.PathLike,
    output: str | os.PathLike | None,
    status: str,
    summary: Mapping[str, Any] | None = None,
    error: str | BaseException = "",
    seconds: float | None = None,
    input_sha256: str = "",
    shard: str = "",
    warnings: Iterable[str] = (),
) -> dict[str, Any]:
    """One manifest row.

    Args:
        input, output: the scan's input and SR output (paths, or node names in a Slicer scene).
        status: ``done``, ``skipped`` or ``failed``.
        summary: the run summary of the scan (:meth:`~.enhance.EnhanceResult.summary`, a sidecar's ``run``
            section, or a Slicer result's ``.summary``): device, scores, flag and model come from it.
        error: why the scan failed (an exception is written as its one-line message).
        seconds: wall time spent on the scan in this run.
        input_sha256, shard: the input's SHA-256 and the shard ``I/N`` that ran it, when known.
        warnings: messages for the user; the summary's own warnings are added.

    Raises:
        ValueError: an unknown status.
    """
    if status not in STATUSES:
        raise ValueError(f"manifest status must be one of {', '.join(STATUSES)}, not {status!r}")
    summary = summary or {}
    suspicious = summary.get("consistency_suspicious")
    all_warnings = [*summary.get("warnings", []), *warnings]
    message = str(error) if not isinstance(error, BaseException) else (str(error) or type(error).__name__)
    return {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input": str(input),
        "output": "" if output is None else str(output),
        "status": status,
        "error": " ".join(message.split()),
        "seconds": None if seconds is None else round(float(seconds), 3),
        "device": str(summary.get("device", "")),
        "consistency_nrmse": _number(summary.get("consistency_nrmse")),
        "consistency_threshold": _number(summary.get("consistency_threshold")),
        "flagged": None if suspicious is None else bool(suspicious),
        "model": str(summary.get("model", "")),
        "model_sha256": str(summary.get("model_sha256", "")),
        "input_sha256": input_sha256,
        "shard": shard,
        "host": socket.gethostname(),
        "warnings": " | ".join(" ".join(str(w).split()) for w in dict.fromkeys(all_warnings)),
        "noise_nrmse": _number(summary.get("noise_nrmse")),
    }


@contextlib.contextmanager
def _locked(stream: IO[Any]) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: appends of one line are not interleaved by one process anyway
        yield
        return
    fcntl.flock(stream.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(stream.fileno(), fcntl.LOCK_UN)


def _csv_line(values: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _columns(header: str, path: Path) -> tuple[str, ...]:
    """The columns of the CSV manifest whose first line is ``header`` (all of :data:`FIELDS` when it is empty).

    Raises:
        OutputError: the header is not a manifest's.
    """
    line = header.rstrip("\r\n")
    for fields in (FIELDS, EARLIER_FIELDS):
        if not header or line == _csv_line(fields).rstrip("\n"):
            return fields
    raise OutputError(f"manifest {path} has other columns than a manifest's; choose a new file")


def check_manifest(path: str | os.PathLike) -> None:
    """Check before a cohort starts that rows can be appended to ``path``.

    Raises:
        OutputError: its folder cannot be created or written, or it is a CSV with other columns.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create the manifest's folder {path.parent}: {error.strerror or error}") from None
    if path.is_dir():
        raise OutputError(f"manifest {path} is a folder; name a .csv or .jsonl file")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise OutputError(f"manifest {path} is not writable; choose a file you can write to")
    if path.exists() and not is_jsonl(path):
        with open(path, encoding="utf-8", newline="") as stream:
            _columns(stream.readline(), path)


def append_manifest_row(path: str | os.PathLike, row: Mapping[str, Any] | None = None, **fields: Any
                        ) -> dict[str, Any]:
    """Append one scan's row to the manifest ``path`` (created with its header when new); return the row.

    Give a row from :func:`make_row`, or :func:`make_row`'s keyword arguments::

        append_manifest_row("cohort.csv", input="T1", output="T1_SR_x2", status="done",
                            summary=result.summary, seconds=12.5)

    Raises:
        OutputError: the file cannot be written, or it is a CSV with other columns.
    """
    record = dict(row) if row is not None else make_row(**fields)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+", encoding="utf-8", newline="") as stream, _locked(stream):
            if is_jsonl(path):
                line = json.dumps({key: record.get(key) for key in FIELDS}) + "\n"
            else:
                stream.seek(0)
                header = stream.readline()
                columns = _columns(header, path)
                line = _csv_line([_csv_value(record.get(key)) for key in columns])
                if not header:
                    line = _csv_line(columns) + line
            stream.seek(0, os.SEEK_END)
            stream.write(line)
            stream.flush()
    except OSError as error:
        raise OutputError(f"cannot append to manifest {path}: {error.strerror or error}") from None
    return record


def _typed(row: Mapping[str, Any]) -> dict[str, Any]:
    typed = {key: row.get(key) for key in FIELDS}
    for key in ("input", "output", "status", "error", "device", "model", "model_sha256", "input_sha256", "shard",
                "host", "warnings", "time"):
        typed[key] = "" if typed[key] is None else str(typed[key])
    for key in ("seconds", "consistency_nrmse", "consistency_threshold", "noise_nrmse"):
        typed[key] = _number(typed[key])
    flagged = typed["flagged"]
    if isinstance(flagged, str):
        flagged = {"true": True, "false": False}.get(flagged.strip().lower())
    typed["flagged"] = flagged if isinstance(flagged, bool) else None
    return typed


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every row of a CSV or JSON Lines manifest, in file order, with numbers and flags typed.

    Raises:
        InputError: a missing file, or one that is not a manifest.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {path} does not exist; check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a manifest (not UTF-8 text); give the CSV or JSONL file that "
                         "'mrisuperres enhance --manifest' wrote") from None
    rows: list[dict[str, Any]] = []
    if is_jsonl(path):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(_typed(json.loads(line)))
            except (ValueError, AttributeError):
                raise InputError(f"manifest {path} line {number} is not a JSON object; is it a manifest?") from None
    else:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "input" not in reader.fieldnames or "status" not in reader.fieldnames:
            raise InputError(f"{path} is not a manifest: its header has no 'input' and 'status' columns")
        rows = [_typed(row) for row in reader]
    return rows


def latest_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The last row of each scan (keyed by output, else input), in the order scans first appear.

    A ``skipped`` row (a re-run found the scan complete) does not hide the row of the run that made it: the scan
    keeps that ``done`` row, with its scores and time.
    """
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = row.get("output") or row["input"]
        if row.get("status") == "skipped" and latest.get(key, {}).get("status") == "done":
            continue
        latest[key] = dict(row)
    return list(latest.values())
