"""Writes that count only once they are on disk and read back as what was meant to be written.

ITK's writers do not always report a failed ``write()``: with the disk or a quota full (``ENOSPC``, ``EFBIG``)
the gzip stream of a ``.nii.gz`` is silently cut short, and ITK even reads the stub back, with the missing
slices as zeros. So every staged file is flushed to disk (``fsync``) and read back completely (header, full
decompression of the data) and compared with the voxels that were meant to be written (a ``.nii.gz`` in two halves:
the uncompressed ``.nii`` ITK wrote, as the voxels, then the ``.nii.gz`` as exactly the gzip stream compressed
from it, see :func:`read_raw_nifti` and :func:`verify_bytes`); text files are read back and compared byte for byte. Any difference is an :class:`~MRISuperResLib.errors.OutputError`, raised before anything is
renamed into place, so the run writes nothing and says why in one line.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import OutputError
from .staging import remove_stale_staging, staging_prefix


def _free_space(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown"
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if free < 1024 or unit == "TB":
            return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
        free /= 1024
    return "unknown"  # pragma: no cover


def write_failure(target: str | os.PathLike, reason: str) -> OutputError:
    """The one-line error for an output that could not be written completely (with the free space left)."""
    folder = Path(target).parent
    return OutputError(f"cannot write {target}: {reason}; nothing was written (check the free disk space and "
                       f"quota: {_free_space(folder)} free in {folder})")


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file to disk; a (staging) folder is flushed with every file below it, then its own entries.

    Raises:
        OSError: the flush of a file failed (e.g. ``EIO``, ``ENOSPC`` on a delayed-allocation file system).
    """
    path = Path(path)
    if not path.is_dir():
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return
    for child in path.iterdir():
        fsync_path(child)
    fsync_folder(path)


def fsync_folder(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (new names, renames) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems refuse fsync on folders; the files themselves were flushed
        pass
    finally:
        os.close(descriptor)


def check_finite_output(array: np.ndarray, name: str) -> None:
    """Refuse to write float voxels that are NaN or infinite.

    Raises:
        OutputError: saying how many voxels are not finite.
    """
    if np.issubdtype(array.dtype, np.floating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise OutputError(
                f"the result for {name} has {bad} NaN or infinite voxels of {array.size}; nothing was written "
                "(the input's intensity range may exceed what the engine computes in; rescale it and retry)"
            )


def verify_volume_file(path: Path, expected: sitk.Image, target: str | os.PathLike) -> None:
    """Read the file at ``path`` back completely and compare it with ``expected``, after flushing it to disk.

    Args:
        path: the staged file (a ``.mhd`` / ``.nhdr`` header reads its data file too).
        expected: the image that was written (voxels compared exactly, geometry to 1e-4 relative).
        target: the final path, for the message.

    Raises:
        OutputError: the file cannot be flushed or read, or differs from ``expected``.
    """
    try:
        for written in [path, *_detached_data(path)]:
            fsync_path(written)
        image = sitk.ReadImage(str(path))
    except (OSError, RuntimeError) as error:
        raise _unreadable(target, error, str(path.parent), str(Path(target).parent)) from None
    _compare(image, expected, target)


def read_raw_nifti(path: Path, expected: sitk.Image, target: str | os.PathLike, block: int) -> Iterator[bytes]:
    """The bytes of an uncompressed single-file NIfTI (``.nii``) just written by ITK, in blocks of ``block`` bytes,
    each checked as it is read: the header as ITK reads it (size, pixel type, geometry) against ``expected``, and
    the voxel bytes, which a ``.nii`` stores raw at its end, byte for byte against ``expected``'s buffer. No flush:
    it is an intermediate file (a ``.nii.gz`` is compressed from these blocks).

    As strict as a full ITK read and comparison (no scaling or conversion can hide a difference, and a file cut
    short or with trailing bytes misaligns the comparison) at the cost of reading the file once.

    Raises:
        OutputError: the file cannot be read, or differs from ``expected`` (raised by the iteration).
    """
    voxels = np.ascontiguousarray(sitk.GetArrayViewFromImage(expected)).reshape(-1).view(np.uint8)
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        offset = path.stat().st_size - voxels.nbytes
        stream = open(path, "rb")
    except (OSError, RuntimeError) as error:
        # The file read is an intermediate one (a hidden name): the message names the output.
        raise _unreadable(target, error, str(path), str(target)) from None
    with stream:
        if tuple(reader.GetSize()) != tuple(expected.GetSize()) or reader.GetPixelID() != expected.GetPixelID():
            raise write_failure(target, f"the written file has size {reader.GetSize()} instead of "
                                f"{expected.GetSize()}")
        _compare_geometry(reader, expected, target)
        if offset < 348:  # shorter than a NIfTI-1 header and the voxels
            raise _differs(target)
        position = 0
        while data := stream.read(block):
            # The part of this block at or after the header holds voxels [first, first + len) of the buffer.
            start = max(offset - position, 0)
            first = position + start - offset
            if start < len(data) and not np.array_equal(voxels[first:first + len(data) - start],
                                                        np.frombuffer(data, np.uint8, offset=start)):
                raise _differs(target)
            position += len(data)
            yield data
        if position != offset + voxels.nbytes:
            raise _differs(target)


def verify_bytes(path: Path, chunks: Sequence[bytes], target: str | os.PathLike) -> None:
    """Flush the file at ``path`` to disk, then read it back and compare it byte for byte with ``chunks`` (what was
    meant to be written, in order, e.g. the gzip members of a ``.nii.gz``).

    Raises:
        OutputError: the file cannot be flushed or read, or differs (cut short, corrupted, trailing data).
    """
    try:
        fsync_path(path)
        with open(path, "rb") as stream:
            same = all(stream.read(len(chunk)) == chunk for chunk in chunks) and stream.read(1) == b""
    except OSError as error:
        raise write_failure(target, f"the written file does not read back ({error.strerror or error})") from None
    if not same:
        raise _differs(target)


def verify_series_folder(folder: Path, expected: sitk.Image, target: str | os.PathLike,
                         relative_tolerance: float = 1e-4) -> None:
    """Read a staged DICOM series folder back and compare it with ``expected`` within
    ``relative_tolerance`` of its intensity range (DICOM stores rescaled integers), after flushing it to disk.

    Raises:
        OutputError: a slice is missing or unreadable, or the values differ.
    """
    try:
        fsync_path(folder)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
        image = reader.Execute()
    except (OSError, RuntimeError) as error:
        detail = str(error).strip().splitlines()[-1].replace(str(folder.parent), str(Path(target).parent))
        raise write_failure(target, f"the written series does not read back ({detail[:120]})") from None
    values = sitk.GetArrayViewFromImage(expected)
    span = float(values.max() - values.min()) if values.size else 0.0
    tolerance = relative_tolerance * span + 1e-6 * float(np.abs(values).max())
    if image.GetSize() == expected.GetSize():
        error = float(np.abs(sitk.GetArrayViewFromImage(image).astype(np.float64) - values).max())
        if error > tolerance:
            raise OutputError(f"cannot write {target}: the written DICOM series differs from the result by up to "
                              f"{error:.4g} (more than the {tolerance:.2g} its integer storage allows); nothing "
                              "was written; write a volume file (.nii.gz, .nrrd) instead")
    _compare(image, expected, target, tolerance=tolerance)


def _compare(image: sitk.Image, expected: sitk.Image, target: str | os.PathLike, tolerance: float = 0.0) -> None:
    if image.GetSize() != expected.GetSize():
        raise write_failure(target, f"the written file has size {image.GetSize()} instead of {expected.GetSize()}")
    written = sitk.GetArrayViewFromImage(image)
    meant = sitk.GetArrayViewFromImage(expected)
    if tolerance == 0.0:
        same = bool(np.array_equal(written, meant))
    else:
        same = bool(np.all(np.abs(written.astype(np.float64) - meant.astype(np.float64)) <= tolerance))
    if not same:
        raise _differs(target)
    _compare_geometry(image, expected, target)


def _differs(target: str | os.PathLike) -> OutputError:
    return write_failure(target, "the written file differs from the result (cut short or corrupted)")


def _unreadable(target: str | os.PathLike, error: BaseException, shown: str, instead: str) -> OutputError:
    """The failure for a written file the library cannot read: its last message line, ``shown`` replaced by
    ``instead`` (a staging path by the user's)."""
    detail = str(error).strip().splitlines()[-1].replace(shown, instead)
    return write_failure(target, f"the written file does not read back ({detail[:120]})")


def _compare_geometry(image: sitk.Image | sitk.ImageFileReader, expected: sitk.Image,
                      target: str | os.PathLike) -> None:
    for name in ("GetSpacing", "GetOrigin", "GetDirection"):
        got, want = np.asarray(getattr(image, name)()), np.asarray(getattr(expected, name)())
        if not np.allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max()))):
            raise write_failure(target, f"the written file's geometry ({name[3:].lower()}) differs from the result")


def _detached_data(path: Path) -> list[Path]:
    """Data files written beside a detached header in the same folder (``x.zraw``, ``x.raw.gz``, ``x.raw``)."""
    name = path.name.lower()
    if not name.endswith((".mhd", ".nhdr")):
        return []
    stem = path.name.rsplit(".", 1)[0]
    return [p for p in (path.with_name(stem + s) for s in (".zraw", ".raw", ".raw.gz")) if p.exists()]


def write_text_verified(path: Path, text: str, target: str | os.PathLike) -> None:
    """Write ``text`` (UTF-8) to ``path``, flush it to disk and read it back.

    Raises:
        OutputError: the write, the flush or the comparison failed (e.g. disk full, quota reached).
    """
    data = text.encode("utf-8")
    try:
        with open(path, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        if path.read_bytes() != data:
            raise write_failure(target, "the written file differs from what was meant (cut short)")
    except OSError as error:
        raise write_failure(target, error.strerror or type(error).__name__) from None


def verify_png(path: Path, target: str | os.PathLike) -> None:
    """Flush a written PNG to disk and decode it completely.

    Raises:
        OutputError: the file is missing, cut short or not a PNG.
    """
    try:
        fsync_path(path)
        from PIL import Image

        with Image.open(path) as image:
            image.load()
    except Exception as error:  # PIL raises OSError, SyntaxError or ValueError for a broken file
        raise write_failure(target, f"the written figure does not read back ({str(error)[:80]})") from None


def _umask() -> int:
    """The process's file-creation mask (read by setting it, then putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def replace_text_file(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (staged beside it, flushed, read back, renamed into place),
    replacing an existing file.

    Raises:
        OutputError: the folder is missing or the write failed (nothing is left behind then).
    """
    import tempfile

    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist; create it first")
    remove_stale_staging(folder)
    descriptor, staged_name = tempfile.mkstemp(prefix=staging_prefix(), dir=folder)
    os.close(descriptor)
    staged = Path(staged_name)
    try:
        # mkstemp makes the file private (0600); the result gets the mode any new file of the user gets, or keeps
        # the mode of the file it replaces.
        staged.chmod(path.stat().st_mode & 0o7777 if path.is_file() else 0o666 & ~_umask())
        write_text_verified(staged, text, path)
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
    fsync_folder(folder)
    return path
