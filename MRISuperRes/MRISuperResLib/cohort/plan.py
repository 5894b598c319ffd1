"""Cohorts: which inputs, where their outputs go, which shard runs them, and which are already done.

* **Inputs** come from files and folders given on the command line (a folder's volume files, or its whole tree
  with ``recursive`` or a glob ``pattern``; a folder holding one DICOM series is one input), from a text list
  (one path per line, ``#`` comments) or from a CSV with an ``input`` column and an optional ``output`` column
  naming each row's output. Relative paths in a list or CSV are relative to the list's folder, so a list works
  from any working directory (a cluster job's too).
* **Outputs** are ``<input stem>_sr<input extension>`` in the output folder; inputs found in sub-folders of a
  tree keep their relative sub-folder, so two ``T1w.nii.gz`` of two subjects never collide.
* **Shards** split the cohort, sorted by output path, by index: item ``n`` belongs to shard ``n mod N``. Shards
  are disjoint and together cover the cohort, on any machine, for a given input list.
* **Resume**: a scan is *complete* when its outputs and sidecars exist and its sidecar records the same input
  SHA-256, model SHA-256 and options (:func:`completion_state`); a complete scan is skipped, a partly committed
  one of the same job is redone, and an output made by another job is never replaced without ``overwrite``.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.outputs import COMPANION_KEYS
from ..errors import InputError
from ..imaging.output_paths import companion_paths
from ..imaging.volume_io import (
    VOLUME_EXTENSIONS,
    dicom_series_ids,
    strip_volume_extension,
    volume_extension,
)

#: Text list suffixes read as CSV (with an ``input`` column); anything else is one path per line.
CSV_SUFFIXES = (".csv",)

#: Key of the sidecar section that identifies the job that made an output.
JOB_KEY = "job"

#: Environment variables of a SLURM job array.
SLURM_TASK_ID = "SLURM_ARRAY_TASK_ID"
SLURM_TASK_COUNT = "SLURM_ARRAY_TASK_COUNT"
SLURM_TASK_MIN = "SLURM_ARRAY_TASK_MIN"
SLURM_TASK_STEP = "SLURM_ARRAY_TASK_STEP"


@dataclass(frozen=True)
class CohortItem:
    """One scan of a cohort.

    Attributes:
        input: the input file, or a folder holding one DICOM series.
        targets: output role (``sr`` first, then companions) -> path.
        key: the stable sort and shard key: the SR output's path relative to the output folder, POSIX style.
    """

    input: Path
    targets: dict[str, Path] = field(hash=False)
    key: str

    @property
    def output(self) -> Path:
        """The super-resolved output."""
        return self.targets["sr"]


def output_targets(sr_path: Path, companions: bool) -> dict[str, Path]:
    """``{"sr": sr_path}`` plus ``<stem>_baseline<ext>`` ... beside it when ``companions``."""
    return {"sr": sr_path, **(companion_paths(sr_path, COMPANION_KEYS) if companions else {})}


def default_output_name(input_path: Path) -> str:
    """``t1.nii.gz`` -> ``t1_sr.nii.gz``; a DICOM folder ``series`` -> ``series_sr.nii.gz``."""
    extension = volume_extension(input_path) or ".nii.gz"
    return f"{strip_volume_extension(input_path)}_sr{extension}"


def is_series_folder(folder: Path) -> bool:
    """A folder of DICOM files (and no volume files): one input. GDCM is asked only where files are."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return bool(files) and not any(_is_input_file(p) for p in files) and bool(dicom_series_ids(folder))


def _is_input_file(path: Path) -> bool:
    # .raw/.zraw data files beside MetaImage/NRRD headers are read through their header only.
    return path.is_file() and bool(volume_extension(path)) and not path.name.startswith(".")


def is_our_output(path: Path) -> bool:
    """True when ``path`` is a result of this software (its JSON sidecar says so): never an input of a cohort,
    so that an output folder inside the input tree (``bids/derivatives/sr``) is not enhanced again."""
    from ..imaging.output_paths import sidecar_path

    side = sidecar_path(path)
    if not side.is_file():
        return False
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and (record.get("provenance") or {}).get("software") == "MRISuperRes"


def find_inputs(folder: Path, *, pattern: str | None = None, recursive: bool = False) -> list[Path]:
    """Volume files (and DICOM series folders) under ``folder``, sorted.

    Args:
        folder: the folder to search.
        pattern: a shell pattern matched against each candidate's path relative to ``folder`` (``*`` also
            matches ``/``; a leading ``**/`` matches any depth, none too), e.g. ``"sub-*/anat/*.nii.gz"``; a
            pattern without ``/`` is matched against the file name alone (``"*_T1w.nii.gz"``). Implies a
            recursive search.
        recursive: search sub-folders too (hidden ones, such as staging folders, are skipped).

    Results of this software (see :func:`is_our_output`) are left out.

    Raises:
        InputError: nothing matched.
    """
    found: list[Path] = []
    recursive = recursive or pattern is not None
    if is_series_folder(folder):
        return [folder]
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        found.extend(here / name for name in sorted(files) if _is_input_file(here / name))
        for name in list(dirs):
            sub = here / name
            # A folder of DICOM files without volume files is one input (a series); do not descend into it.
            if is_series_folder(sub):
                found.append(sub)
                dirs.remove(name)
    if pattern is not None:
        found = [p for p in found if _glob_match(p.relative_to(folder).as_posix(), pattern)]
    found = [p for p in found if not is_our_output(p)]
    if not found:
        what = f"matching {pattern!r}" if pattern else f"({', '.join(VOLUME_EXTENSIONS)}) and no DICOM series"
        raise InputError(f"input folder {folder} holds no volume files {what}"
                         + ("" if recursive else "; add --recursive to search its sub-folders"))
    return sorted(found)


def _glob_match(relative: str, pattern: str) -> bool:
    if "/" not in pattern:
        return fnmatch.fnmatchcase(relative.rsplit("/", 1)[-1], pattern)
    # fnmatch's "*" also matches "/", so "**/" is "any folders" and may match none.
    return fnmatch.fnmatchcase(relative, pattern) or (
        pattern.startswith("**/") and fnmatch.fnmatchcase(relative, pattern[3:]))


def read_input_list(path: Path) -> list[tuple[Path, str | None]]:
    """Rows ``(input path, output name or None)`` of a text list or CSV (see the module docstring).

    Raises:
        InputError: missing file, a CSV without an ``input`` column, or an empty list.
    """
    if not path.is_file():
        raise InputError(f"input list {path} does not exist; check the path")
    base = path.parent
    rows: list[tuple[Path, str | None]] = []
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in CSV_SUFFIXES:
        reader = csv.DictReader(text.splitlines())
        fields = [name.strip().lower() for name in reader.fieldnames or []]
        if "input" not in fields:
            raise InputError(f"CSV {path} has no 'input' column (columns: {', '.join(fields) or 'none'}); "
                             "add a header line 'input,output'")
        for row in reader:
            cleaned = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            if not cleaned.get("input"):
                continue
            rows.append((base / Path(cleaned["input"]).expanduser(), cleaned.get("output") or None))
    else:
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                rows.append((base / Path(line).expanduser(), None))
    if not rows:
        raise InputError(f"input list {path} names no inputs")
    return rows


def plan_cohort(
    sources: Sequence[Path],
    output_folder: Path,
    *,
    input_list: Path | None = None,
    pattern: str | None = None,
    recursive: bool = False,
    companions: bool = False,
) -> list[CohortItem]:
    """The cohort's items, sorted by key.

    Args:
        sources: input files and folders (a folder holding one DICOM series is one input).
        output_folder: where outputs go (created by the run).
        input_list: a text list or CSV of inputs (and output names), added to ``sources``.
        pattern, recursive: how folders are searched (see :func:`find_inputs`).
        companions: also plan baseline, difference and consistency beside each output.

    Raises:
        InputError: no inputs, or two inputs that would write the same output (names both).
    """
    named: list[tuple[Path, str]] = []
    for source in sources:
        if source.is_dir() and not (is_series_folder(source) and not recursive and pattern is None):
            for found in find_inputs(source, pattern=pattern, recursive=recursive):
                relative = found.relative_to(source).parent if found != source else Path()
                named.append((found, (relative / default_output_name(found)).as_posix()))
        else:
            named.append((source, default_output_name(source)))
    if input_list is not None:
        for path, output in read_input_list(input_list):
            if output is not None and Path(output).is_absolute():
                raise InputError(f"input list {input_list}: output {output} must be relative to the output folder")
            name = output or default_output_name(path)
            if output is not None and not volume_extension(output) and Path(output).suffix:
                raise InputError(f"input list {input_list}: output {output} has an unknown extension; use .nii.gz, "
                                 ".nii, .nrrd, .nhdr, .mha or .mhd")
            named.append((path, name))
    if not named:
        raise InputError("no inputs; give files, folders or --inputs LIST")
    items: dict[str, CohortItem] = {}
    for path, name in named:
        key = Path(os.path.normpath(name)).as_posix()
        if key.startswith("../"):
            raise InputError(f"output {name} of {path} leaves the output folder; name it inside the folder")
        if key in items:
            raise InputError(f"inputs {items[key].input} and {path} would both write {output_folder / key}; "
                             "rename one or give per-row output names in a CSV list")
        items[key] = CohortItem(path, output_targets(output_folder / key, companions), key)
    inputs = {item.input.resolve(): item.input for item in items.values()}
    for item in items.values():
        for role, target in item.targets.items():
            if target.resolve() in inputs:
                raise InputError(f"the {role} output of {item.input} is {target}, which is the input "
                                 f"{inputs[target.resolve()]} of this cohort; choose another output folder")
    return [items[key] for key in sorted(items)]


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(1, 4)``: the zero-based shard index and the shard count (the text is one-based).

    Raises:
        InputError: not ``I/N`` with ``1 <= I <= N``.
    """
    index, _, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise InputError(f"--shard {text!r} is not I/N; e.g. --shard 1/4 runs the first of four parts") from None
    if n < 1:
        raise InputError(f"--shard {text}: N, the number of parts, must be at least 1 (e.g. --shard 1/4)")
    if not 1 <= i <= n:
        raise InputError(f"--shard {text}: I must be between 1 and N (e.g. 1/{max(n, 2)} ... {max(n, 2)}/{max(n, 2)})")
    return i - 1, n


def shard_from_environment(environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """The zero-based ``(index, count)`` of a SLURM job array task, or ``None`` outside one.

    The index is ``(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP``, so ``--array=1-4``
    and ``--array=0-30:10`` both give indices 0 to 3 of 4.

    Raises:
        InputError: the variables are inconsistent (an index outside the count).
    """
    environ = os.environ if environ is None else environ
    if SLURM_TASK_ID not in environ or SLURM_TASK_COUNT not in environ:
        return None
    try:
        task = int(environ[SLURM_TASK_ID])
        count = int(environ[SLURM_TASK_COUNT])
        first = int(environ.get(SLURM_TASK_MIN, "0"))
        step = max(1, int(environ.get(SLURM_TASK_STEP, "1")))
    except ValueError:
        raise InputError(f"{SLURM_TASK_ID}/{SLURM_TASK_COUNT} are not numbers; pass --shard I/N instead") from None
    index = (task - first) // step
    if count < 1 or not 0 <= index < count:
        raise InputError(f"SLURM array task {task} (min {first}, step {step}) is not one of {count} tasks; "
                         "pass --shard I/N instead")
    return index, count


def select_shard(items: Sequence[CohortItem], index: int, count: int) -> list[CohortItem]:
    """The items of shard ``index`` (zero-based) of ``count``: every ``count``-th item of the sorted cohort."""
    ordered = sorted(items, key=lambda item: item.key)
    return [item for number, item in enumerate(ordered) if number % count == index]


def _input_files(path: Path) -> list[Path]:
    """The files whose bytes make an input: a DICOM folder's files, a header's data file too."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    files = [path]
    if volume_extension(path) in (".mhd", ".nhdr"):
        key = "ElementDataFile" if volume_extension(path) == ".mhd" else "data file"
        for line in path.read_text(errors="replace").splitlines():
            name, sep, value = line.partition("=" if key == "ElementDataFile" else ":")
            if sep and name.strip().lower() in (key.lower(), "datafile"):
                data = path.parent / value.strip()
                if data.is_file() and data != path:
                    files.append(data)
    return files


def input_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of an input's bytes: the file, a header's data file too, or a DICOM folder's files by name.

    Raises:
        InputError: the input does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input {path} does not exist; check the path")
    digest = hashlib.sha256()
    for file in _input_files(path):
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def job_record(input_path: Path, input_hash: str, model_sha256: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The sidecar section (under :data:`JOB_KEY`) that identifies the job which made an output."""
    return {"input": str(input_path), "input_sha256": input_hash, "model_sha256": model_sha256,
            "options": dict(options)}


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """An output's JSON sidecar, or ``None`` when absent or unreadable."""
    from ..imaging.output_paths import sidecar_path

    try:
        return json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError):
        return None


def same_job(record: Mapping[str, Any] | None, input_hash: str, model_sha256: str,
             options: Mapping[str, Any]) -> bool:
    """True when a sidecar ``record`` was written by the job with this input, model and options."""
    job = (record or {}).get(JOB_KEY) or {}
    return (job.get("input_sha256") == input_hash and job.get("model_sha256") == model_sha256
            and job.get("options") == json.loads(json.dumps(dict(options))))


def completion_state(item: CohortItem, input_hash: str, model_sha256: str, options: Mapping[str, Any],
                     sidecar: bool = True) -> str:
    """Where an item's outputs stand.

    Returns:
        ``"absent"``: none of its outputs or sidecars exist;
        ``"complete"``: all exist and the SR sidecar records this input, model and options (skip it);
        ``"partial"``: some exist and every sidecar present records this job (a commit cut short: redo it);
        ``"foreign"``: outputs exist that another job (or a run without sidecars) made: replace only when asked.
    """
    from ..imaging.output_paths import sidecar_path

    paths = list(item.targets.values())
    sides = [sidecar_path(p) for p in paths] if sidecar else []
    present = [p for p in [*paths, *sides] if p.exists()]
    if not present:
        return "absent"
    if not sidecar:
        return "foreign"
    records = [read_sidecar(p) for p in paths if sidecar_path(p).exists()]
    if not records or not all(same_job(r, input_hash, model_sha256, options) for r in records):
        return "foreign"
    return "complete" if len(present) == len(paths) + len(sides) else "partial"
