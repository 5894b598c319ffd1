"""Reading a DICOM series folder with its geometry checked slice by slice.

ITK's series reader stacks the slices it is given and spreads them evenly between the first and the last, so a
series with a missing slice, slices at uneven distances, tilted slices or a sheared stack (gantry tilt) would
be read onto a regular grid where the anatomy is not. Here every slice's ImagePositionPatient and
ImageOrientationPatient are read first (pydicom, headers only) and such a series is refused in one line.

Geometry (LPS mm, as DICOM): the ``i`` axis runs along the row direction (first three ImageOrientationPatient
values) with spacing PixelSpacing[1], ``j`` along the column direction with PixelSpacing[0], and ``k`` along the
slice normal ``row x column``, slices sorted by their position along it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, InputWarning
from .native_output import library_output
from .volume import Grid

#: Largest angle (degrees) between two slices' orientations still taken as parallel.
PARALLEL_TOLERANCE_DEG = 0.05
#: Slice gaps may differ from their median by this fraction (or by ``GAP_TOLERANCE_MM``, whichever is larger).
GAP_TOLERANCE_FRACTION = 0.01
GAP_TOLERANCE_MM = 0.01


@dataclass(frozen=True)
class SliceHeader:
    """What the geometry check and a derived series need from one source slice."""

    path: Path
    position: np.ndarray  # ImagePositionPatient, LPS mm
    orientation: np.ndarray  # ImageOrientationPatient: row then column direction cosines (6 values)
    rows: int
    columns: int
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    sop_class_uid: str
    sop_instance_uid: str


@dataclass
class DicomSeries:
    """A checked DICOM series: its slices sorted along the normal, the grid they lie on, and the header of its
    first slice (patient, study and series attributes for a derived series)."""

    folder: Path
    slices: list[SliceHeader]
    grid: Grid
    first_header: Any = None  # pydicom Dataset without pixel data
    #: Position (mm along the normal) of each sorted slice when they are unevenly spaced and resampling was asked.
    uneven_positions: np.ndarray | None = None


def series_ids(folder: str | os.PathLike) -> tuple[str, ...]:
    """The DICOM series instance UIDs found directly in ``folder`` (empty when none)."""
    with library_output(str(folder)):
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ())


def _series_files(folder: Path) -> list[Path]:
    series = series_ids(folder)
    if not series:
        raise InputError(f"input folder {folder} holds no DICOM series; give a volume file or a DICOM series folder")
    if len(series) > 1:
        raise InputError(f"input folder {folder} holds {len(series)} DICOM series; put each series in its own folder")
    with library_output(str(folder)):
        names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    files = [Path(name) for name in names]
    _unlisted_slices(folder, files, series[0])
    return files


def _floats(value: Any, count: int, what: str, path: Path) -> np.ndarray:
    try:
        numbers = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        numbers = np.array([])
    if numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise InputError(f"input slice {path} has no valid {what}; the series cannot be placed in space "
                         "(was it anonymised or converted without geometry?)")
    return numbers


def read_slice_header(path: Path) -> tuple[SliceHeader, Any]:
    """The geometry of one slice file, and its header (pydicom Dataset, no pixel data)."""
    import pydicom

    try:
        header = pydicom.dcmread(str(path))
    except Exception as error:  # pydicom raises many kinds for damaged files
        raise InputError(f"cannot read DICOM slice {path}: {str(error).splitlines()[0][:120]}") from None
    _check_pixel_data_complete(header, path)
    if "PixelData" in header:
        del header.PixelData  # only the header is kept
    frames = int(header.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(f"input {path} is a multi-frame DICOM object ({frames} frames) inside a series folder; "
                         "give a folder of single-frame slices, or convert it to NIfTI first")
    position = _floats(header.get("ImagePositionPatient"), 3, "ImagePositionPatient", path)
    orientation = _floats(header.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", path)
    spacing = _floats(header.get("PixelSpacing"), 2, "PixelSpacing", path)
    return SliceHeader(path, position, orientation, int(header.get("Rows", 0)), int(header.get("Columns", 0)),
                       (float(spacing[0]), float(spacing[1])), str(header.get("SOPClassUID", "")),
                       str(header.get("SOPInstanceUID", ""))), header


def _check_pixel_data_complete(header: Any, path: Path) -> None:
    """Refuse a slice whose uncompressed pixel data is shorter than Rows x Columns x samples x bytes."""
    syntax = getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and getattr(syntax, "is_compressed", False):
        return
    if "PixelData" not in header:
        raise InputError(f"input slice {path} has no pixel data; export the series again")
    expected = (int(header.get("Rows", 0)) * int(header.get("Columns", 0)) * int(header.get("SamplesPerPixel", 1))
                * int(header.get("BitsAllocated", 16)) // 8)
    actual = len(header.PixelData)
    if actual < expected:
        raise InputError(f"input slice {path} is incomplete: {actual} of {expected} bytes of pixel data (an "
                         "interrupted copy?); copy the series again")


def _unlisted_slices(folder: Path, listed: list[Path], series_uid: str) -> None:
    """Refuse files of the series that GDCM left out because it could not read them (damaged or cut short)."""
    import pydicom

    names = {path.name for path in listed}
    for path in sorted(folder.iterdir()):
        if path.name in names or path.name.startswith(".") or not path.is_file():
            continue
        try:
            header = pydicom.dcmread(str(path), stop_before_pixels=True)
        except Exception:  # not DICOM at all (notes, DICOMDIR parts): not part of the series
            continue
        if str(header.get("SeriesInstanceUID", "")) == series_uid:
            raise InputError(f"input slice {path} of the series cannot be read (damaged or cut short by an "
                             "interrupted copy?); copy the series again")


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cosine = abs(float(a @ b)) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def check_series_geometry(folder: Path, slices: list[SliceHeader], resample_uneven: bool = False
                          ) -> tuple[list[SliceHeader], Grid, np.ndarray | None]:
    """Sort ``slices`` along their normal and return them with the regular grid they lie on.

    With ``resample_uneven``, unevenly spaced (parallel) slices are accepted: the grid then spans them with the
    median gap, and their positions along the normal (mm, relative to the first) come back for resampling;
    otherwise that third value is ``None``.

    Raises:
        InputError: fewer than 2 slices, slices of different sizes or pixel spacings, non-parallel slices,
            slices sharing a position, unevenly spaced (missing) slices unless ``resample_uneven``, or a stack
            shifted sideways.
    """
    if len(slices) < 2:
        raise InputError(f"input folder {folder} holds a single DICOM slice (a 2D image); give a series of at least "
                         "2 slices")
    first = slices[0]
    sizes = {(s.rows, s.columns) for s in slices}
    if len(sizes) > 1:
        raise InputError(f"input folder {folder}: its slices have different sizes {sorted(sizes)}; a series must "
                         "have one matrix size")
    spacings = np.array([s.pixel_spacing for s in slices])
    if np.abs(spacings - spacings[0]).max() > 1e-4:
        raise InputError(f"input folder {folder}: its slices have different PixelSpacing; a series must have one")
    row, column = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row, column)
    if np.linalg.norm(normal) < 0.5 or abs(float(row @ column)) > 1e-3:
        raise InputError(f"input slice {first.path} has an invalid ImageOrientationPatient (rows and columns not "
                         "perpendicular unit vectors)")
    normal = normal / np.linalg.norm(normal)
    tilts = [max(_angle_deg(s.orientation[:3], row), _angle_deg(s.orientation[3:], column)) for s in slices]
    worst = int(np.argmax(tilts))
    if tilts[worst] > PARALLEL_TOLERANCE_DEG:
        raise InputError(
            f"input folder {folder} is a DICOM series whose slices are not parallel ({slices[worst].path.name} is "
            f"tilted {tilts[worst]:.2f} degrees against {first.path.name}: a localiser or several stacks?); put "
            "each stack of parallel slices in its own folder"
        )
    ordered = sorted(slices, key=lambda s: float(s.position @ normal))
    along = np.array([float(s.position @ normal) for s in ordered])
    gaps = np.diff(along)
    median = float(np.median(gaps))
    shared = int(np.count_nonzero(gaps < max(GAP_TOLERANCE_MM, 0.01 * median)))
    if shared:
        raise InputError(
            f"input folder {folder} is a DICOM series with slices at the same position ({shared} repeated of "
            f"{len(ordered)}: several echoes, time points or stacks in one series?); put each 3D volume in its own "
            "folder"
        )
    tolerance = max(GAP_TOLERANCE_MM, GAP_TOLERANCE_FRACTION * median)
    uneven = bool(np.abs(gaps - median).max() > tolerance)
    if uneven and not resample_uneven:
        largest = int(np.argmax(np.abs(gaps - median)))
        missing = int(round(float(gaps.max()) / median)) - 1 if gaps.max() > median else 0
        hint = f" ({missing} slice{'s' if missing != 1 else ''} missing?)" if missing > 0 else ""
        raise InputError(
            f"input folder {folder} is a DICOM series of {len(ordered)} unevenly spaced slices: gaps between "
            f"slice positions range from {gaps.min():.3g} to {gaps.max():.3g} mm (at {along[largest]:.1f} mm along "
            f"the slice normal{hint}); they cannot lie on one regular grid; export the complete series (or pass "
            "--resample-uneven-slices to interpolate onto a regular grid)"
        )
    offsets = np.array([s.position - ordered[0].position for s in ordered])
    sideways = offsets - np.outer(offsets @ normal, normal)
    if np.linalg.norm(sideways, axis=1).max() > tolerance:
        raise InputError(
            f"input folder {folder} is a DICOM series whose slices are shifted sideways along the stack by up to "
            f"{np.linalg.norm(sideways, axis=1).max():.2f} mm (a tilted gantry?): the grid is sheared; resample it "
            "onto an untilted grid first (e.g. dcm2niix corrects gantry tilt)"
        )
    direction = np.column_stack([row / np.linalg.norm(row), column / np.linalg.norm(column), normal])
    if uneven:
        count = int(round(float(along[-1] - along[0]) / median)) + 1
        spacing = (first.pixel_spacing[1], first.pixel_spacing[0], median)
        grid = Grid((first.columns, first.rows, count), spacing, tuple(ordered[0].position), direction)
        return ordered, grid, along - along[0]
    # The mean gap (ends of the stack) averages out the rounding of single positions.
    spacing = (first.pixel_spacing[1], first.pixel_spacing[0], float(along[-1] - along[0]) / (len(ordered) - 1))
    grid = Grid((first.columns, first.rows, len(ordered)), spacing, tuple(ordered[0].position), direction)
    return ordered, grid, None


def scan_series(folder: str | os.PathLike, resample_uneven: bool = False) -> DicomSeries:
    """Read every slice header of the one series in ``folder`` and check its geometry (see
    :func:`check_series_geometry`)."""
    folder = Path(folder)
    files = _series_files(folder)
    read = [read_slice_header(path) for path in files]
    ordered, grid, positions = check_series_geometry(folder, [slice_ for slice_, _ in read], resample_uneven)
    first_path = ordered[0].path
    first_header = next(header for slice_, header in read if slice_.path == first_path)
    return DicomSeries(folder, ordered, grid, first_header, positions)


def resample_along_normal(stack: np.ndarray, positions: np.ndarray, count: int, spacing: float) -> np.ndarray:
    """Linear interpolation of slices ``stack[k, j, i]`` at ``positions`` (mm, increasing) onto ``count`` slices
    ``spacing`` mm apart from ``positions[0]`` (targets past the last slice take the last slice)."""
    targets = np.minimum(np.arange(count) * spacing, positions[-1])
    upper = np.clip(np.searchsorted(positions, targets, side="left"), 1, len(positions) - 1)
    lower = upper - 1
    weight = ((targets - positions[lower]) / (positions[upper] - positions[lower]))[:, None, None]
    values = stack.astype(np.float64)
    return (1.0 - weight) * values[lower] + weight * values[upper]


def read_series(folder: str | os.PathLike, resample_uneven: bool = False) -> tuple[sitk.Image, DicomSeries]:
    """Read the checked series in ``folder``: a 3D image on the grid its headers give, and the scan.

    With ``resample_uneven``, unevenly spaced slices are interpolated onto a regular grid (float32), with a
    one-line :class:`~MRISuperResLib.errors.InputWarning` saying how many slices are interpolated.

    Raises:
        InputError: see :func:`check_series_geometry`; also an unreadable slice.
    """
    series = scan_series(folder, resample_uneven)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(s.path) for s in series.slices])
    with library_output(str(series.folder)):
        image = reader.Execute()
    if series.uneven_positions is not None and image.GetNumberOfComponentsPerPixel() == 1:
        positions, spacing = series.uneven_positions, series.grid.spacing[2]
        values = resample_along_normal(sitk.GetArrayFromImage(image), positions, series.grid.shape[2], spacing)
        image = sitk.GetImageFromArray(values.astype(np.float32))
        targets = np.arange(series.grid.shape[2]) * spacing
        interpolated = int(np.count_nonzero(np.abs(targets[:, None] - positions[None, :]).min(axis=1)
                                            > max(GAP_TOLERANCE_MM, GAP_TOLERANCE_FRACTION * spacing)))
        warnings.warn(
            f"{series.folder.name}: the {len(positions)} DICOM slices are unevenly spaced (gaps "
            f"{np.diff(positions).min():.3g} to {np.diff(positions).max():.3g} mm); resampled linearly onto "
            f"{series.grid.shape[2]} slices {spacing:.3g} mm apart as --resample-uneven-slices asks: {interpolated} "
            "of them are interpolated between acquired slices, not acquired",
            InputWarning, stacklevel=3,
        )
    if image.GetDimension() == 3 and tuple(image.GetSize()) == series.grid.shape:
        image.SetOrigin(series.grid.origin)
        image.SetSpacing(series.grid.spacing)
        image.SetDirection(tuple(series.grid.direction.ravel()))
    return image, series
