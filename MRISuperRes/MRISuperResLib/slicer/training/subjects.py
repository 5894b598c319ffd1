"""From the table's rows to checked subjects, and from subjects to the data files of a run (no Qt).

:func:`collect_subjects` checks every :class:`~.job.TrainingPair` (a node of the scene, or a volume file) and
:func:`split_validation` holds subjects out for validation; :func:`plan_data` decides which file each volume
becomes (files are used in place, nodes are written as uncompressed NRRD by :func:`write_data`, through Slicer's
C++ writer). The user's nodes are only read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import InputError
from ..volumes import NodeProblem, scalar_volume_problem
from .job import DataLists, TrainingPair

if TYPE_CHECKING:
    from .registration import RegistrationOutcome

#: Copies of the weights a run keeps on disk at once: network, two Adam moments (state.pt), its temporary copy
#: while written, best, final and published models.
WEIGHT_COPIES = 7


@dataclass
class Subject:
    """A pair checked and resolved: what to write and where it goes.

    Attributes:
        row: the pair's row in the table (1-based, as messages name it).
        label: the high-resolution node's name or file name.
        high, low: the checked node or resolved file path of each scan (``low`` ``None``: simulated).
        validation: held out for validation.
        shape: voxels of the high-resolution scan along ``i, j, k``.
        voxel_bytes: bytes per voxel of a node to write (0 for a file, used in place).
        context: the subject's conditioning values.
    """

    row: int
    label: str
    high: Any
    low: Any
    validation: bool
    shape: tuple[int, int, int]
    voxel_bytes: int
    context: dict[str, Any] | None = None


def check_item(scene: Any, item: Any, role: str, row: int | None) -> Any:
    """A pair member checked: a scalar volume node with voxels present in ``scene`` (returned as is), or an existing
    volume file (returned as its resolved path).

    Args:
        role: ``"high-resolution"`` or ``"low-resolution"`` (for the message); row: the pair's row, or ``None``.

    Raises:
        InputError: missing, a file that does not exist, a node removed from the scene, not a scalar MRI volume,
            or without voxels.
    """
    where = f"pair {row}: " if row is not None else ""
    if item is None:
        raise InputError(f"{where}no {role} volume; select one or remove the row")
    if isinstance(item, (str, os.PathLike)):
        path = Path(item).expanduser()
        if not path.is_file():
            raise InputError(f"{where}the {role} volume file {path} does not exist")
        return path.resolve()
    if item.GetScene() is not scene or not scene.IsNodePresent(item):
        raise InputError(f"{where}the {role} volume {item.GetName()} is no longer in the scene (removed?); select "
                         "another volume or remove the row")
    problem = scalar_volume_problem(item)
    if problem is NodeProblem.NO_VOXELS:
        raise InputError(f"{where}the {role} volume {item.GetName()} has no voxels; load its data")
    if problem is not None:
        raise InputError(f"{where}the {role} volume {item.GetName()} is not a scalar MRI volume")
    return item


def collect_subjects(scene: Any, pairs: Sequence[TrainingPair]) -> list[Subject]:
    """Every row checked (:func:`check_item`), once per high-resolution volume.

    Raises:
        InputError: a bad row (the message names it), the same volume twice.
    """
    subjects: list[Subject] = []
    seen: dict[str, int] = {}
    for row, pair in enumerate(pairs, start=1):
        high = check_item(scene, pair.high, "high-resolution", row)
        low = check_item(scene, pair.low, "low-resolution", row) if pair.low is not None else None
        if low is not None and _identity(low) == _identity(high):
            raise InputError(f"pair {row}: the same volume is both high- and low-resolution; choose the "
                             "low-resolution scan or leave it empty to simulate one")
        key = _identity(high)
        if key in seen:
            raise InputError(f"pairs {seen[key]} and {row} use the same high-resolution volume; each subject "
                             "once, or it would be both trained and validated on")
        seen[key] = row
        if isinstance(high, Path):
            # Files are used where they are: nothing is written for them.
            shape, voxel_bytes, label = _file_shape(high), 0, high.name
        else:
            image = high.GetImageData()
            shape = tuple(int(n) for n in image.GetDimensions())
            voxel_bytes = int(image.GetScalarSize())
            label = high.GetName()
        subjects.append(Subject(row, label, high, low, bool(pair.validation), shape, voxel_bytes,
                                dict(pair.context) if pair.context else None))
    return subjects


def split_validation(subjects: list[Subject], fraction: float) -> None:
    """Hold out the last ``fraction`` of the subjects (at least one) unless a row is marked for validation.

    Raises:
        InputError: fewer than two subjects, a fraction outside (0, 1), or every subject marked.
    """
    if len(subjects) < 2:
        raise InputError(f"training needs at least 2 subjects (one to train on, one held out for validation); "
                         f"got {len(subjects)}: add pairs or simulated volumes")
    if not 0.0 < fraction < 1.0:
        raise InputError(f"the validation fraction must be between 0 and 1, got {fraction}")
    if not any(s.validation for s in subjects):
        count = min(len(subjects) - 1, max(1, round(fraction * len(subjects))))
        for subject in subjects[-count:]:
            subject.validation = True
    if all(s.validation for s in subjects):
        raise InputError("every subject is marked for validation; leave at least one to train on")


def check_sizes(subjects: list[Subject], scale: tuple[int, int, int], patch: tuple[int, ...]) -> None:
    """Every training subject at ``scale`` holds a low-resolution ``patch`` (voxels, ``i, j, k``).

    Raises:
        InputError: not three patch sizes, or a subject smaller than the patch (the message names it).
    """
    if len(patch) != 3:
        raise InputError(f"the patch size needs three sizes (i, j, k), got {list(patch)}")
    for subject in subjects:
        low = tuple(n // s for n, s in zip(subject.shape, scale))
        if not subject.validation and any(p > n for p, n in zip(patch, low)):
            raise InputError(f"pair {subject.row} ({subject.label}, {' x '.join(map(str, low))} voxels at scale "
                             f"{', '.join(map(str, scale))}) is smaller than the patch size {list(patch)}; choose "
                             "a smaller patch size")


def bytes_needed(subjects: list[Subject], family: str, model_config: dict[str, Any]) -> int:
    """Bytes a run writes at most: the volumes written for nodes, :data:`WEIGHT_COPIES` copies of the float32
    weights (counted on the meta device, no memory), and 16 MiB of logs and cards."""
    import torch

    from ... import models

    data = sum(int(np.prod(s.shape)) * (s.voxel_bytes + (4 if s.low is not None else 0)) for s in subjects
               if not isinstance(s.high, Path))
    with torch.device("meta"):
        parameters = models.parameter_count(models.create(family, **model_config))
    return data + WEIGHT_COPIES * 4 * parameters + 16 * 2**20


def plan_data(subjects: list[Subject], folder: Path,
              registered: set[int]) -> tuple[DataLists, list[tuple[Subject, str, Path]]]:
    """The config's data lists, and the files to write: ``(subject, "high" or "low", path)``.

    Files are used in place. A node is written as uncompressed NRRD (Slicer's C++ writer: a fraction of a
    second, no Python copy). A pair whose row is in ``registered`` is written aligned (``register: false``);
    the training process registers every other pair itself (``register: true``), so Slicer never waits for
    a registration when Start is clicked.
    """
    data = DataLists()
    writes: list[tuple[Subject, str, Path]] = []

    def target(subject: Subject, role: str) -> Path:
        item = subject.high if role == "high" else subject.low
        if isinstance(item, Path):
            return item
        path = folder / f"{subject.row:02d}_{_safe_label(subject.label)}_{role}.nrrd"
        writes.append((subject, role, path))
        return path

    for subject in subjects:
        high = str(target(subject, "high"))
        if subject.context:
            data.context[Path(high).name] = subject.context
        if subject.validation:
            data.validation.append(high)
        elif subject.low is None:
            data.train.append(high)
        else:
            data.pairs.append({"high": high, "low": str(target(subject, "low")),
                               "register": subject.row not in registered})
    return data, writes


def write_data(scene: Any, writes: list[tuple[Subject, str, Path]],
               registrations: dict[int, RegistrationOutcome]) -> None:
    """Write the planned node volumes; a registered pair's low-resolution member as the aligned volume the user
    saw (its ``<low>_registered`` node, or the outcome's volume when that node was removed).

    Raises:
        OutputError: a volume cannot be written. OSError: neither can the outcome's volume.
    """
    from ...imaging.volume_io import write_volume
    from ..enhance_process import write_volume_node

    for subject, role, path in writes:
        node = subject.high if role == "high" else subject.low
        registration = registrations.get(subject.row) if role == "low" else None
        if registration is None:
            write_volume_node(node, path)
        elif scene.IsNodePresent(registration.node):
            write_volume_node(registration.node, path)  # the aligned volume the user saw
        else:
            write_volume(registration.aligned, path, description=f"{node.GetName()} registered"[:79],
                         compress=False)


def subjects_from_folder(folder: str | os.PathLike) -> list[TrainingPair]:
    """One :class:`~.job.TrainingPair` per volume file in ``folder`` (sorted by name).

    A file with a partner of the same name in ``folder/low/`` forms a real pair (registered by the training
    process); the others are simulated.

    Raises:
        InputError: the folder does not exist or holds no volume files.
    """
    from ...imaging.volume_io import volume_extension

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"training folder {folder} does not exist; choose a folder of volume files")
    files = sorted(p for p in folder.iterdir() if p.is_file() and volume_extension(p) and not p.name.startswith("."))
    if not files:
        raise InputError(f"training folder {folder} holds no volume files (.nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd)")
    pairs = []
    for path in files:
        low = folder / "low" / path.name
        pairs.append(TrainingPair(path.resolve(), low.resolve() if low.is_file() else None))
    return pairs


def nodes_of_class(scene: Any, class_name: str) -> list[Any]:
    """Every node of ``class_name`` in ``scene``, in scene order."""
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))]


def _identity(item: Any) -> str:
    return str(item) if isinstance(item, Path) else item.GetID()


def _safe_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:40] or "volume"


def _file_shape(path: Path) -> tuple[int, int, int]:
    """Voxels along ``i, j, k`` of a volume file, from its header only."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(f"cannot read volume file {path}; check that it is a 3D volume") from None
    size = (*(int(n) for n in reader.GetSize()), 1, 1)
    return size[0], size[1], size[2]
