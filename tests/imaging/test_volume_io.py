"""Reading and writing volumes with exact geometry, atomically (MRISuperResLib.imaging.volume_io)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import oblique_grid

from MRISuperResLib.imaging import volume_io
from MRISuperResLib.errors import InputError, OutputError
from MRISuperResLib.imaging.volume import Volume
from MRISuperResLib.imaging.volume_io import read_volume, write_volume

GRID = oblique_grid((6, 5, 4), spacing=(0.75, 1.25, 3.0))

#: Geometry tolerance per format: NIfTI stores its matrices as float32; DICOM writes 10 significant digits.
FILE_FORMATS = [(".nii", 1e-6), (".nii.gz", 1e-6), (".nrrd", 1e-9), (".nhdr", 1e-9), (".mha", 1e-9), (".mhd", 1e-9)]
DICOM_TOLERANCE = 1e-9


def sample_array(dtype: type) -> np.ndarray:
    rng = np.random.default_rng(7)
    values = rng.normal(100.0, 40.0, GRID.shape)
    return (np.rint(values) if np.issubdtype(dtype, np.integer) else values).astype(dtype)


def assert_same_geometry(read: Volume, tolerance: float) -> None:
    assert read.shape == GRID.shape
    np.testing.assert_allclose(read.grid.origin, GRID.origin, rtol=0, atol=tolerance)
    np.testing.assert_allclose(read.grid.spacing, GRID.spacing, rtol=0, atol=tolerance)
    np.testing.assert_allclose(read.grid.direction, GRID.direction, rtol=0, atol=tolerance)


def partial_folders(folder: Path) -> list[Path]:
    return sorted(folder.glob(".mrisuperres-partial-*"))


def write_sitk(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def test_oblique_test_grid_is_right_handed_and_not_axis_aligned() -> None:
    assert np.linalg.det(GRID.direction) == pytest.approx(1.0)
    assert np.count_nonzero(np.abs(GRID.direction) < 1e-3) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
@pytest.mark.parametrize(("extension", "tolerance"), FILE_FORMATS)
def test_file_round_trip_keeps_geometry_and_values(tmp_path: Path, extension: str, tolerance: float, dtype) -> None:
    array = sample_array(dtype)
    path = write_volume(Volume(array, GRID), tmp_path / f"volume{extension}")
    read = read_volume(path)
    assert_same_geometry(read, tolerance)
    assert read.array.dtype == array.dtype
    np.testing.assert_array_equal(read.array, array)
    assert not partial_folders(tmp_path)


def test_dicom_series_round_trip_keeps_geometry_and_integer_values(tmp_path: Path) -> None:
    array = sample_array(np.int16)
    folder = write_volume(Volume(array, GRID), tmp_path / "series")
    assert folder.is_dir()
    assert len(list(folder.glob("*.dcm"))) == GRID.shape[2]
    read = read_volume(folder)
    assert_same_geometry(read, DICOM_TOLERANCE)
    np.testing.assert_array_equal(read.array, array)
    assert not partial_folders(tmp_path)


def test_dicom_series_round_trip_keeps_float_values_within_range_over_65000(tmp_path: Path) -> None:
    array = sample_array(np.float32)
    read = read_volume(write_volume(Volume(array, GRID), tmp_path / "series"))
    assert_same_geometry(read, DICOM_TOLERANCE)
    value_range = float(array.max() - array.min())
    assert np.max(np.abs(read.array.astype(np.float64) - array)) <= value_range / 65000.0


def test_nifti_description_is_written_to_descrip(tmp_path: Path) -> None:
    path = write_volume(Volume(sample_array(np.float32), GRID), tmp_path / "v.nii.gz", description="AI-generated x")
    assert read_volume(path).metadata["descrip"] == "AI-generated x"


def test_nrrd_keeps_metadata_key_values(tmp_path: Path) -> None:
    volume = Volume(sample_array(np.float32), GRID, {"MRISuperRes.model": "tiny"})
    assert read_volume(write_volume(volume, tmp_path / "v.nrrd")).metadata["MRISuperRes.model"] == "tiny"


def test_mhd_writes_header_and_raw_data_file(tmp_path: Path) -> None:
    array = sample_array(np.float32)
    write_volume(Volume(array, GRID), tmp_path / "v.mhd", compress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mhd", "v.raw"]
    np.testing.assert_array_equal(read_volume(tmp_path / "v.mhd").array, array)


def test_compressed_mhd_writes_the_data_file_its_header_names(tmp_path: Path) -> None:
    write_volume(Volume(sample_array(np.float32), GRID), tmp_path / "v.mhd")
    header = (tmp_path / "v.mhd").read_text()
    data_file = next(line.split("=")[1].strip() for line in header.splitlines() if line.startswith("ElementDataFile"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["v.mhd", data_file])


def test_nhdr_writes_header_and_its_data_file(tmp_path: Path) -> None:
    write_volume(Volume(sample_array(np.float32), GRID), tmp_path / "v.nhdr")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and "v.nhdr" in names


def test_reading_a_2d_image_is_refused(tmp_path: Path) -> None:
    path = write_sitk(sitk.GetImageFromArray(np.ones((8, 9), np.float32)), tmp_path / "slice.nrrd")
    with pytest.raises(InputError, match="2D image"):
        read_volume(path)


def test_reading_a_single_slice_3d_image_is_refused_as_2d(tmp_path: Path) -> None:
    path = write_sitk(sitk.GetImageFromArray(np.ones((1, 8, 9), np.float32)), tmp_path / "slice.nii.gz")
    with pytest.raises(InputError, match="2D image"):
        read_volume(path)


def test_reading_a_4d_image_with_three_volumes_is_refused(tmp_path: Path) -> None:
    volumes = [sitk.GetImageFromArray(np.full((4, 5, 6), t, np.float32)) for t in range(3)]
    path = write_sitk(sitk.JoinSeries(volumes), tmp_path / "series.nii.gz")
    with pytest.raises(InputError, match="4D time series with 3 volumes"):
        read_volume(path)


def test_reading_a_4d_image_with_one_volume_gives_that_volume(tmp_path: Path) -> None:
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    image = sitk.JoinSeries([sitk.GetImageFromArray(array)])
    assert image.GetDimension() == 4
    read = read_volume(write_sitk(image, tmp_path / "one.mha"))  # (NIfTI would drop the 4th axis itself)
    np.testing.assert_array_equal(read.array, array.transpose(2, 1, 0))


def test_reading_a_vector_image_is_refused(tmp_path: Path) -> None:
    rgb = sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.uint8), isVector=True)
    path = write_sitk(rgb, tmp_path / "rgb.nrrd")
    with pytest.raises(InputError, match="vector image with 3 components"):
        read_volume(path)


@pytest.mark.parametrize("extension", [".nrrd", ".mha"])
def test_reading_a_volume_with_nan_is_refused_with_the_count(tmp_path: Path, extension: str) -> None:
    # (ITK's NIfTI reader itself turns NaN and infinity into 0, so NIfTI cannot carry them this far.)
    array = sample_array(np.float32)
    array[1, 2, 3] = np.nan
    array[0, 0, 0] = np.inf
    path = write_sitk(volume_io.to_sitk(Volume(array, GRID)), tmp_path / f"nan{extension}")
    with pytest.raises(InputError, match="2 NaN or infinite voxels"):
        read_volume(path)


def test_reading_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_volume(tmp_path / "missing.nii.gz")


def test_reading_a_garbage_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError, match="cannot read"):
        read_volume(path)


def test_reading_a_folder_without_dicom_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="no DICOM series"):
        read_volume(tmp_path)


def test_write_refuses_an_existing_file_without_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "v.nrrd"
    path.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="already exists"):
        write_volume(Volume(sample_array(np.float32), GRID), path)
    assert path.read_bytes() == b"keep me"
    assert not partial_folders(tmp_path)


def test_write_with_overwrite_replaces_an_existing_file(tmp_path: Path) -> None:
    path = write_volume(Volume(np.zeros(GRID.shape, np.float32), GRID), tmp_path / "v.nrrd")
    array = sample_array(np.float32)
    write_volume(Volume(array, GRID), path, overwrite=True)
    np.testing.assert_array_equal(read_volume(path).array, array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.nrrd"]


def test_write_with_overwrite_replaces_an_existing_dicom_series(tmp_path: Path) -> None:
    folder = write_volume(Volume(np.zeros(GRID.shape, np.int16), GRID), tmp_path / "series")
    array = sample_array(np.int16)
    write_volume(Volume(array, GRID), folder, overwrite=True)
    assert len(list(folder.iterdir())) == GRID.shape[2]
    np.testing.assert_array_equal(read_volume(folder).array, array)


def test_write_refuses_an_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="unknown extension"):
        write_volume(Volume(sample_array(np.float32), GRID), tmp_path / "v.xyz")
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        write_volume(Volume(sample_array(np.float32), GRID), tmp_path / "missing" / "v.nrrd")


def test_failed_write_leaves_no_file_and_no_partial_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_write(image: sitk.Image, name: str, *args, **kwargs) -> None:
        Path(name).write_bytes(b"half a file")
        raise RuntimeError("No space left on device")

    monkeypatch.setattr(volume_io.sitk, "WriteImage", failing_write)
    with pytest.raises(OutputError, match="No space left on device"):
        write_volume(Volume(sample_array(np.float32), GRID), tmp_path / "v.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_failed_dicom_write_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_series(volume: Volume, folder: Path, description: str = "") -> None:
        (folder / "slice_0000.dcm").write_bytes(b"half a slice")
        raise OSError("No space left on device")

    monkeypatch.setattr(volume_io, "write_dicom_series", failing_series)
    with pytest.raises(OutputError, match="No space left on device"):
        write_volume(Volume(sample_array(np.int16), GRID), tmp_path / "series")
    assert list(tmp_path.iterdir()) == []


def test_successful_writes_leave_no_partial_folder(tmp_path: Path) -> None:
    for name in ("a.nii.gz", "a.nhdr", "a.mhd", "series"):
        write_volume(Volume(sample_array(np.int16), GRID), tmp_path / name)
    assert not partial_folders(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_from_sitk_and_to_sitk_transpose_between_kji_and_ijk() -> None:
    array = np.arange(6 * 5 * 4, dtype=np.float32).reshape(GRID.shape)
    image = volume_io.to_sitk(Volume(array, GRID))
    assert image.GetSize() == GRID.shape
    assert image.GetPixel(1, 2, 3) == array[1, 2, 3]
    back = volume_io.from_sitk(image)
    np.testing.assert_array_equal(back.array, array)
    assert back.grid.same_geometry(GRID, tolerance=0)


@pytest.mark.parametrize(
    ("name", "extension", "stem"),
    [("a.nii.gz", ".nii.gz", "a"), ("A.NII", ".nii", "A"), ("b.nhdr", ".nhdr", "b"), ("series", "", "series"),
     ("x.tar.gz", "", "x.tar.gz")],
)
def test_volume_extension_and_stem(name: str, extension: str, stem: str) -> None:
    assert volume_io.volume_extension(name) == extension
    assert volume_io.strip_volume_extension(name) == stem


def test_large_nifti_gz_is_written_as_gzip_members_every_reader_reads(tmp_path: Path) -> None:
    """A .nii.gz larger than one compression block holds several gzip members; SimpleITK, nibabel, Python's
    gzip and our own reader all see the whole volume."""
    import gzip

    import nibabel as nib

    rng = np.random.default_rng(3)
    array = rng.normal(500, 100, size=(64, 80, 3 * volume_io._GZIP_BLOCK // (64 * 80 * 4) + 5)).astype(np.float32)
    volume = Volume(array, oblique_grid(array.shape))
    path = tmp_path / "big.nii.gz"
    write_volume(volume, path)
    raw = path.read_bytes()
    assert raw.count(b"\x1f\x8b\x08") >= 4  # several members
    assert len(gzip.decompress(raw)) == 352 + array.nbytes
    np.testing.assert_array_equal(read_volume(path).array, array)
    np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj), array)
    assert sitk.ReadImage(str(path)).GetSize() == array.shape


@pytest.mark.parametrize("shape", [(1, 1, 1), (17, 5, 33), (40, 40, 3), (2, 300, 1)])
def test_reversed_axes_is_the_c_contiguous_transpose_for_any_layout(shape) -> None:
    from MRISuperResLib.imaging.volume_io import reversed_axes

    array = np.random.default_rng(0).random(shape).astype(np.float32)
    for layout in (array, np.asfortranarray(array), array[::2, :, ::-1]):
        reversed_ = reversed_axes(layout)
        assert reversed_.flags.c_contiguous
        np.testing.assert_array_equal(reversed_, layout.transpose(2, 1, 0))
