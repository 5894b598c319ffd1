"""Reading and writing volumes through SimpleITK, keeping geometry exactly.

Formats: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``, ``.mhd``) and a
folder holding one DICOM series (read and write). Writes are atomic: files are written into a hidden
temporary folder beside the target and renamed into place, so an interrupted run leaves no partial output.
Arrays are converted between SimpleITK's ``[k, j, i]`` view and the engine's ``[i, j, k]`` order here only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError, OutputError
from .volume import Grid, Volume

VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: SimpleITK metadata key that NIfTI writes into its 80-character ``descrip`` field.
_NIFTI_DESCRIPTION_KEY = "ITK_FileNotes"


def volume_extension(path: str | os.PathLike) -> str:
    """The volume-format extension of ``path`` (``".nii.gz"``, ``".nrrd"`` ...) or ``""`` when it has none."""
    name = Path(path).name.lower()
    return next((ext for ext in VOLUME_EXTENSIONS if name.endswith(ext)), "")


def strip_volume_extension(path: str | os.PathLike) -> str:
    """File name of ``path`` without its volume extension (``"a.nii.gz"`` -> ``"a"``)."""
    name = Path(path).name
    ext = volume_extension(name)
    return name[: len(name) - len(ext)] if ext else name


def dicom_series_ids(folder: str | os.PathLike) -> tuple[str, ...]:
    """The DICOM series instance UIDs found directly in ``folder`` (empty when none)."""
    return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ())


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a scalar 3D volume from a file or a DICOM series folder.

    Raises:
        InputError: missing or unreadable path, 2D, 4D or vector images, or non-finite voxels.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input {path} does not exist; check the path")
    try:
        if path.is_dir():
            image = _read_dicom_series(path)
        else:
            image = sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as error:
        reason = str(error).strip().splitlines()
        detail = next((line for line in reversed(reason) if line.strip()), "unknown reason")
        raise InputError(
            f"cannot read {path}: not a readable NIfTI, NRRD, MetaImage or DICOM volume ({detail.strip()[:120]})"
        ) from None
    image = _as_scalar_3d(image, path)
    volume = from_sitk(image)
    check_finite(volume, str(path))
    if volume_extension(path) in (".nii", ".nii.gz") and np.issubdtype(volume.array.dtype, np.floating):
        _check_nifti_finite(path)
    return volume


def _check_nifti_finite(path: Path) -> None:
    # ITK's NIfTI reader silently turns NaN and infinite voxels into 0, so look at the stored values themselves.
    import nibabel

    stored = np.asanyarray(nibabel.load(str(path)).dataobj.get_unscaled())
    if np.issubdtype(stored.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(stored)))
        if bad:
            raise InputError(
                f"input {path} has {bad} NaN or infinite voxels; replace them (e.g. with 0) before enhancing"
            )


def _read_dicom_series(folder: Path) -> sitk.Image:
    series = dicom_series_ids(folder)
    if not series:
        raise InputError(f"input folder {folder} holds no DICOM series; give a volume file or a DICOM series folder")
    if len(series) > 1:
        raise InputError(
            f"input folder {folder} holds {len(series)} DICOM series; put each series in its own folder"
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
    return reader.Execute()


def _as_scalar_3d(image: sitk.Image, path: Path) -> sitk.Image:
    components = image.GetNumberOfComponentsPerPixel()
    if components > 1:
        raise InputError(
            f"input {path} is a vector image with {components} components per voxel (e.g. RGB or a tensor); "
            "give a single scalar volume"
        )
    size = image.GetSize()
    if image.GetDimension() == 4:
        if size[3] != 1:
            raise InputError(
                f"input {path} is a 4D image with {size[3]} volumes; extract one 3D volume first"
            )
        image = image[:, :, :, 0]
        size = image.GetSize()
    if image.GetDimension() == 2 or min(size) < 2:
        raise InputError(
            f"input {path} is a 2D image (size {'x'.join(map(str, size))}); give a 3D volume with at least 2 voxels "
            "along every axis"
        )
    if image.GetDimension() != 3:
        raise InputError(f"input {path} has {image.GetDimension()} dimensions; give a 3D volume")
    return image


def check_finite(volume: Volume, name: str) -> None:
    """Raise :class:`InputError` when ``volume`` has NaN or infinite voxels (saying how many)."""
    if np.issubdtype(volume.array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(volume.array)))
        if bad:
            raise InputError(
                f"input {name} has {bad} NaN or infinite voxels; replace them (e.g. with 0) before enhancing"
            )


def from_sitk(image: sitk.Image) -> Volume:
    """Convert a 3D scalar SimpleITK image to a :class:`Volume` (copies the voxels)."""
    array = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    grid = Grid(
        shape=image.GetSize(),
        spacing=image.GetSpacing(),
        origin=image.GetOrigin(),
        direction=np.asarray(image.GetDirection()).reshape(3, 3),
    )
    metadata = {key: image.GetMetaData(key) for key in image.GetMetaDataKeys()}
    return Volume(array, grid, metadata)


def to_sitk(volume: Volume, array: np.ndarray | None = None) -> sitk.Image:
    """Convert a :class:`Volume` (or other voxels on its grid) to a SimpleITK image with its geometry."""
    values = volume.array if array is None else array
    image = sitk.GetImageFromArray(np.ascontiguousarray(values.transpose(2, 1, 0)))
    image.SetSpacing(volume.grid.spacing)
    image.SetOrigin(volume.grid.origin)
    image.SetDirection(tuple(volume.grid.direction.ravel()))
    return image


def grid_to_sitk_reference(grid: Grid) -> sitk.Image:
    """An empty SimpleITK image with ``grid``'s geometry, as a resampling reference."""
    image = sitk.Image([int(n) for n in grid.shape], sitk.sitkUInt8)
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(tuple(grid.direction.ravel()))
    return image


def check_writable_target(path: str | os.PathLike, overwrite: bool, volume_format: bool = True) -> None:
    """Raise :class:`OutputError` unless ``path`` can be created (or replaced when ``overwrite``).

    With ``volume_format``, the path must also name a known volume format, or be a folder path without
    extension (a DICOM series to create).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"output {path} already exists; choose another name or pass --overwrite")
    if volume_format and volume_extension(path) and path.is_dir():
        raise OutputError(f"output {path} is a folder; give a file name (a DICOM series takes a name without "
                          "extension)")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {folder} is not writable; choose a folder you can write to")
    if volume_format and not volume_extension(path) and path.suffix:
        raise OutputError(
            f"output {path} has an unknown extension; use .nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd, "
            "or a folder name without extension for a DICOM series"
        )
    if path.is_dir() and any(p.suffix.lower() != ".dcm" for p in path.iterdir()):
        raise OutputError(f"output {path} is a folder with other files in it; choose a new folder for DICOM")


@contextlib.contextmanager
def staging_folder(target_folder: Path) -> Iterator[Path]:
    """A hidden temporary folder inside ``target_folder`` that is removed however the block ends.

    Files are written there under their final names and then renamed into place: the rename is atomic on the
    same file system, so a killed or interrupted run never leaves a partial file at the target path.
    """
    staging = Path(tempfile.mkdtemp(prefix=".mrisuperres-partial-", dir=target_folder))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_volume(
    volume: Volume,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    description: str = "",
    compress: bool = True,
) -> Path:
    """Write ``volume`` atomically to a volume file, or to a new folder as a DICOM series.

    Args:
        volume: the voxels and geometry to write; ``volume.metadata`` becomes NRRD/MetaImage key-values.
        path: target file (format from its extension) or a folder path without extension for DICOM.
        overwrite: replace an existing target instead of refusing.
        description: short text for the NIfTI ``descrip`` field (79 characters kept) and DICOM SeriesDescription.
        compress: compress the data where the format allows.

    Returns:
        The written path: ``path`` with its volume extension in lower case (``SR.NII.GZ`` -> ``SR.nii.gz``).

    Raises:
        OutputError: the target is refused (see :func:`check_writable_target`), or the file could not be written
            completely (disk full, quota); nothing is left behind then.
    """
    from .output_paths import written_path

    path = written_path(path)
    check_writable_target(path, overwrite)
    with staging_folder(path.parent) as staging:
        stage_volume(volume, staging, path.name, description=description, compress=compress)
        commit_staged({path.parent: staging}, overwrite)
    return path


def stage_volume(
    volume: Volume, staging: Path, name: str, *, description: str = "", compress: bool = True
) -> None:
    """Write ``volume`` under its final ``name`` into a staging folder (see :func:`staging_folder`), then flush
    it to disk and read it back completely: a file cut short (disk full, quota) never counts as written.

    ``name`` must already be the name to write (see :func:`.output_paths.written_path`).

    Raises:
        OutputError: non-finite voxels, or the write failed or does not read back as ``volume``.
    """
    from .verified_write import check_finite_output, verify_series_folder, verify_volume_file, write_failure

    target = staging.parent / name
    check_finite_output(volume.array, name)
    if not volume_extension(name):
        series_folder = staging / name
        series_folder.mkdir()
        try:
            write_dicom_series(volume, series_folder, description=description)
        except (OSError, RuntimeError) as error:
            raise write_failure(target, _scrubbed(error, staging)) from None
        verify_series_folder(series_folder, to_sitk(volume), target)
        return
    image = to_sitk(volume)
    for key, value in volume.metadata.items():
        image.SetMetaData(key, value)
    if description:
        image.SetMetaData(_NIFTI_DESCRIPTION_KEY, description[:79])
    try:
        sitk.WriteImage(image, str(staging / name), useCompression=compress)
    except RuntimeError as error:
        raise write_failure(target, _scrubbed(error, staging)) from None
    verify_volume_file(staging / name, image, target)


def _scrubbed(error: BaseException, staging: Path) -> str:
    """The last line of a writer's error, with the hidden staging folder replaced by the target folder."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()] or [type(error).__name__]
    return lines[-1].replace(str(staging), str(staging.parent)).strip()[:160]


def commit_staged(staged_folders: dict[Path, Path], overwrite: bool) -> None:
    """Move everything staged into its target folder by atomic renames, after checking every target.

    Args:
        staged_folders: target folder -> staging folder holding files under their final names.
        overwrite: replace existing targets; otherwise an existing target anywhere stops everything first.

    Data files (``.raw``/``.gz`` beside ``.mhd``/``.nhdr`` headers) go first and headers and sidecars last, so a
    header never points at missing data. A file being replaced is first moved aside into the staging folder (and
    removed with it); if any rename fails or is interrupted, the renames done so far are undone and the earlier
    files put back, so the targets are left as they were.

    Raises:
        OutputError: a target exists without ``overwrite``, or a rename failed (everything undone).
    """
    moves = []
    for folder, staging in staged_folders.items():
        items = sorted(staging.iterdir(), key=lambda p: (volume_extension(p) != "" or p.suffix == ".json", p.name))
        moves += [(item, folder / item.name) for item in items]
    for _item, target in moves:
        if target.exists() and not overwrite:
            raise OutputError(f"output {target} already exists; choose another name or pass --overwrite")
    done: list[tuple[Path, Path, Path | None]] = []
    try:
        for item, target in moves:
            earlier = None
            if target.exists() or target.is_symlink():
                earlier = item.with_name(f".earlier-{uuid.uuid4().hex}")
                os.replace(target, earlier)
            try:
                os.replace(item, target)
            except BaseException:
                if earlier is not None:
                    os.replace(earlier, target)
                raise
            done.append((item, target, earlier))
    except BaseException as error:
        for item, target, earlier in reversed(done):
            with contextlib.suppress(OSError):
                os.replace(target, item)
                if earlier is not None:
                    os.replace(earlier, target)
        if isinstance(error, OSError):
            raise OutputError(f"cannot move the outputs into place ({error.strerror or error}); nothing was "
                              "changed") from None
        raise
    from .verified_write import fsync_folder

    for folder in staged_folders:
        fsync_folder(folder)  # the renames themselves are on disk only once the folder's entries are


def write_dicom_series(volume: Volume, folder: Path, description: str = "") -> None:
    """Write ``volume`` as a DICOM MR series (one file per ``k`` slice) into an existing empty ``folder``.

    Integer voxels within int16 are stored as they are; other voxels as int16 with RescaleSlope/Intercept
    chosen so that values are kept to within ``range / 60000`` (``range / 128000`` for ranges over a few hundred).
    Geometry goes into ImagePositionPatient / ImageOrientationPatient / PixelSpacing.
    """
    values = volume.array.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    is_integer = np.issubdtype(volume.array.dtype, np.integer) and low >= -32768 and high <= 32767
    if is_integer:
        stored = volume.array.astype(np.int16)
        rescale_tags: dict[str, str] = {}
    else:
        # GDCM turns float voxels into int16 with these rescale tags (intercept must be a whole number).
        # The rounded intercept moves the stored range off centre by up to half a unit: size the slope for the
        # larger side, or small ranges (< ~120) overflow int16.
        intercept = float(np.rint((low + high) / 2.0))
        slope = max(high - intercept, intercept - low, 0.0) / 32000.0 or 1e-6
        stored = values.astype(np.float32)
        rescale_tags = {
            "0028|1053": f"{slope:.10g}",
            "0028|1052": f"{intercept:.10g}",
            "0028|0100": "16",
            "0028|0101": "16",
            "0028|0102": "15",
            "0028|0103": "1",
        }
    image = to_sitk(volume, stored)
    direction = volume.grid.direction
    series_uid = f"2.25.{uuid.uuid4().int}"
    study_uid = f"2.25.{uuid.uuid4().int}"
    orientation = "\\".join(f"{v:.10g}" for v in (*direction[:, 0], *direction[:, 1]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.grid.shape[2]):
        slice_image = image[:, :, k]
        position = volume.grid.physical_points(np.array([0.0, 0.0, float(k)]))
        tags = {
            "0008|0060": "MR",
            "0008|103e": description[:64],
            "0020|000d": study_uid,
            "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.10g}" for v in position),
            "0020|0037": orientation,
            "0028|0030": f"{volume.grid.spacing[1]:.10g}\\{volume.grid.spacing[0]:.10g}",
            "0018|0050": f"{volume.grid.spacing[2]:.10g}",
            **rescale_tags,
        }
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k:04d}.dcm"))
        writer.Execute(slice_image)
