"""Inputs read as the neuroimaging tools read them, or refused in one line: NIfTI sform/qform precedence
(MRISuperResLib.imaging.nifti_header), the image kind named in refusals (MRISuperResLib.imaging.image_kind), incomplete files
(MRISuperResLib.imaging.file_integrity)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import make_tiny_model, rotation_matrix

from MRISuperResLib.cli import app as cli
from MRISuperResLib.errors import InputError, InputWarning
from MRISuperResLib.imaging.file_integrity import check_complete
from MRISuperResLib.imaging.image_kind import ImageKind, refusal
from MRISuperResLib.imaging.volume import LPS_TO_RAS
from MRISuperResLib.imaging.volume_io import read_volume

SHAPE = (12, 10, 8)


def volume_array(dtype=np.int16, shape=SHAPE) -> np.ndarray:
    rng = np.random.default_rng(5)
    return rng.integers(1, 2000, shape).astype(dtype)


def qform_matrix() -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.5, 1.5, 2.0])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    return affine


def save_nifti(path: Path, sform: np.ndarray | None, sform_code: int, qform: np.ndarray | None, qform_code: int,
               array: np.ndarray | None = None) -> Path:
    image = nibabel.Nifti1Image(volume_array() if array is None else array, None)
    image.set_qform(qform if qform is not None else qform_matrix(), code=qform_code)
    image.set_sform(sform if sform is not None else qform_matrix(), code=sform_code)
    nibabel.save(image, str(path))
    return path


def lps_from_nibabel(path: Path) -> np.ndarray:
    return LPS_TO_RAS @ nibabel.load(str(path)).affine


def rigid(angle_deg: float, offset=(5.0, 6.0, 7.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = rotation_matrix((0.2, 0.1, 1.0), np.radians(angle_deg)) @ np.diag([1.5, 1.5, 2.0])
    affine[:3, 3] = offset
    return affine


def sheared(amount: float = 0.2) -> np.ndarray:
    affine = qform_matrix()
    affine[0, 1] = amount
    affine[1, 2] = -amount
    return affine


# ---------------------------------------------------------------- sform / qform precedence

@pytest.mark.parametrize("qform_code", [1, 0], ids=["with-qform", "sform-only"])
@pytest.mark.parametrize("amount", [0.2, 0.02], ids=["shear-0.2", "shear-0.02"])
def test_sheared_sform_is_refused_in_one_line(tmp_path: Path, qform_code: int, amount: float) -> None:
    path = save_nifti(tmp_path / "flirt_12dof.nii.gz", sheared(amount), 2, qform_matrix(), qform_code)
    with pytest.raises(InputError, match="sheared sform") as error:
        read_volume(path)
    message = str(error.value)
    assert "\n" not in message and "resample" in message and "12-dof" in message


@pytest.mark.parametrize("sform_code", [1, 2, 4])
def test_rigid_sform_that_disagrees_with_the_qform_wins_as_in_nibabel(tmp_path: Path, sform_code: int) -> None:
    path = save_nifti(tmp_path / "v.nii.gz", rigid(12.0), sform_code, qform_matrix(), 1)
    with pytest.warns(InputWarning, match="sform and qform disagree by up to"):
        volume = read_volume(path)
    np.testing.assert_allclose(volume.grid.ijk_to_lps(), lps_from_nibabel(path), atol=1e-4)
    np.testing.assert_array_equal(volume.array, volume_array())


def test_qform_is_used_when_the_sform_code_is_zero_even_if_the_sform_is_sheared(tmp_path: Path) -> None:
    path = save_nifti(tmp_path / "v.nii.gz", sheared(), 0, rigid(20.0), 1)
    volume = read_volume(path)
    np.testing.assert_allclose(volume.grid.ijk_to_lps(), lps_from_nibabel(path), atol=1e-4)


def test_agreeing_frames_and_no_frames_read_as_before(tmp_path: Path, recwarn) -> None:
    agree = save_nifti(tmp_path / "agree.nii.gz", rigid(30.0), 1, rigid(30.0), 1)
    np.testing.assert_allclose(read_volume(agree).grid.ijk_to_lps(), lps_from_nibabel(agree), atol=1e-4)
    none = save_nifti(tmp_path / "none.nii", None, 0, None, 0)
    volume = read_volume(none)
    np.testing.assert_allclose(volume.spacing, (1.5, 1.5, 2.0), atol=1e-6)  # NIfTI method 1: voxel sizes only
    assert not [w for w in recwarn if issubclass(w.category, InputWarning)]


def test_enhanced_output_lands_where_nibabel_places_the_input(tmp_path: Path, capsys) -> None:
    source = save_nifti(tmp_path / "v.nii.gz", rigid(15.0), 2, qform_matrix(), 1,
                        array=volume_array(np.float32))
    model = make_tiny_model(tmp_path / "tiny.safetensors")
    output = tmp_path / "sr.nii.gz"
    assert cli.main(["enhance", str(source), str(output), "--model", str(model), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "mrisuperres: warning:" in err and "sform and qform disagree" in err
    centre_in = nibabel.load(str(source)).affine @ np.array([*(np.array(SHAPE) - 1) / 2, 1.0])
    fine = nibabel.load(str(output))
    centre_out = fine.affine @ np.array([*(np.array(fine.shape) - 1) / 2, 1.0])
    np.testing.assert_allclose(centre_out, centre_in, atol=1e-3)


def test_cli_refuses_a_sheared_sform_with_exit_1_and_writes_nothing(tmp_path: Path, capfd) -> None:
    source = save_nifti(tmp_path / "v.nii.gz", sheared(), 2, qform_matrix(), 1)
    model = make_tiny_model(tmp_path / "tiny.safetensors")
    code = cli.main(["enhance", str(source), str(tmp_path / "sr.nii.gz"), "--model", str(model), "--quiet"])
    err = capfd.readouterr().err
    assert code == cli.EXIT_ERROR
    assert err.count("\n") == 1 and "sheared sform" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors", "v.nii.gz"]


# ---------------------------------------------------------------- the image kind, named right

def write_nifti(path: Path, array: np.ndarray, intent: str | None = None) -> Path:
    image = nibabel.Nifti1Image(array, np.diag([2.0, 2.0, 2.0, 1.0]))
    if intent:
        image.header.set_intent(intent)
    nibabel.save(image, str(path))
    return path


def write_itk(path: Path, image: sitk.Image) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def _rgb() -> np.ndarray:
    rgb = np.zeros((6, 6, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    return rgb


KIND_CASES = {
    "5d-vector-in-dim5": (lambda p: write_nifti(p / "v.nii.gz", np.zeros((8, 8, 8, 1, 3), np.float32)),
                          ["5D image", "8x8x8x1x3", "3 components"]),
    "5d-intent-vector": (lambda p: write_nifti(p / "v.nii.gz", np.zeros((8, 8, 8, 1, 3), np.float32), "vector"),
                         ["vector image with 3 components"]),
    "5d-tensor": (lambda p: write_nifti(p / "v.nii.gz", np.zeros((8, 8, 8, 1, 6), np.float32), "symmetric matrix"),
                  ["5D image", "6 components", "symmetric matrix"]),
    "5d-time-and-vector": (lambda p: write_nifti(p / "v.nii.gz", np.zeros((6, 6, 6, 2, 3), np.float32)),
                           ["5D image", "6x6x6x2x3"]),
    "6d": (lambda p: write_nifti(p / "v.nii.gz", np.zeros((6, 6, 6, 2, 1, 2), np.float32)), ["6D image"]),
    "4d-time-series": (lambda p: write_nifti(p / "v.nii.gz", np.zeros((6, 6, 6, 3), np.float32)),
                       ["4D time series with 3 volumes"]),
    "2d-nifti": (lambda p: write_nifti(p / "v.nii.gz", np.zeros((8, 9), np.float32)), ["2D image", "8x9"]),
    "single-slice": (lambda p: write_nifti(p / "v.nii.gz", np.zeros((8, 9, 1), np.float32)), ["2D image"]),
    "1d-line": (lambda p: write_nifti(p / "v.nii.gz", np.zeros((1, 1, 9), np.float32)), ["1D line"]),
    "complex-nifti": (lambda p: write_nifti(p / "v.nii.gz", np.zeros((6, 6, 6), np.complex64)),
                      ["complex-valued image", "magnitude"]),
    "rgb-nifti": (lambda p: write_nifti(p / "v.nii.gz", _rgb()), ["RGB colour image"]),
    "complex-nrrd": (lambda p: write_itk(p / "v.nrrd", sitk.Image([5, 6, 7], sitk.sitkComplexFloat32)),
                     ["complex-valued image"]),
    "rgb-nrrd": (lambda p: write_itk(p / "v.nrrd", sitk.Image([5, 6, 7], sitk.sitkVectorUInt8, 3)),
                 ["RGB colour image"]),
    "vector-mha": (lambda p: write_itk(p / "v.mha", sitk.Image([5, 6, 7], sitk.sitkVectorFloat32, 2)),
                   ["vector image with 2 components"]),
    "4d-nrrd": (lambda p: write_itk(p / "v.nrrd", sitk.Image([5, 6, 7, 4], sitk.sitkFloat32)),
                ["4D time series with 4 volumes"]),
    "2d-mha": (lambda p: write_itk(p / "v.mha", sitk.Image([5, 6], sitk.sitkFloat32)), ["2D image", "5x6"]),
}


@pytest.mark.parametrize("case", list(KIND_CASES), ids=list(KIND_CASES))
def test_refusal_names_the_kind_of_image(tmp_path: Path, case: str) -> None:
    make, phrases = KIND_CASES[case]
    path = make(tmp_path)
    with pytest.raises(InputError) as error:
        read_volume(path)
    message = str(error.value)
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    if "2D" not in " ".join(phrases):
        assert "2D" not in message


@pytest.mark.parametrize("shape", [(8, 8, 8, 1), (8, 8, 8, 1, 1)], ids=["4d-one-volume", "5d-singletons"])
def test_singleton_time_and_component_axes_are_dropped(tmp_path: Path, shape) -> None:
    array = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    path = write_nifti(tmp_path / "v.nii.gz", array)
    np.testing.assert_array_equal(read_volume(path).array, array.reshape(8, 8, 8))


def test_refusal_of_every_layout_without_files() -> None:
    assert refusal(ImageKind((40, 40, 40))) is None
    assert refusal(ImageKind((40, 40, 40, 1, 1))) is None
    assert "5D image" in refusal(ImageKind((40, 40, 40, 1, 3)))
    assert "4D time series with 7 volumes" in refusal(ImageKind((40, 40, 40, 7)))
    assert "4D time series with 7 volumes" in refusal(ImageKind((40, 40, 40, 7, 1)))
    assert "7D image" in refusal(ImageKind((4, 4, 4, 2, 1, 1, 2)))
    assert "2D image" in refusal(ImageKind((40, 1, 40)))
    assert "complex-valued" in refusal(ImageKind((4, 4, 4), pixel_type="complex64", is_complex=True))


def test_cli_names_the_5d_vector_image_of_the_report(tmp_path: Path, capsys) -> None:
    path = write_nifti(tmp_path / "field.nii.gz", np.zeros((40, 40, 40, 1, 3), np.float32))
    model = make_tiny_model(tmp_path / "tiny.safetensors")
    code = cli.main(["enhance", str(path), str(tmp_path / "sr.nii.gz"), "--model", str(model), "--quiet"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR and err.count("\n") == 1
    assert "5D image of size 40x40x40x1x3" in err and "2D" not in err


# ---------------------------------------------------------------- incomplete files

def write_complete(folder: Path, extension: str, compress: bool, dtype=np.int16, shape=SHAPE) -> Path:
    image = sitk.GetImageFromArray(volume_array(dtype, shape).transpose(2, 1, 0).copy())
    path = folder / f"v{extension}"
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path


def data_file(path: Path) -> Path:
    others = [p for p in path.parent.iterdir() if p != path]
    return others[0] if others else path


FORMATS = [(".nii.gz", True), (".nii", False), (".nrrd", True), (".nrrd", False), (".nhdr", True), (".nhdr", False),
           (".mha", True), (".mha", False), (".mhd", True), (".mhd", False)]


@pytest.mark.parametrize("keep", [0.2, 0.6, 0.97], ids=["20%", "60%", "97%"])
@pytest.mark.parametrize(("extension", "compress"), FORMATS, ids=[f"{e}-{'z' if c else 'raw'}" for e, c in FORMATS])
def test_truncated_file_is_refused_in_one_line(tmp_path: Path, extension: str, compress: bool, keep: float) -> None:
    path = write_complete(tmp_path, extension, compress)
    read_volume(path)  # complete: fine
    target = data_file(path)
    content = target.read_bytes()
    target.write_bytes(content[: int(len(content) * keep)])
    with pytest.raises(InputError, match="is (incomplete|cut short)") as error:
        read_volume(path)
    assert "\n" not in str(error.value) and "copy" in str(error.value)


def test_first_kilobytes_of_an_int16_nii_gz_are_refused_not_zero_filled(tmp_path: Path) -> None:
    path = write_complete(tmp_path, ".nii.gz", True, shape=(48, 48, 24))  # about 100 kB compressed
    content = path.read_bytes()
    assert len(content) > 50000
    path.write_bytes(content[:4096])
    with pytest.raises(InputError, match="cut short"):
        read_volume(path)


def test_corrupt_gzip_stream_is_refused(tmp_path: Path) -> None:
    path = write_complete(tmp_path, ".nii.gz", True)
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(InputError, match="corrupt|cut short|cannot read"):
        read_volume(path)


def test_concatenated_gzip_members_are_complete(tmp_path: Path) -> None:
    path = write_complete(tmp_path, ".nii", False)
    raw = path.read_bytes()
    joined = tmp_path / "joined.nii.gz"
    joined.write_bytes(gzip.compress(raw[:5000]) + gzip.compress(raw[5000:]))
    np.testing.assert_array_equal(read_volume(joined).array, volume_array())


def test_missing_detached_data_file_is_named(tmp_path: Path) -> None:
    path = write_complete(tmp_path, ".nhdr", False)
    data_file(path).unlink()
    with pytest.raises(InputError, match="names a data file .* that is not beside it"):
        read_volume(path)


@pytest.mark.parametrize("dtype", [np.int16, np.float32], ids=["int16", "float32"])
def test_cli_exits_1_on_a_truncated_input_and_writes_nothing(tmp_path: Path, capsys, dtype) -> None:
    source = tmp_path / "in"
    source.mkdir()
    path = write_complete(source, ".nii.gz", True, dtype, shape=(32, 32, 16))
    path.write_bytes(path.read_bytes()[:3000])
    model = make_tiny_model(tmp_path / "tiny.safetensors")
    code = cli.main(["enhance", str(path), str(tmp_path / "sr.nii.gz"), "--model", str(model), "--quiet"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR and err.count("\n") == 1 and "cut short" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "tiny.safetensors"]


@pytest.mark.parametrize("keep", [0.5, 1.0], ids=["cut", "complete"])
def test_bzip2_nrrd_is_measured_too(tmp_path: Path, keep: float) -> None:
    import bz2

    array = volume_array()
    header = ("NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 12 10 8\n"
              "encoding: bzip2\nendian: little\n"
              "space directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)\n\n").encode()
    data = bz2.compress(array.transpose(2, 1, 0).astype("<i2").tobytes())
    path = tmp_path / "v.nrrd"
    path.write_bytes(header + data[: int(len(data) * keep)])
    if keep < 1.0:
        with pytest.raises(InputError, match="bzip2 data stream ends"):
            read_volume(path)
    else:  # (ITK's NrrdIO itself cannot decode bzip2, so only the completeness check is run)
        check_complete(path)


def test_plain_nifti_named_nii_gz_is_read_as_itk_reads_it(tmp_path: Path) -> None:
    plain = write_complete(tmp_path, ".nii", False)
    named = tmp_path / "plain.nii.gz"
    named.write_bytes(plain.read_bytes())
    np.testing.assert_array_equal(read_volume(named).array, volume_array())
    named.write_bytes(plain.read_bytes()[:-500])
    with pytest.raises(InputError, match="incomplete"):
        read_volume(named)


def test_sform_precedence_holds_for_a_plain_nifti_named_nii_gz(tmp_path: Path) -> None:
    path = save_nifti(tmp_path / "v.nii", rigid(12.0), 2, qform_matrix(), 1)
    named = tmp_path / "v.nii.gz"
    named.write_bytes(path.read_bytes())
    with pytest.warns(InputWarning, match="sform and qform disagree"):
        volume = read_volume(named)
    np.testing.assert_allclose(volume.grid.ijk_to_lps(), lps_from_nibabel(path), atol=1e-4)


def test_nifti2_completeness_is_measured_too(tmp_path: Path) -> None:
    # (ITK's NIfTI reader does not read NIfTI-2; the check must still parse its 540-byte header)
    path = tmp_path / "v2.nii"
    nibabel.save(nibabel.Nifti2Image(volume_array(), np.eye(4)), str(path))
    check_complete(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match="promises 1920 bytes of voxel data but only 1820"):
        check_complete(path)


def test_nifti2_is_refused_by_name_not_as_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "v2.nii.gz"
    nibabel.save(nibabel.Nifti2Image(volume_array(), np.eye(4)), str(path))
    with pytest.raises(InputError, match="is a NIfTI-2 file.*save it as NIfTI-1"):
        read_volume(path)
