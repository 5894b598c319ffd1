"""DICOM series in and out: slice geometry checked from the headers, results written as a derived series of the
source's patient and study (MRISuperResLib.imaging.dicom_io, MRISuperResLib.imaging.dicom_write)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import make_tiny_model, rotation_matrix

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402

from MRISuperResLib.cli import app as cli  # noqa: E402
from MRISuperResLib.imaging.dicom_write import MR_IMAGE_STORAGE, series_description  # noqa: E402
from MRISuperResLib.errors import InputError  # noqa: E402
from MRISuperResLib.imaging.volume import Grid, Volume  # noqa: E402
from MRISuperResLib.imaging.volume_io import read_volume, write_volume  # noqa: E402

SOURCE_SERIES_UID = "1.2.826.0.1.3680043.8.498.100"
PATIENT = {"PatientName": "Doe^Jane", "PatientID": "PID-0042", "PatientBirthDate": "19700101", "PatientSex": "F",
           "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1", "StudyDate": "20240305", "StudyTime": "101500",
           "AccessionNumber": "ACC123", "StudyID": "S1", "ReferringPhysicianName": "Who^Doctor",
           "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.2"}


def source_slice(index: int, position: np.ndarray, orientation: np.ndarray, pixels: np.ndarray,
                 spacing: tuple[float, float] = (0.9, 0.8)) -> Dataset:
    """One single-frame MR slice as a scanner writes it (MR Image Storage, explicit VR little endian)."""
    ds = Dataset()
    for keyword, value in PATIENT.items():
        setattr(ds, keyword, value)
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = f"{SOURCE_SERIES_UID}.{index + 1}"
    ds.SeriesInstanceUID = SOURCE_SERIES_UID
    ds.SeriesNumber = 7
    ds.SeriesDescription = "t1_mprage_sag"
    ds.Modality = "MR"
    ds.Manufacturer = "ScannerCo"
    ds.ManufacturerModelName = "Model-3T"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "SP", "", "3D"
    ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = 2300, 2.98, 1
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
    ds.PixelSpacing = [spacing[0], spacing[1]]
    ds.SliceThickness = 1.2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = pixels.astype("<i2").tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    return ds


def make_series(folder: Path, count: int = 24, gap: float = 1.2, skip: tuple[int, ...] = (),
                orientation: np.ndarray | None = None, positions: list[np.ndarray] | None = None,
                shape: tuple[int, int] = (10, 12)) -> Path:
    """Write ``count`` slices (``skip`` left out) of an oblique stack with slice gap ``gap`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rotation = rotation_matrix((0.3, 1.0, 0.2), 0.4) if orientation is None else orientation
    row, column = rotation[:, 0], rotation[:, 1]
    normal = np.cross(row, column)
    origin = np.array([-40.0, 25.0, 12.5])
    rng = np.random.default_rng(3)
    for index in range(count):
        if index in skip:
            continue
        position = origin + index * gap * normal if positions is None else positions[index]
        pixels = rng.integers(0, 1000, shape).astype(np.int16)
        pixels[0, 0] = index  # a marker: which slice this is
        ds = source_slice(index, position, np.concatenate([row, column]), pixels)
        pydicom.dcmwrite(str(folder / f"IM{index:04d}.dcm"), ds, enforce_file_format=True)
    return folder


# ---------------------------------------------------------------- reading: slice geometry from the headers

def test_complete_oblique_series_is_read_on_the_grid_its_headers_give(tmp_path: Path) -> None:
    folder = make_series(tmp_path / "series")
    volume = read_volume(folder)
    rotation = rotation_matrix((0.3, 1.0, 0.2), 0.4)
    assert volume.shape == (12, 10, 24)
    np.testing.assert_allclose(volume.spacing, (0.8, 0.9, 1.2), atol=1e-6)
    np.testing.assert_allclose(volume.grid.direction, rotation, atol=1e-6)
    np.testing.assert_allclose(volume.grid.origin, (-40.0, 25.0, 12.5), atol=1e-5)
    np.testing.assert_array_equal(volume.array[0, 0, :], np.arange(24))  # slices in spatial order


def test_series_files_in_shuffled_name_order_are_sorted_along_the_normal(tmp_path: Path) -> None:
    folder = make_series(tmp_path / "series", count=8)
    names = sorted(folder.iterdir())
    for index, path in enumerate(names):
        path.rename(folder / f"x{(index * 5) % 8}.dcm")
    np.testing.assert_array_equal(read_volume(folder).array[0, 0, :], np.arange(8))


@pytest.mark.parametrize("skip", [(11,), (1,), (5, 6), (3, 17)], ids=["middle", "second", "two-adjacent", "two-apart"])
def test_series_with_missing_slices_is_refused(tmp_path: Path, skip: tuple[int, ...]) -> None:
    folder = make_series(tmp_path / "series", skip=skip)
    with pytest.raises(InputError, match="unevenly spaced slices") as error:
        read_volume(folder)
    message = str(error.value)
    assert "\n" not in message and "missing" in message
    assert "1.2 to 2.4 mm" in message or "1.2 to 3.6 mm" in message


def test_series_with_one_slice_moved_is_refused(tmp_path: Path) -> None:
    rotation = np.eye(3)
    positions = [np.array([0.0, 0.0, 2.0 * k]) for k in range(10)]
    positions[6] = positions[6] + np.array([0.0, 0.0, 0.5])
    folder = make_series(tmp_path / "series", count=10, orientation=rotation, positions=positions)
    with pytest.raises(InputError, match="unevenly spaced slices: gaps between slice positions range from 1.5 to 2.5"):
        read_volume(folder)


def test_series_with_rounding_noise_in_positions_is_accepted(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    positions = [np.array([0.0, 0.0, 1.5 * k]) + rng.uniform(-0.004, 0.004, 3) for k in range(12)]
    folder = make_series(tmp_path / "series", count=12, orientation=np.eye(3), positions=positions)
    assert read_volume(folder).spacing[2] == pytest.approx(1.5, abs=0.01)


def test_series_with_a_tilted_slice_is_refused(tmp_path: Path) -> None:
    folder = make_series(tmp_path / "series", count=6)
    tilted = pydicom.dcmread(folder / "IM0003.dcm")
    rotation = rotation_matrix((0.3, 1.0, 0.2), 0.4) @ rotation_matrix((1.0, 0.0, 0.0), np.radians(5.0))
    tilted.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([rotation[:, 0], rotation[:, 1]])]
    tilted.save_as(folder / "IM0003.dcm")
    with pytest.raises(InputError, match="not parallel.*5.00 degrees"):
        read_volume(folder)


def test_series_with_repeated_positions_is_refused(tmp_path: Path) -> None:
    folder = make_series(tmp_path / "series", count=6)
    echo = pydicom.dcmread(folder / "IM0002.dcm")
    echo.SOPInstanceUID = f"{SOURCE_SERIES_UID}.99"
    echo.file_meta.MediaStorageSOPInstanceUID = echo.SOPInstanceUID
    echo.save_as(folder / "IM0002-echo2.dcm")
    with pytest.raises(InputError, match="same position"):
        read_volume(folder)


def test_series_with_gantry_tilt_is_refused(tmp_path: Path) -> None:
    positions = [np.array([0.0, 0.3 * k, 2.0 * k]) for k in range(8)]  # each slice shifted 0.3 mm along y
    folder = make_series(tmp_path / "series", count=8, orientation=np.eye(3), positions=positions)
    with pytest.raises(InputError, match="shifted sideways"):
        read_volume(folder)


@pytest.mark.parametrize("keyword", ["ImagePositionPatient", "ImageOrientationPatient"])
def test_series_without_geometry_is_refused(tmp_path: Path, keyword: str) -> None:
    folder = make_series(tmp_path / "series", count=4)
    ds = pydicom.dcmread(folder / "IM0001.dcm")
    delattr(ds, keyword)
    ds.save_as(folder / "IM0001.dcm")
    with pytest.raises(InputError, match=f"no valid {keyword}"):
        read_volume(folder)


def test_cli_refuses_a_series_with_a_missing_slice_in_one_line(tmp_path: Path, capsys) -> None:
    folder = make_series(tmp_path / "series", skip=(11,))
    model = make_tiny_model(tmp_path / "tiny.safetensors")
    code = cli.main(["enhance", str(folder), str(tmp_path / "sr.nii.gz"), "--model", str(model), "--quiet"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR
    assert err.count("\n") == 1 and err.startswith("mrisuperres: error: ") and "unevenly spaced" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series", "tiny.safetensors"]


# ---------------------------------------------------------------- writing: a derived series of the same study

def test_series_description_fits_64_and_keeps_the_model() -> None:
    provenance = {"role": "super-resolved", "scale": "2", "model": "edsr3d-x2-brain"}
    assert series_description(provenance) == "AI-enhanced x2 edsr3d-x2-brain"
    long = {**provenance, "model": "m" * 80, "scale": "1,1,4"}
    text = series_description(long)
    assert len(text) == 64 and text.startswith("AI-enhanced x1,1,4 mmm") and text.endswith("~")
    assert series_description({"role": "baseline", "scale": "2", "model": "x"}).startswith("B-spline")
    assert series_description({}, "free text " * 10) == ("free text " * 10)[:64]


@pytest.fixture()
def enhanced_series(tmp_path: Path, capsys) -> tuple[Path, Path]:
    source = make_series(tmp_path / "source", count=8, shape=(12, 14))
    model = make_tiny_model(tmp_path / "a-research-model-with-a-long-descriptive-name-x2.safetensors")
    output = tmp_path / "enhanced"
    code = cli.main(["enhance", str(source), str(output), "--model", str(model), "--quiet",
                     "--baseline", str(tmp_path / "spline")])
    assert code == 0, capsys.readouterr().err
    return source, output


def test_dicom_to_dicom_result_is_a_derived_series_of_the_same_patient_and_study(enhanced_series) -> None:
    source, output = enhanced_series
    files = sorted(output.glob("*.dcm"))
    assert len(files) == 16
    source_uids = {pydicom.dcmread(p).SOPInstanceUID for p in source.iterdir()}
    series_uids = set()
    for path in files:
        ds = pydicom.dcmread(path)
        for keyword, value in PATIENT.items():
            assert str(ds.get(keyword)) == value, keyword
        assert ds.SOPClassUID == MR_IMAGE_STORAGE and ds.file_meta.MediaStorageSOPClassUID == MR_IMAGE_STORAGE
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert ds.Modality == "MR"
        series_uids.add(ds.SeriesInstanceUID)
        assert len(ds.SeriesDescription) <= 64
        assert ds.SeriesDescription.startswith("AI-enhanced x2 a-research-model")
        assert "AI-generated, not acquired" in ds.DerivationDescription
        assert "a-research-model-with-a-long-descriptive-name-x2" in ds.DerivationDescription
        assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == SOURCE_SERIES_UID
        references = {item.ReferencedSOPInstanceUID for item in ds.SourceImageSequence}
        assert references and references <= source_uids
        equipment = ds.ContributingEquipmentSequence
        assert [e.Manufacturer for e in equipment] == ["ScannerCo", "MRISuperRes"]
        block = ds.private_block(0x0071, "MRISuperRes")
        assert block[0x01].value == "AI-generated, not acquired"
        assert "model_sha256" in block[0x10].value
    assert len(series_uids) == 1 and SOURCE_SERIES_UID not in series_uids


def test_each_derived_slice_references_the_source_slice_it_overlays(enhanced_series) -> None:
    source, output = enhanced_series
    by_uid = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in source.iterdir()}
    for path in output.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        normal = np.cross(np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float))
        here = float(np.array(ds.ImagePositionPatient, float) @ normal)
        for item in ds.SourceImageSequence:
            there = float(np.array(by_uid[item.ReferencedSOPInstanceUID].ImagePositionPatient, float) @ normal)
            assert abs(there - here) <= 0.6 + 1e-3  # half the source's 1.2 mm gap


def test_two_dicom_outputs_are_two_series_of_one_study(enhanced_series, tmp_path: Path) -> None:
    _source, output = enhanced_series
    sr = pydicom.dcmread(next(output.glob("*.dcm")))
    spline = pydicom.dcmread(next((tmp_path / "spline").glob("*.dcm")))
    assert sr.StudyInstanceUID == spline.StudyInstanceUID == PATIENT["StudyInstanceUID"]
    assert sr.SeriesInstanceUID != spline.SeriesInstanceUID
    assert spline.SeriesDescription.startswith("B-spline interpolated x2")


def test_derived_series_reads_back_on_the_fine_grid_over_the_source(enhanced_series) -> None:
    source, output = enhanced_series
    coarse, fine = read_volume(source), read_volume(output)
    assert fine.shape == tuple(2 * n for n in coarse.shape)
    np.testing.assert_allclose(fine.spacing, np.array(coarse.spacing) / 2, atol=1e-6)
    np.testing.assert_allclose(fine.grid.direction, coarse.grid.direction, atol=1e-6)
    expected = coarse.grid.physical_points(np.array([-0.25, -0.25, -0.25]))
    np.testing.assert_allclose(fine.grid.origin, expected, atol=1e-5)


def test_nifti_to_dicom_makes_a_new_study_with_valid_mr_attributes(tmp_path: Path) -> None:
    grid = Grid((6, 5, 4), (0.75, 1.25, 3.0), (1.0, 2.0, 3.0), rotation_matrix((1.0, 2.0, 0.5), 0.3))
    array = np.random.default_rng(0).normal(100.0, 30.0, grid.shape).astype(np.float32)
    folder = write_volume(Volume(array, grid, {"MRISuperRes.role": "super-resolved", "MRISuperRes.scale": "2",
                                                "MRISuperRes.model": "edsr3d-x2-brain"}), tmp_path / "out")
    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    for ds in datasets:
        assert ds.ScanningSequence == "RM" and ds.SequenceVariant == "NONE"
        assert ds.PatientID == "" and "SourceImageSequence" not in ds
        assert ds.SeriesDescription == "AI-enhanced x2 edsr3d-x2-brain"
    read = read_volume(folder)
    assert np.max(np.abs(read.array - array)) <= float(array.max() - array.min()) / 65000.0
    np.testing.assert_allclose(read.grid.direction, grid.direction, atol=1e-9)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_derived_slices_pass_dciodvfy_without_errors(enhanced_series) -> None:
    import subprocess

    _source, output = enhanced_series
    path = next(output.glob("*.dcm"))
    report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], report.stderr


@pytest.mark.parametrize("cut", [200, 3000], ids=["pixel-data-cut", "header-readable-pixels-half"])
def test_series_with_a_truncated_slice_is_refused_as_incomplete(tmp_path: Path, cut: int) -> None:
    folder = make_series(tmp_path / "series", count=6, shape=(64, 64))
    path = folder / "IM0002.dcm"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) - cut])
    with pytest.raises(InputError, match="IM0002.dcm .*(incomplete|cannot be read)"):
        read_volume(folder)


def test_non_dicom_files_beside_the_series_are_ignored(tmp_path: Path) -> None:
    folder = make_series(tmp_path / "series", count=5)
    (folder / "notes.txt").write_text("scanned on Tuesday")
    assert read_volume(folder).shape[2] == 5


def test_missing_slice_is_interpolated_only_when_asked_with_a_warning(tmp_path: Path) -> None:
    from MRISuperResLib.errors import InputWarning

    folder = make_series(tmp_path / "series", skip=(11,))
    with pytest.warns(InputWarning, match=r"unevenly spaced .* 1 of them are interpolated") as record:
        volume = read_volume(folder, resample_uneven_slices=True)
    assert len([w for w in record if issubclass(w.category, InputWarning)]) == 1
    assert volume.shape == (12, 10, 24)
    np.testing.assert_allclose(volume.spacing, (0.8, 0.9, 1.2), atol=1e-6)
    np.testing.assert_allclose(volume.array[0, 0, :], np.arange(24), atol=1e-4)  # slice 11 = mean of 10 and 12
    np.testing.assert_allclose(volume.grid.origin, (-40.0, 25.0, 12.5), atol=1e-5)


def test_resampling_puts_a_moved_slice_back_on_the_grid(tmp_path: Path) -> None:
    positions = [np.array([0.0, 0.0, 2.0 * k]) for k in range(6)]
    positions[3] = positions[3] + np.array([0.0, 0.0, 1.0])  # slice 3 at 7 mm instead of 6 mm
    folder = make_series(tmp_path / "series", count=6, orientation=np.eye(3), positions=positions)
    with pytest.warns(UserWarning):
        volume = read_volume(folder, resample_uneven_slices=True)
    assert volume.shape[2] == 6
    # at 6 mm: between slice 2 (4 mm, marker 2) and slice 3 (7 mm, marker 3): 2 + 2/3
    assert volume.array[0, 0, 3] == pytest.approx(2.0 + 2.0 / 3.0, abs=1e-4)


def test_resampling_still_refuses_tilted_slices(tmp_path: Path) -> None:
    folder = make_series(tmp_path / "series", count=6, skip=(2,))
    tilted = pydicom.dcmread(folder / "IM0004.dcm")
    rotation = rotation_matrix((0.3, 1.0, 0.2), 0.4) @ rotation_matrix((0.0, 1.0, 0.0), np.radians(3.0))
    tilted.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([rotation[:, 0], rotation[:, 1]])]
    tilted.save_as(folder / "IM0004.dcm")
    with pytest.raises(InputError, match="not parallel"):
        read_volume(folder, resample_uneven_slices=True)


def test_cli_resamples_an_uneven_series_on_request_with_one_warning_line(tmp_path: Path, capsys) -> None:
    folder = make_series(tmp_path / "series", skip=(11,))
    model = make_tiny_model(tmp_path / "tiny.safetensors")
    code = cli.main(["enhance", str(folder), str(tmp_path / "sr.nii.gz"), "--model", str(model), "--quiet",
                     "--resample-uneven-slices"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("\n") == 1 and err.startswith("mrisuperres: warning: series: the 23 DICOM slices")
    assert "interpolated" in err and "not acquired" in err


def test_a_left_handed_volume_is_written_as_a_right_handed_series_in_the_same_place(tmp_path) -> None:
    """DICOM readers stack slices along row x column: a left-handed grid is stored flipped along k, so every
    voxel keeps its LPS position and value."""
    import SimpleITK as sitk

    from MRISuperResLib.imaging.volume import Grid, Volume
    from MRISuperResLib.imaging.volume_io import read_volume, write_volume

    rng = np.random.default_rng(4)
    array = rng.normal(100, 20, size=(10, 9, 7)).astype(np.float32)
    direction = np.diag([1.0, 1.0, -1.0])
    volume = Volume(array, Grid((10, 9, 7), (1.0, 1.2, 2.0), (5.0, -3.0, 12.0), direction))
    folder = write_volume(volume, tmp_path / "series")
    back = read_volume(folder)
    assert np.linalg.det(np.asarray(back.grid.direction)) > 0
    np.testing.assert_allclose(back.array, array[:, :, ::-1], atol=1e-3 * 200)
    corner = back.grid.physical_points(np.array([0.0, 0.0, 0.0]))
    np.testing.assert_allclose(corner, volume.grid.physical_points(np.array([0.0, 0.0, 6.0])), atol=1e-4)
    assert sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))).GetSize() == (10, 9, 7)
