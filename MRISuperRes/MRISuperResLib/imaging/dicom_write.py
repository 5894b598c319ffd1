"""Writing a result as a derived DICOM series that can go back to the PACS beside its source.

Storage class: **MR Image Storage** (single-frame, ``1.2.840.10008.5.1.4.1.1.4``), one file per ``k`` slice, Explicit
VR Little Endian. It is the class every viewer and PACS accepts for MR slices and, unlike Secondary Capture, it
requires the Image Plane module (ImagePositionPatient, ImageOrientationPatient, PixelSpacing), so viewers
overlay, fuse and reformat the result with its source in the same Frame of Reference. Enhanced MR (multi-frame)
is still refused or flattened by many archives. The image is marked as not acquired: ImageType
``DERIVED\\SECONDARY``, DerivationDescription, ImageComments, a SeriesDescription within 64 characters that starts
with "AI" and keeps the model name, and the full provenance in a private block (creator ``MRISuperRes``,
group 0x0071) and in the ContributingEquipmentSequence.

With a source series (:class:`.dicom_io.DicomSeries`) the result belongs to the same patient and study:
Patient and General Study attributes, the Frame of Reference and the MR acquisition attributes are copied, the
series gets a new SeriesInstanceUID, and every slice lists the source slices it was computed from in its
SourceImageSequence (the source series is named in ReferencedSeriesSequence as well). Without one (a NIfTI
input) a new study is made, with empty patient attributes.

Voxels: integers that fit int16 (or uint16) are stored as they are; anything else as int16 with
RescaleSlope/RescaleIntercept (error at most ``range / 130000``).
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .provenance import AI_NOTICE, KEY_PREFIX
from ..version import __version__
from .volume import Volume

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
PRIVATE_GROUP = 0x0071
PRIVATE_CREATOR = "MRISuperRes"

#: Copied from the source's first slice when present (Patient, General Study, Frame of Reference, MR acquisition).
COPIED_ATTRIBUTES = (
    "SpecificCharacterSet",
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientSize",
    "PatientWeight", "OtherPatientIDsSequence", "PatientComments",
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
    "StudyDescription", "IssuerOfAccessionNumberSequence",
    "FrameOfReferenceUID", "PositionReferenceIndicator",
    "BodyPartExamined", "PatientPosition", "Laterality",
    "ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "SequenceName", "RepetitionTime",
    "EchoTime", "InversionTime", "EchoTrainLength", "MagneticFieldStrength", "ImagedNucleus", "ImagingFrequency",
    "FlipAngle", "NumberOfAverages",
)

#: Attributes of the MR Image module that must be present (Type 1 or 2) even without a DICOM source.
_MR_DEFAULTS = {"ScanningSequence": "RM", "SequenceVariant": "NONE", "ScanOptions": "", "MRAcquisitionType": "3D",
                "EchoTime": None, "EchoTrainLength": None, "RepetitionTime": None, "PatientPosition": "",
                "Laterality": ""}

_ROLE_WORDS = {
    "super-resolved": "AI-enhanced",
    "baseline": "B-spline interpolated",
    "difference": "AI difference (SR-spline)",
    "consistency": "AI consistency map",
    "uncertainty": "AI uncertainty map",
}


def provenance_of(volume: Volume) -> dict[str, str]:
    """The ``MRISuperRes.*`` provenance in ``volume.metadata`` without its prefix (empty when none)."""
    return {key[len(KEY_PREFIX):]: value for key, value in volume.metadata.items() if key.startswith(KEY_PREFIX)}


def series_description(provenance: dict[str, str], fallback: str = "") -> str:
    """SeriesDescription of at most 64 characters: what the series is, the scale and the model name.

    ``"AI-enhanced x2 edsr3d-x2-brain"``; a model name too long for the field keeps its start and ends in ``~``
    (the full name is in DerivationDescription and the private block). Without provenance: ``fallback[:64]``.
    """
    if not provenance:
        return fallback[:64]
    head = f"{_ROLE_WORDS.get(provenance.get('role', ''), 'AI-generated')} x{provenance.get('scale', '?')} "
    model = provenance.get("model", "")
    room = 64 - len(head)
    if len(model) > room:
        model = model[: room - 1] + "~"
    return (head + model).strip()


def _ds(value: float) -> Any:
    from pydicom.valuerep import DSfloat

    return DSfloat(float(value), auto_format=True)


def _stored_values(array: np.ndarray) -> tuple[np.ndarray, float | None, float | None]:
    """Pixel values for PixelData and the RescaleSlope / RescaleIntercept to restore them (``None``: none)."""
    if np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_):
        low, high = int(array.min()), int(array.max())
        if -32768 <= low and high <= 32767:
            return array.astype(np.int16), None, None
        if 0 <= low and high <= 65535:
            return array.astype(np.uint16), None, None
    values = array.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    slope = (high - low) / 65000.0 if high > low else 1.0
    intercept = (high + low) / 2.0
    stored = np.clip(np.rint((values - intercept) / slope), -32768, 32767).astype(np.int16)
    return stored, slope, intercept


def _window(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [1.0, 99.0]) if values.size else (0.0, 1.0)
    width = max(float(high - low), 1e-6)
    return float(low + high) / 2.0, width


def _code_item(value: str, meaning: str) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def _contributing_equipment(source_header: Any, provenance: dict[str, str], now: _dt.datetime) -> list[Any]:
    from pydicom.dataset import Dataset

    items = []
    if source_header is not None:
        scanner = Dataset()
        scanner.PurposeOfReferenceCodeSequence = [_code_item("109101", "Acquisition Equipment")]
        scanner.Manufacturer = str(source_header.get("Manufacturer", ""))
        for keyword in ("InstitutionName", "StationName", "ManufacturerModelName", "DeviceSerialNumber",
                        "SoftwareVersions"):
            if keyword in source_header:
                setattr(scanner, keyword, source_header.get(keyword))
        items.append(scanner)
    software = Dataset()
    software.PurposeOfReferenceCodeSequence = [_code_item("109102", "Processing Equipment")]
    software.Manufacturer = "MRISuperRes"
    software.ManufacturerModelName = provenance.get("model", "")[:64]
    software.SoftwareVersions = f"MRISuperRes {__version__}"[:64]
    software.ContributionDateTime = now.strftime("%Y%m%d%H%M%S")
    software.ContributionDescription = _derivation_text(provenance)[:1024]
    items.append(software)
    return items


def _derivation_text(provenance: dict[str, str]) -> str:
    if not provenance:
        return "Derived by MRISuperRes"
    return (f"{provenance.get('notice', AI_NOTICE)}: MRISuperRes {provenance.get('engine_version', __version__)} "
            f"{provenance.get('role', '')} x{provenance.get('scale', '')} with model {provenance.get('model', '')} "
            f"(version {provenance.get('model_version', '')}, family {provenance.get('model_family', '')}, "
            f"sha256 {provenance.get('model_sha256', '')}) on {provenance.get('device', '')} at "
            f"{provenance.get('date', '')} from {provenance.get('source', '')}")


def _source_references(volume: Volume, k: int, source: Any) -> list[Any]:
    """Source slices within half a source gap of output slice ``k`` along the source's slice normal."""
    from pydicom.dataset import Dataset

    normal = source.grid.direction[:, 2]
    along = np.array([float(s.position @ normal) for s in source.slices])
    here = float(volume.grid.physical_points(np.array([0.0, 0.0, float(k)])) @ normal)
    half_gap = 0.5 * source.grid.spacing[2] + 1e-3
    near = [i for i, a in enumerate(along) if abs(a - here) <= half_gap] or [int(np.argmin(np.abs(along - here)))]
    items = []
    for index in near:
        item = Dataset()
        item.ReferencedSOPClassUID = source.slices[index].sop_class_uid
        item.ReferencedSOPInstanceUID = source.slices[index].sop_instance_uid
        item.PurposeOfReferenceCodeSequence = [_code_item("121322", "Source image for image processing operation")]
        items.append(item)
    return items


def write_dicom_series(volume: Volume, folder: Path, description: str = "", source: Any = None) -> None:
    """Write ``volume`` as a derived MR Image Storage series (one file per ``k`` slice) into an empty ``folder``.

    Args:
        volume: voxels ``[i, j, k]`` and LPS grid; ``MRISuperRes.*`` metadata is its provenance.
        folder: an existing empty folder.
        description: SeriesDescription used when the volume carries no provenance (cut at 64 characters).
        source: the :class:`.dicom_io.DicomSeries` the volume was computed from, or ``None``.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset

    provenance = provenance_of(volume)
    now = _dt.datetime.now()
    source_header = source.first_header if source is not None else None
    series_uid = f"2.25.{uuid.uuid4().int}"
    study_uid = f"2.25.{uuid.uuid4().int}"
    frame_uid = f"2.25.{uuid.uuid4().int}"
    stored, slope, intercept = _stored_values(volume.array)
    center, width = _window(volume.array.astype(np.float64))
    direction, spacing = volume.grid.direction, volume.grid.spacing
    orientation = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
    private = {"provenance": provenance, "notice": provenance.get("notice", AI_NOTICE)}

    base = Dataset()
    for keyword in COPIED_ATTRIBUTES:
        if source_header is not None and keyword in source_header:
            base[keyword] = source_header[keyword]
    for keyword, default in (("PatientName", ""), ("PatientID", ""), ("PatientBirthDate", ""), ("PatientSex", ""),
                             ("StudyInstanceUID", study_uid), ("StudyDate", now.strftime("%Y%m%d")),
                             ("StudyTime", now.strftime("%H%M%S")), ("ReferringPhysicianName", ""),
                             ("StudyID", ""), ("AccessionNumber", ""), ("FrameOfReferenceUID", frame_uid),
                             ("PositionReferenceIndicator", ""), *_MR_DEFAULTS.items()):
        if keyword not in base:
            setattr(base, keyword, default)
    base.SOPClassUID = MR_IMAGE_STORAGE
    base.ImageType = ["DERIVED", "SECONDARY", "OTHER"]  # MR requires value 3; none of its defined terms fits better
    base.Modality = "MR"
    base.SeriesInstanceUID = series_uid
    source_number = int(source_header.get("SeriesNumber", 0) or 0) if source_header is not None else 0
    base.SeriesNumber = source_number + 1000
    base.SeriesDescription = series_description(provenance, description)
    base.SeriesDate = base.ContentDate = base.InstanceCreationDate = now.strftime("%Y%m%d")
    base.SeriesTime = base.ContentTime = base.InstanceCreationTime = now.strftime("%H%M%S")
    base.Manufacturer = "MRISuperRes"
    base.ManufacturerModelName = provenance.get("model", "")[:64]
    base.SoftwareVersions = f"MRISuperRes {__version__}"
    base.DerivationDescription = _derivation_text(provenance)[:1024]
    base.ImageComments = (f"{provenance.get('notice', AI_NOTICE)}. " + base.DerivationDescription)[:10240]
    base.BurnedInAnnotation = "NO"
    base.ContributingEquipmentSequence = _contributing_equipment(source_header, provenance, now)
    if source is not None:
        referenced = Dataset()
        referenced.SeriesInstanceUID = str(source_header.get("SeriesInstanceUID", ""))
        referenced.ReferencedInstanceSequence = []
        for slice_ in source.slices:
            instance = Dataset()
            instance.ReferencedSOPClassUID = slice_.sop_class_uid
            instance.ReferencedSOPInstanceUID = slice_.sop_instance_uid
            referenced.ReferencedInstanceSequence.append(instance)
        base.ReferencedSeriesSequence = [referenced]
    base.ImageOrientationPatient = orientation
    base.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
    base.SliceThickness = _ds(spacing[2])
    base.SpacingBetweenSlices = _ds(spacing[2])
    base.SamplesPerPixel = 1
    base.PhotometricInterpretation = "MONOCHROME2"
    base.Rows, base.Columns = int(volume.grid.shape[1]), int(volume.grid.shape[0])
    base.BitsAllocated, base.BitsStored, base.HighBit = 16, 16, 15
    base.PixelRepresentation = 0 if stored.dtype == np.uint16 else 1
    base.WindowCenter, base.WindowWidth = _ds(center), _ds(width)
    if slope is not None:
        base.RescaleIntercept, base.RescaleSlope, base.RescaleType = _ds(intercept), _ds(slope), "US"
    block = base.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", private["notice"][:64])
    block.add_new(0x02, "LO", provenance.get("model", "")[:64])
    block.add_new(0x03, "LO", provenance.get("model_sha256", "")[:64])
    block.add_new(0x10, "UT", json.dumps(private["provenance"], sort_keys=True))

    for k in range(volume.grid.shape[2]):
        ds = Dataset()
        ds.update(base)
        ds.SOPInstanceUID = f"{series_uid}.{k + 1}"
        ds.InstanceNumber = k + 1
        position = volume.grid.physical_points(np.array([0.0, 0.0, float(k)]))
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(float(position @ direction[:, 2]))
        if source is not None:
            ds.SourceImageSequence = _source_references(volume, k, source)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype(stored.dtype.newbyteorder("<")).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
        ds.file_meta = meta
        _save(pydicom, ds, folder / f"slice_{k:04d}.dcm")


def _save(pydicom: Any, ds: Any, path: Path) -> None:
    try:
        pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    except TypeError:  # pydicom 2.x: encoding from the dataset, preamble via write_like_original
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(str(path), write_like_original=False)
