"""Reading and writing volumes through SimpleITK, keeping geometry exactly.

Formats: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``, ``.mhd``) and a
folder holding one DICOM series (read and write; series geometry in :mod:`.dicom_io`, the derived series written
by :mod:`.dicom_write`). Every input is checked before its voxels are used (see :func:`read_volume`). Writes are atomic: files are written into a hidden
temporary folder beside the target and renamed into place, so an interrupted run leaves no partial output.
Arrays are converted between SimpleITK's ``[k, j, i]`` view and the engine's ``[i, j, k]`` order here only.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import dicom_io
from ..errors import InputError, InputWarning, OutputError
from .file_integrity import check_complete
from .image_kind import kind_of_sitk_info, refusal
from .native_output import library_output
from .nifti_header import NiftiFrame, nifti_frame, nifti_kind
from .staging import remove_stale_staging, staging_prefix
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
    return dicom_io.series_ids(folder)


def read_volume(path: str | os.PathLike, *, resample_uneven_slices: bool = False) -> Volume:
    """Read a scalar 3D volume from a file or a DICOM series folder.

    With ``resample_uneven_slices``, a DICOM series with missing or unevenly spaced (but parallel) slices is
    interpolated linearly onto a regular grid with a one-line :class:`~MRISuperResLib.errors.InputWarning` instead of refused.

    Before any voxel is used: a file must be complete (:mod:`.file_integrity`), must hold a scalar 3D volume
    (:mod:`.image_kind` names what else it holds), a NIfTI file is placed by the frame the neuroimaging tools use
    (:mod:`.nifti_header`), and a DICOM series must have parallel, evenly spaced slices (:mod:`.dicom_io`).
    What ITK prints meanwhile becomes one-line warnings (:mod:`.native_output`).

    Raises:
        InputError: missing, incomplete or unreadable path; not a scalar 3D volume (2D, 4D, 5D, vector, RGB,
            complex); a sheared NIfTI frame; an uneven or non-parallel DICOM series; non-finite voxels.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input {path} does not exist; check the path")
    is_nifti = volume_extension(path) in (".nii", ".nii.gz")
    frame = None
    try:
        if path.is_dir():
            image, _series = dicom_io.read_series(path, resample_uneven=resample_uneven_slices)
        else:
            check_complete(path)
            _check_kind(path, is_nifti)
            if is_nifti:
                frame = nifti_frame(path)
            with library_output(path.name):
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
    if frame is not None:
        _place_by_frame(image, frame, path)
    volume = from_sitk(image)
    check_finite(volume, str(path))
    if is_nifti and np.issubdtype(volume.array.dtype, np.floating):
        _check_nifti_finite(path)
    return volume


def _check_kind(path: Path, is_nifti: bool) -> None:
    kind = nifti_kind(path) if is_nifti else None
    if kind is None:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        with library_output(path.name):
            reader.ReadImageInformation()
        kind = kind_of_sitk_info(reader.GetSize(), reader.GetNumberOfComponents(),
                                 sitk.GetPixelIDValueAsString(reader.GetPixelID()))
    why = refusal(kind)
    if why is not None:
        raise InputError(f"input {path} {why}")


def _place_by_frame(image: sitk.Image, frame: NiftiFrame, path: Path) -> None:
    """Put ``image`` where ``frame`` says (ITK may have used the other NIfTI frame)."""
    grid = frame.grid(tuple(image.GetSize()))
    itk_lps = Grid(image.GetSize(), image.GetSpacing(), image.GetOrigin(),
                   np.asarray(image.GetDirection()).reshape(3, 3)).ijk_to_lps()
    corners = np.array([[i, j, k, 1.0] for i in (0, grid.shape[0] - 1) for j in (0, grid.shape[1] - 1)
                        for k in (0, grid.shape[2] - 1)])
    moved = float(np.linalg.norm((corners @ (itk_lps - frame.ijk_to_lps).T)[:, :3], axis=1).max())
    if moved > 1e-3:
        image.SetOrigin(grid.origin)
        image.SetSpacing(grid.spacing)
        image.SetDirection(tuple(grid.direction.ravel()))
    if frame.disagreement_mm > 0.01:
        warnings.warn(
            f"{path.name}: its sform and qform disagree by up to {frame.disagreement_mm:.1f} mm; placed by the sform "
            "(sform_code > 0), as FSL, nibabel and FreeSurfer do",
            InputWarning, stacklevel=3,
        )


def _check_nifti_finite(path: Path) -> None:
    # ITK's NIfTI reader silently turns NaN and infinite voxels into 0, so look at the stored values themselves.
    import nibabel

    with library_output(path.name):
        stored = np.asanyarray(nibabel.load(str(path)).dataobj.get_unscaled())
    if np.issubdtype(stored.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(stored)))
        if bad:
            raise InputError(
                f"input {path} has {bad} NaN or infinite voxels; replace them (e.g. with 0) before enhancing"
            )


def _as_scalar_3d(image: sitk.Image, path: Path) -> sitk.Image:
    """Drop singleton time / component axes; refuse (naming the kind) anything but a scalar 3D volume."""
    kind = kind_of_sitk_info(image.GetSize(), image.GetNumberOfComponentsPerPixel(), image.GetPixelIDTypeAsString())
    why = refusal(kind)
    if why is not None:
        raise InputError(f"input {path} {why}")
    while image.GetDimension() > 3:
        index = [0] * image.GetDimension()
        size = list(image.GetSize())
        size[-1] = 0  # extract collapses axes of size 0
        image = sitk.Extract(image, size, index)
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
    image = sitk.GetImageFromArray(reversed_axes(values))
    image.SetSpacing(volume.grid.spacing)
    image.SetOrigin(volume.grid.origin)
    image.SetDirection(tuple(volume.grid.direction.ravel()))
    return image


def reversed_axes(array: np.ndarray, block: int = 16) -> np.ndarray:
    """``array[i, j, k]`` as a C-contiguous ``[k, j, i]`` array (ITK's memory order: ``i`` fastest).

    Copied in ``block``-sized tiles of ``i`` and ``k``: a plain strided copy of a 256^3 volume reads memory
    with a 1 MB stride and runs about three times slower.
    """
    if array.ndim != 3 or array.flags.f_contiguous:
        return np.ascontiguousarray(array.transpose(tuple(reversed(range(array.ndim)))))
    out = np.empty(array.shape[::-1], dtype=array.dtype)
    for i in range(0, array.shape[0], block):
        for k in range(0, array.shape[2], block):
            out[k:k + block, :, i:i + block] = array[i:i + block, :, k:k + block].transpose(2, 1, 0)
    return out


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
    same file system, so a killed or interrupted run never leaves a partial file at the target path. What a
    killed run's staging left in ``target_folder`` is removed first (:mod:`.staging`).
    """
    remove_stale_staging(target_folder)
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(), dir=target_folder))
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
    dicom_source: dicom_io.DicomSeries | None = None,
) -> Path:
    """Write ``volume`` atomically to a volume file, or to a new folder as a DICOM series.

    Args:
        volume: the voxels and geometry to write; ``volume.metadata`` becomes NRRD/MetaImage key-values.
        path: target file (format from its extension) or a folder path without extension for DICOM.
        overwrite: replace an existing target instead of refusing.
        description: short text for the NIfTI ``descrip`` field (79 characters kept) and DICOM SeriesDescription.
        compress: compress the data where the format allows.
        dicom_source: for a DICOM output, the source series (from :func:`.dicom_io.scan_series`) whose patient
            and study the result joins as a derived series.

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
        stage_volume(volume, staging, path.name, description=description, compress=compress,
                     dicom_source=dicom_source)
        commit_staged({path.parent: staging}, overwrite)
    return path


def stage_volume(
    volume: Volume, staging: Path, name: str, *, description: str = "", compress: bool = True,
    dicom_source: dicom_io.DicomSeries | None = None,
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
        # DICOM readers stack slices along row x column; a left-handed grid would read back mirrored along k, so
        # the series stores the same voxels in the same places on the right-handed grid.
        volume = right_handed(volume)
        series_folder = staging / name
        series_folder.mkdir()
        try:
            if dicom_source is None:
                write_dicom_series(volume, series_folder, description=description)
            else:
                write_dicom_series(volume, series_folder, description=description, source=dicom_source)
        except (OSError, RuntimeError) as error:
            raise write_failure(target, _scrubbed(error, staging)) from None
        verify_series_folder(series_folder, to_sitk(volume), target)
        return
    image = to_sitk(volume)
    for key, value in volume.metadata.items():
        image.SetMetaData(key, value)
    if description:
        image.SetMetaData(_NIFTI_DESCRIPTION_KEY, description[:79])
    # What ITK prints while writing (e.g. "NWAD: wrote only ... bytes" on a full disk) becomes at most a one-line
    # warning, and nothing when the write then fails: the error is the one line the user sees.
    with library_output(name):
        try:
            if compress and name.lower().endswith(".nii.gz"):
                _write_nifti_gz(image, staging / name, target)  # verified as it is written
                return
            sitk.WriteImage(image, str(staging / name), useCompression=compress, compressionLevel=GZIP_LEVEL)
        except RuntimeError as error:
            raise write_failure(target, _scrubbed(error, staging)) from None
        except OSError as error:  # our own gzip writer: a full disk or quota raises here
            raise write_failure(target, error.strerror or str(error)) from None
        verify_volume_file(staging / name, image, target)


def right_handed(volume: Volume) -> Volume:
    """``volume`` on a right-handed grid (``det(direction) > 0``): a left-handed one is flipped along ``k``, with
    the origin moved to its last slice and the ``k`` direction reversed, so every voxel keeps its LPS position."""
    grid = volume.grid
    direction = np.asarray(grid.direction, dtype=np.float64)
    if np.linalg.det(direction) > 0:
        return volume
    last = grid.physical_points(np.array([0.0, 0.0, float(grid.shape[2] - 1)]))
    flipped = direction.copy()
    flipped[:, 2] *= -1
    new_grid = Grid(grid.shape, grid.spacing, tuple(float(v) for v in np.ravel(last)), flipped)
    return Volume(np.ascontiguousarray(volume.array[:, :, ::-1]), new_grid, dict(volume.metadata))


def _scrubbed(error: BaseException, staging: Path) -> str:
    """The last line of a writer's error, with the hidden staging folder replaced by the target folder."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()] or [type(error).__name__]
    return lines[-1].replace(str(staging), str(staging.parent)).strip()[:160]


#: Compression level of compressed outputs. Float32 volumes compress to about 87 % whatever the level, and level 1
#: takes about a third of the time of zlib's default (6): writing a 256^3 result should not cost seconds for 1 %.
GZIP_LEVEL = 1


def _write_nifti_gz(image: sitk.Image, target: Path, final: str | os.PathLike) -> None:
    """Write ``image`` as ``target`` (a staged ``.nii.gz``) and verify it; ``final`` names it in messages.

    Raises:
        OutputError: the file does not read back as ``image`` (cut short, corrupted).
        OSError, RuntimeError: writing failed.
    """
    from .verified_write import read_raw_nifti, verify_bytes

    # ITK's NIfTI writer ignores the compression level; a .nii.gz is the gzip stream of the .nii, so write the
    # .nii and compress it here at GZIP_LEVEL, in blocks compressed in parallel (ISA-L and zlib release the GIL)
    # and stored as consecutive gzip members, which every gzip reader (zlib's gzread in ITK, Python's gzip,
    # nibabel) reads as one stream (RFC 1952, 2.2).
    plain = target.with_name(f".{target.name[:-7]}-uncompressed.nii")  # name without .nii.gz
    try:
        sitk.WriteImage(image, str(plain), useCompression=False)
        # Verified in two halves that together read everything back: the .nii as the image while it is read for
        # compression (its voxels are stored raw, so a byte comparison), then the .nii.gz as exactly the gzip
        # stream compressed from it. ITK's single-threaded inflate and read of the whole .nii.gz took as long as
        # writing it.
        with open(target, "wb") as packed:
            members = []
            with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
                for member in pool.map(_gzip_member, read_raw_nifti(plain, image, final, _GZIP_BLOCK)):
                    packed.write(member)
                    members.append(member)
        verify_bytes(target, members, final)
    finally:
        plain.unlink(missing_ok=True)


#: Bytes of uncompressed data per gzip member of a .nii.gz output.
_GZIP_BLOCK = 8 << 20


def _gzip_member(block: bytes) -> bytes:
    # Intel's ISA-L (python-isal) writes the same gzip format about ten times faster than zlib at level 1 with
    # the same size; zlib when it is not installed (it is a dependency, but Slicer installs packages on first use).
    try:
        from isal import igzip
    except ImportError:
        return gzip.compress(block, compresslevel=GZIP_LEVEL, mtime=0)
    return igzip.compress(block, compresslevel=GZIP_LEVEL, mtime=0)


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


def write_dicom_series(volume: Volume, folder: Path, description: str = "", source: dicom_io.DicomSeries | None = None
                       ) -> None:
    """Write ``volume`` as a derived DICOM MR series into an existing empty ``folder`` (see :mod:`.dicom_write`)."""
    from .dicom_write import write_dicom_series as write_series

    write_series(volume, folder, description=description, source=source)
