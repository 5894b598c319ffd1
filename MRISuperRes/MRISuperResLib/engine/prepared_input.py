"""An enhance input read (and its head mask computed) before the network exists, without torch.

A command-line run pays for importing torch (seconds) before the network can start; reading the input, checking it
is complete and computing its head mask need none of torch. :func:`import_in_background` starts the torch import
on a thread, :func:`prepare_input` reads the input meanwhile, and :func:`~.enhance.enhance_file` takes the
prepared input instead of reading it again. Reading and SimpleITK's filters run in C++ with other Python threads
free to go on, so the two overlap on a multi-core machine.

This module never imports torch.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..imaging.dicom_io import DicomSeries, scan_series
from ..imaging.volume import Volume
from ..imaging.value_range import check_float32_range
from ..imaging.volume_io import read_volume, volume_extension
from .model_metadata import ModelMetadata


@dataclass
class PreparedInput:
    """One input, read and checked.

    Attributes:
        path: the file or DICOM series folder read.
        volume: the volume (array ``[i, j, k]``, LPS grid); never modified afterwards.
        dicom_source: the DICOM series the volume came from when DICOM outputs will join its study, else ``None``.
        foreground: the head mask on the input grid (boolean ``[i, j, k]``) when asked for, else ``None``.
        timings: seconds spent: ``read`` and, with a mask, ``head_mask``.
    """

    path: Path
    volume: Volume
    dicom_source: DicomSeries | None = None
    foreground: np.ndarray | None = None
    timings: dict[str, float] | None = None


def prepare_input(
    path: str | os.PathLike,
    *,
    resample_uneven_slices: bool = False,
    dicom_source: bool = False,
    foreground: bool = False,
) -> PreparedInput:
    """Read ``path`` (a volume file or DICOM series folder) for :func:`~.enhance.enhance_file`.

    Args:
        path: the input; see :func:`~MRISuperResLib.imaging.volume_io.read_volume` for the checks made and the errors raised.
        resample_uneven_slices: see :func:`~MRISuperResLib.imaging.volume_io.read_volume`.
        dicom_source: also scan the source series (a folder input) so DICOM outputs join its patient and study.
        foreground: also compute the head mask (:func:`~MRISuperResLib.processing.masks.foreground_mask`) that keeps the
            baseline outside the head.

    Raises:
        InputError: an unreadable, incomplete or unusable input (one line).
    """
    path = Path(path)
    start = time.perf_counter()
    volume = read_volume(path, resample_uneven_slices=resample_uneven_slices)
    source = scan_series(path, resample_uneven_slices) if dicom_source and path.is_dir() else None
    timings = {"read": time.perf_counter() - start}
    mask = None
    if foreground:
        # Intensities float32 cannot hold are refused here, before the mask's arithmetic overflows on them.
        check_float32_range(volume.array, path.name)
        from ..processing.masks import foreground_mask

        start = time.perf_counter()
        mask = foreground_mask(volume)
        timings["head_mask"] = time.perf_counter() - start
    return PreparedInput(path, volume, source, mask, timings)


def import_in_background(*modules: str) -> threading.Thread:
    """Start importing ``modules`` in order on a thread and return the thread (join it before using them).

    Only for modules that import nothing of this package (``torch``, ``scipy.fft``), so the two threads never
    wait on each other's module locks. Not a daemon: the interpreter lets the imports finish before it exits.
    """

    def run() -> None:
        for module in modules:
            # A failed import leaves nothing in sys.modules: the caller's own import then raises the real error.
            with contextlib.suppress(BaseException):
                importlib.import_module(module)

    thread = threading.Thread(target=run, name=f"import {', '.join(modules)}")
    thread.start()
    _IMPORTS.append(thread)
    return thread


#: Threads started by :func:`import_in_background`.
_IMPORTS: list[threading.Thread] = []


def imports_in_flight() -> bool:
    """Whether a background import is still running (a run that failed early does not wait for it)."""
    return any(thread.is_alive() for thread in _IMPORTS)


def wanted_mask(option: bool | None, metadata: ModelMetadata | dict[str, Any]) -> bool:
    """Whether enhance keeps the baseline outside the head: ``option`` (``--mask-background`` /
    ``--no-mask-background``) when given, else the model's metadata ``mask_background``."""
    return bool(ModelMetadata.coerce(metadata).mask_background) if option is None else bool(option)


def wants_dicom_source(paths: Iterable[str | os.PathLike]) -> bool:
    """True when one of the output ``paths`` is a DICOM series folder (no volume extension): it then joins the
    source series' patient and study."""
    return any(not volume_extension(path) for path in paths)
