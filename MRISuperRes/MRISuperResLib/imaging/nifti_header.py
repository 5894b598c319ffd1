"""NIfTI headers read as the neuroimaging tools read them: image kind, and which frame places the voxels.

A NIfTI file can carry two voxel-to-world frames: the *qform* (a rotation, voxel sizes and an offset) and the
*sform* (a general affine). FSL, nibabel, FreeSurfer and AFNI use the sform when ``sform_code > 0`` and the
qform otherwise; ITK (hence SimpleITK and this engine's reader) prefers the qform in several cases, so a file
whose two frames disagree is placed elsewhere than every other tool places it. :func:`nifti_frame` applies the
neuroimaging precedence; a frame with shear (what a 12-dof affine registration writes into the sform) cannot
be represented by an ITK grid (origin, spacing, orthonormal direction) and is refused rather than replaced by
another frame.

Frames are converted from NIfTI's RAS to the engine's LPS with :data:`.volume.LPS_TO_RAS`.
"""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .image_kind import ImageKind
from .native_output import library_output
from .volume import LPS_TO_RAS, Grid

#: Largest deviation of the direction matrix from orthonormal (``|D^T D - I|``) still taken as a rigid frame;
#: NIfTI stores its matrices as float32, and registration shears are orders of magnitude larger.
ORTHONORMAL_TOLERANCE = 1e-4

_XFORM_NAMES = {1: "scanner", 2: "aligned", 3: "Talairach", 4: "MNI152", 5: "template"}

_INTENT_NAMES = {1005: "symmetric matrix", 1006: "displacement vector", 1007: "vector", 1010: "RGB vector",
                 1011: "RGBA vector", 1012: "quaternion", 2001: "time series", 1001: "estimate", 1002: "label",
                 1004: "neuro name"}


@dataclass(frozen=True)
class NiftiFrame:
    """The frame the neuroimaging tools use for a NIfTI file.

    Attributes:
        name: ``"sform"`` or ``"qform"``.
        code: its ``sform_code`` / ``qform_code`` (1 scanner, 2 aligned, 3 Talairach, 4 MNI152, 5 template).
        ijk_to_lps: 4x4 voxel index -> LPS mm.
        disagreement_mm: largest distance between where this frame and the other coded frame put a corner voxel
            (0 when only one frame is coded).
    """

    name: str
    code: int
    ijk_to_lps: np.ndarray
    disagreement_mm: float = 0.0

    def grid(self, shape: tuple[int, int, int]) -> Grid:
        """The :class:`Grid` of this frame (only for rigid frames, see :func:`nifti_frame`)."""
        columns = self.ijk_to_lps[:3, :3]
        spacing = np.linalg.norm(columns, axis=0)
        return Grid(shape, tuple(spacing), tuple(self.ijk_to_lps[:3, 3]), columns / spacing)


def read_header(path: str | os.PathLike):  # -> nibabel Nifti1Header | Nifti2Header | None
    """The NIfTI-1 or NIfTI-2 header of ``path`` (gzip-compressed or not, whatever its name says), or ``None``
    when it is not one; only the first 540 bytes are read, so a file cut short still gives its header."""
    import nibabel

    path = Path(path)
    try:
        with open(path, "rb") as stream:
            compressed = stream.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as stream:
            head = stream.read(540)
        sizes = (int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big"))
        header_class = nibabel.Nifti2Header if 540 in sizes else nibabel.Nifti1Header
        with library_output(path.name):
            return header_class.from_fileobj(io.BytesIO(head))
    except Exception:  # not a NIfTI header (or not even 348 bytes): the reader reports it
        return None


def nifti_kind(path: str | os.PathLike) -> ImageKind | None:
    """The :class:`ImageKind` of a NIfTI file from its header (any number of axes), or ``None`` if unreadable.

    Raises:
        InputError: a NIfTI-2 file, which ITK's reader cannot read (the message says how to convert it).
    """
    header = read_header(path)
    if header is None:
        return None
    if int(header["sizeof_hdr"]) == 540:
        raise InputError(f"input {path} is a NIfTI-2 file, which the image reader (ITK) cannot read; save it as "
                         "NIfTI-1 (e.g. nibabel.Nifti1Image(img.dataobj, img.affine, img.header), or fslchfiletype)")
    dtype = header.get_data_dtype()
    is_rgb = dtype.names is not None and len(dtype.names) in (3, 4)
    intent = _INTENT_NAMES.get(int(header["intent_code"]), "")
    return ImageKind(tuple(int(n) for n in header.get_data_shape()), len(dtype.names) if is_rgb else 1,
                     str(dtype), is_complex=dtype.kind == "c", is_rgb=is_rgb, intent=intent)


def _corners(shape: tuple[int, ...]) -> np.ndarray:
    extent = [max(int(n) - 1, 0) for n in shape[:3]]
    return np.array([[i, j, k, 1.0] for i in (0, extent[0]) for j in (0, extent[1]) for k in (0, extent[2])])


def shear_degrees(ijk_to_lps: np.ndarray) -> float:
    """Largest deviation from 90 degrees between two voxel axes of a 4x4 frame (0 for a rigid frame)."""
    columns = ijk_to_lps[:3, :3] / np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    cosines = np.clip(np.abs(columns.T @ columns - np.eye(3)).max(), 0.0, 1.0)
    return float(np.degrees(np.arcsin(cosines)))


def nifti_frame(path: str | os.PathLike) -> NiftiFrame | None:
    """The frame FSL / nibabel / FreeSurfer place ``path``'s voxels with: the sform when ``sform_code > 0``, else
    the qform when ``qform_code > 0``; ``None`` when neither is coded (then ITK and the NIfTI standard's method 1,
    voxel sizes only, agree) or the header cannot be parsed.

    Raises:
        InputError: the chosen frame has shear (or zero-length axes) and so cannot be represented as a grid with
            an orthonormal direction; the message says how to resample it.
    """
    path = Path(path)
    header = read_header(path)
    if header is None:
        return None
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if sform_code > 0:
        name, code, ras = "sform", sform_code, header.get_sform()
        other = header.get_qform() if qform_code > 0 else None
    elif qform_code > 0:
        name, code, ras, other = "qform", qform_code, header.get_qform(), None
    else:
        return None
    ijk_to_lps = LPS_TO_RAS @ np.asarray(ras, dtype=np.float64)
    lengths = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    kind = _XFORM_NAMES.get(code, str(code))
    if np.any(lengths <= 0) or not np.all(np.isfinite(ijk_to_lps)):
        raise InputError(f"input {path} has a degenerate {name} ({name}_code {code}, {kind}): a voxel axis of zero "
                         "length; fix the header (e.g. with nibabel or fslorient) before enhancing")
    directions = ijk_to_lps[:3, :3] / lengths
    if np.abs(directions.T @ directions - np.eye(3)).max() > ORTHONORMAL_TOLERANCE:
        raise InputError(
            f"input {path} has a sheared {name} ({name}_code {code}, {kind}; voxel axes {shear_degrees(ijk_to_lps):.2f}"
            " degrees off square, as a 12-dof affine registration writes): a sheared grid cannot be enhanced without "
            "resampling; resample it onto a regular grid with the tool that made it (e.g. FSL flirt -applyxfm, "
            "antsApplyTransforms or mri_vol2vol) and enhance that"
        )
    disagreement = 0.0
    if other is not None:
        corners = _corners(header.get_data_shape())
        other_lps = LPS_TO_RAS @ np.asarray(other, dtype=np.float64)
        disagreement = float(np.linalg.norm((corners @ (ijk_to_lps - other_lps).T)[:, :3], axis=1).max())
    return NiftiFrame(name, code, ijk_to_lps, disagreement)
