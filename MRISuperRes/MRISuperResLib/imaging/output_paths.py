"""Output names: which file an output name really becomes, what else it writes, and whether a plan collides.

Every check here runs before any work starts, so a bad output name costs the user nothing:

* the format comes from the extension, case-insensitively; a file is always written with the lower-case
  spelling of its extension (``SR.NII.GZ`` -> ``SR.nii.gz``), the only one every ITK reader recognises, and
  that is the name reported everywhere;
* a name with an unknown extension is refused (a name without extension is a DICOM series folder);
* every file an output brings along counts: the data file of a detached header (``.mhd`` -> ``.zraw``,
  ``.nhdr`` -> ``.raw.gz``) and the JSON sidecar, named after the full output name (``sr.nii.gz.json``), so
  ``sr.nii.gz`` and ``sr.nrrd`` in one folder do not collide;
* two planned files at one path, or a planned file at the path of an input, are refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..errors import OutputError
from .volume_io import strip_volume_extension, volume_extension

#: Data files a detached header writes beside itself: extension -> (compressed, uncompressed) data suffix.
_DETACHED_DATA = {".mhd": (".zraw", ".raw"), ".nhdr": (".raw.gz", ".raw")}

SIDECAR_SUFFIX = ".json"


def unknown_extension_message(path: str | os.PathLike) -> str:
    return (f"output {path} has an unknown extension; use .nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd, "
            "or a folder name without extension for a DICOM series")


def written_path(path: str | os.PathLike) -> Path:
    """The path an output named ``path`` is written to: the same, with its volume extension in lower case.

    A name without extension (a DICOM series folder) is kept as it is.

    Raises:
        OutputError: the name has an extension that is not a volume format.
    """
    path = Path(path)
    extension = volume_extension(path)
    if not extension:
        if path.suffix and not path.is_dir():
            raise OutputError(unknown_extension_message(path))
        return path
    if not strip_volume_extension(path).strip(". "):
        raise OutputError(f"output {path} has no name before its extension; give it one, e.g. sr{extension}")
    return path.with_name(strip_volume_extension(path) + extension)


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of an output: its full name plus ``.json`` (``sr.nii.gz`` -> ``sr.nii.gz.json``;
    a DICOM folder ``out`` -> ``out.json``)."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def data_files(path: str | os.PathLike, compress: bool = True) -> list[Path]:
    """Files a volume output writes besides ``path`` itself: the data file of a ``.mhd`` / ``.nhdr`` header."""
    path = written_path(path)
    suffixes = _DETACHED_DATA.get(volume_extension(path))
    if suffixes is None:
        return []
    return [path.with_name(strip_volume_extension(path) + suffixes[0 if compress else 1])]


def planned_files(path: str | os.PathLike, *, sidecar: bool, compress: bool = True) -> list[Path]:
    """Every file (or DICOM folder) one volume output creates: itself, its data file, its sidecar."""
    target = written_path(path)
    return [target, *data_files(target, compress), *([sidecar_path(target)] if sidecar else [])]


def companion_paths(output: str | os.PathLike, keys: Iterable[str]) -> dict[str, Path]:
    """The companions of ``output`` beside it, by key: ``<stem>_<key><ext>`` with the output's extension
    (``.nii.gz`` for a DICOM folder), e.g. ``t1_sr.nrrd`` -> ``{"baseline": t1_sr_baseline.nrrd, ...}``."""
    output = Path(output)
    extension = volume_extension(output) or ".nii.gz"
    stem = strip_volume_extension(output)
    return {key: output.with_name(f"{stem}_{key}{extension}") for key in keys}


def _key(path: Path) -> str:
    """A comparison key for paths that may not exist yet: the resolved folder plus the name."""
    return os.path.normcase(str(path.parent.resolve() / path.name))


def check_no_collisions(
    outputs: Mapping[str, Iterable[Path]], inputs: Iterable[str | os.PathLike] = ()
) -> None:
    """Refuse a plan where two outputs would write one file, or an output would replace an input.

    Args:
        outputs: a label for each output (``"sr of a/x.nii.gz"``) -> every file it creates
            (see :func:`planned_files`).
        inputs: input files or DICOM folders, which are never written.

    Raises:
        OutputError: naming both sides of the first collision found.
    """
    owners: dict[str, str] = {}
    for path in inputs:
        owners[_key(Path(path))] = "input "
    for label, files in outputs.items():
        for path in files:
            key = _key(path)
            owner = owners.get(key)
            if owner is not None and owner != label:
                if owner.startswith("input "):
                    raise OutputError(f"{label} would write {path}, which is the input; choose another output name")
                raise OutputError(f"{label} and {owner} share one path, {path}; give each output its own name "
                                  "(or folder)")
            owners[key] = label


def check_output_plan(
    plans: Sequence[tuple[Path, Mapping[str, Path]]],
    *,
    overwrite: bool,
    sidecar: bool,
    compress: bool = True,
    folders_created: bool = False,
) -> None:
    """Check every output of a run before any work: names, folders, existing files, collisions, inputs.

    Args:
        plans: for each input, its outputs by role (``"sr"``, ``"baseline"`` ..., ``"figure"`` for a PNG), as
            the user named them (they are checked as :func:`written_path` will write them).
        overwrite: existing outputs may be replaced; otherwise any existing file refuses the run.
        sidecar: each volume output also writes ``<name>.json``.
        compress: the data file names of detached headers depend on it.
        folders_created: output folders that do not exist yet will be created (a batch's output folder).

    Raises:
        OutputError: the first problem found, in one line.
    """
    from .volume_io import check_writable_target

    outputs: dict[str, list[Path]] = {}
    for input_path, targets in plans:
        for role, path in targets.items():
            label = f"the {role} output of {input_path}" if len(plans) > 1 else f"the {role} output {path}"
            if role == "figure":
                if Path(path).suffix.lower() != ".png":
                    raise OutputError(f"figure {path} must be a .png file; name it e.g. "
                                      f"{strip_volume_extension(Path(path).with_suffix(''))}.png")
                files = [Path(path)]
            else:
                files = planned_files(path, sidecar=sidecar, compress=compress)
            for number, file in enumerate(files):
                if folders_created and not file.parent.exists():
                    continue
                check_writable_target(file, overwrite, volume_format=number == 0 and role != "figure")
            outputs[label] = files
    check_no_collisions(outputs, inputs=[input_path for input_path, _ in plans])
