"""Is an input file complete? Checked from its header before any voxel is read.

An interrupted copy or download leaves a file whose header is intact but whose voxel data stops early. ITK's
NIfTI reader fills what is missing with zeros without a word, so a cut ``.nii.gz`` would be enhanced as if it
were whole. Here every format's header says how many bytes of voxel data must follow, and the data is
measured: a compressed stream must reach its end marker (and pass its checksum), a raw one must be long enough.

Formats: NIfTI-1/2 (``.nii``, ``.nii.gz``), NRRD (``.nrrd`` with attached data, ``.nhdr`` with a data file; raw,
gzip and bzip2 encodings), MetaImage (``.mha``, ``.mhd``; raw or zlib-compressed). Text encodings and data split
over several files are not measured (ITK reads them and reports its own errors).
"""

from __future__ import annotations

import bz2
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..errors import InputError

_CHUNK = 1 << 22
_OUT_CHUNK = 1 << 20

_NRRD_TYPE_BYTES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
                     "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t",
                     "float"), 4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
                     "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t",
                     "double"), 8),
}

_MET_TYPE_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4, "MET_LONG": 4,
    "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}


def check_complete(path: str | os.PathLike) -> None:
    """Raise :class:`InputError` when the voxel data of ``path`` is shorter than its header says.

    Unknown formats and headers this module cannot parse pass silently: the reader then reports its own error.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        _check_nifti(path)
    elif name.endswith((".nrrd", ".nhdr")):
        _check_nrrd(path)
    elif name.endswith((".mha", ".mhd")):
        _check_metaimage(path)


def _incomplete(path: Path, expected: int, actual: int, what: str = "voxel data") -> InputError:
    return InputError(
        f"input {path} is incomplete: its header promises {expected} bytes of {what} but only {actual} are there "
        "(an interrupted copy or download?); copy the file again"
    )


def _cut_stream(path: Path, kind: str) -> InputError:
    return InputError(
        f"input {path} is cut short: its {kind} data stream ends before its end marker (an interrupted copy or "
        "download?); copy the file again"
    )


def _corrupt_stream(path: Path, kind: str, detail: str) -> InputError:
    return InputError(f"input {path} is corrupt: its {kind} data fails to decompress ({detail}); copy the file again")


def _file_chunks(path: Path, offset: int = 0) -> Iterator[bytes]:
    with open(path, "rb") as stream:
        stream.seek(offset)
        while chunk := stream.read(_CHUNK):
            yield chunk


def _feed(decompressor: object, data: bytes) -> int:
    """Decompress ``data`` in bounded pieces (a small file of zeros may inflate to gigabytes); bytes produced."""
    total = 0
    if hasattr(decompressor, "unconsumed_tail"):  # zlib
        # At the end of a stream zlib leaves the rest of the input in unused_data *and* in unconsumed_tail:
        # stop there, or a following gzip member would be fed to a finished stream forever.
        while data and not decompressor.eof:  # type: ignore[attr-defined]
            total += len(decompressor.decompress(data, _OUT_CHUNK))  # type: ignore[attr-defined]
            data = decompressor.unconsumed_tail  # type: ignore[attr-defined]
    else:  # bz2
        total += len(decompressor.decompress(data, _OUT_CHUNK))  # type: ignore[attr-defined]
        while not decompressor.eof and not decompressor.needs_input:  # type: ignore[attr-defined]
            total += len(decompressor.decompress(b"", _OUT_CHUNK))  # type: ignore[attr-defined]
    return total


def _decompressed_length(path: Path, offset: int, kind: str, make: Callable[[], object]) -> int:
    """Length of the decompressed stream starting at ``offset``; raises when it does not end properly.

    ``make`` builds a decompressor (zlib or bz2). Concatenated gzip members (allowed by the format) are followed
    one after the other; zero padding after the last one is allowed.
    """
    total = 0
    decompressor = make()
    for chunk in _file_chunks(path, offset):
        data = chunk
        while data:
            if decompressor.eof:  # type: ignore[attr-defined]
                if not data.strip(b"\0"):
                    break
                decompressor = make()
            try:
                total += _feed(decompressor, data)
            except (zlib.error, OSError, ValueError, EOFError) as error:
                raise _corrupt_stream(path, kind, str(error)[:80]) from None
            data = decompressor.unused_data if decompressor.eof else b""  # type: ignore[attr-defined]
    if not decompressor.eof:  # type: ignore[attr-defined]
        raise _cut_stream(path, kind)
    return total


def _gzip() -> object:
    return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)


def _zlib_or_gzip() -> object:
    return zlib.decompressobj(wbits=32 + zlib.MAX_WBITS)


def _check_nifti(path: Path) -> None:
    from .nifti_header import read_header

    with open(path, "rb") as stream:
        compressed = stream.read(2) == b"\x1f\x8b"  # (zlib and ITK also read an uncompressed file named .gz)
    # The stream is measured first: a cut stream can make even the header unreadable.
    actual = _decompressed_length(path, 0, "gzip", _gzip) if compressed else path.stat().st_size
    header = read_header(path)
    if header is None:  # not a NIfTI header: the reader reports it
        return
    shape = tuple(int(n) for n in header.get_data_shape())
    offset = int(header["vox_offset"])
    expected = offset + int(np.prod(shape, dtype=np.int64)) * int(header["bitpix"]) // 8
    if actual < expected:
        raise _incomplete(path, expected - offset, max(actual - offset, 0))


def _nrrd_header(path: Path) -> tuple[dict[str, str], int] | None:
    """The NRRD fields (lower-case keys) and the byte offset where attached data starts, or ``None``."""
    with open(path, "rb") as stream:
        head = stream.read(1 << 20)
    if not head.startswith(b"NRRD000"):
        return None
    fields: dict[str, str] = {}
    position = 0
    for raw_line in head.splitlines(keepends=True):
        position += len(raw_line)
        line = raw_line.decode("latin-1").rstrip("\r\n")
        if not line.strip():
            return fields, position
        if line.startswith("#") or ":=" in line:
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    return fields, len(head)  # detached header (.nhdr) without a blank line at its end


def _check_nrrd(path: Path) -> None:
    parsed = _nrrd_header(path)
    if parsed is None:
        return
    fields, offset = parsed
    type_bytes = _NRRD_TYPE_BYTES.get(fields.get("type", "").lower())
    try:
        sizes = [int(n) for n in fields.get("sizes", "").split()]
        line_skip = int(fields.get("line skip", fields.get("lineskip", "0")))
        byte_skip = int(fields.get("byte skip", fields.get("byteskip", "0")))
    except ValueError:
        return
    if type_bytes is None or not sizes or line_skip:
        return
    expected = int(np.prod(sizes, dtype=np.int64)) * type_bytes
    data_file = fields.get("data file", fields.get("datafile"))
    if data_file is not None:
        if data_file.upper().startswith("LIST") or len(data_file.split()) > 1:
            return
        data_path = path.parent / data_file
        if not data_path.is_file():
            raise InputError(f"input {path} names a data file {data_file} that is not beside it; copy it too")
        path, offset = data_path, 0
    encoding = fields.get("encoding", "raw").lower()
    if encoding == "raw":
        if byte_skip < 0:
            return
        actual = path.stat().st_size - offset - byte_skip
    elif encoding in ("gzip", "gz"):
        actual = _decompressed_length(path, offset, "gzip", _gzip) - max(byte_skip, 0)
    elif encoding in ("bzip2", "bz2"):
        actual = _decompressed_length(path, offset, "bzip2", bz2.BZ2Decompressor) - max(byte_skip, 0)
    else:
        return
    if actual < expected:
        raise _incomplete(path, expected, max(actual, 0))


def _check_metaimage(path: Path) -> None:
    with open(path, "rb") as stream:
        head = stream.read(1 << 20)
    fields: dict[str, str] = {}
    offset = None
    position = 0
    for raw_line in head.splitlines(keepends=True):
        position += len(raw_line)
        key, sep, value = raw_line.decode("latin-1").partition("=")
        if not sep:
            continue
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            offset = position
            break
    if offset is None or "ElementDataFile" not in fields:
        return
    type_bytes = _MET_TYPE_BYTES.get(fields.get("ElementType", ""))
    try:
        sizes = [int(n) for n in fields.get("DimSize", "").split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        header_size = int(fields.get("HeaderSize", "0"))
    except ValueError:
        return
    if type_bytes is None or not sizes:
        return
    expected = int(np.prod(sizes, dtype=np.int64)) * type_bytes * channels
    data_file = fields["ElementDataFile"]
    if data_file.upper() != "LOCAL":
        if data_file.upper().startswith("LIST") or "%" in data_file or len(data_file.split()) > 1:
            return
        data_path = path.parent / data_file
        if not data_path.is_file():
            raise InputError(f"input {path} names a data file {data_file} that is not beside it; copy it too")
        path, offset = data_path, 0
    if header_size < 0:
        return
    if fields.get("CompressedData", "False").lower() == "true":
        actual = _decompressed_length(path, offset + header_size, "compressed", _zlib_or_gzip)
    else:
        actual = path.stat().st_size - offset - header_size
    if actual < expected:
        raise _incomplete(path, expected, max(actual, 0))
