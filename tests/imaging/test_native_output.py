"""What ITK / GDCM print on stderr is captured and turned into one-line warnings; the raw text only with --debug
(MRISuperResLib.imaging.native_output)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import make_tiny_model

from MRISuperResLib.cli import app as cli
from MRISuperResLib.imaging import native_output
from MRISuperResLib.imaging.native_output import LibraryWarning, library_output, messages, one_line_warnings
from MRISuperResLib.imaging.volume_io import read_volume

@pytest.fixture(autouse=True)
def fresh_warning_memory() -> None:
    native_output._WARNED.clear()  # each notice is given once per process; each test is a fresh "process"


ITK_TEXT = (
    "WARNING: In /build/ITK/Modules/IO/Foo/src/itkFooImageIO.cxx, line 123\n"
    "FooImageIO (0x55d1c2a0): odd.foo has an odd field\nthat spans two lines\n\n"
    "WARNING: In /build/ITK/Modules/IO/Foo/src/itkFooImageIO.cxx, line 123\n"
    "FooImageIO (0x55d1c2a0): odd.foo has an odd field\nthat spans two lines\n\n"
)


def test_itk_warning_blocks_become_single_distinct_lines() -> None:
    assert messages(ITK_TEXT) == ["odd.foo has an odd field that spans two lines"]
    lines = one_line_warnings(ITK_TEXT, "odd.foo")
    assert lines == ["odd.foo: the image library reported: odd.foo has an odd field that spans two lines "
                     "(--debug shows its full text)"]


@pytest.mark.parametrize("text", [
    "WARNING: In x.cxx, line 2008\nNiftiImageIO (0x1): v.nii has unexpected scales in sform\n\n",
    "MetaImage: M_ReadElementsData: data not read completely\n   ideal = 48836 : actual = 24257\n",
    "WARNING: In x.cxx, line 1\nImageSeriesReader (0x1): Non uniform sampling or missing slices detected\n\n",
])
def test_notices_the_engine_checks_itself_are_dropped(text: str) -> None:
    assert one_line_warnings(text, "f") == []


def test_long_notice_is_cut_to_one_short_line() -> None:
    [line] = one_line_warnings("GDCM says " + "blah " * 100, "s")
    assert "\n" not in line and len(line) < 260


def test_native_stderr_is_captured_and_warned_once(capfd) -> None:
    with pytest.warns(LibraryWarning, match="has an odd field"):
        with library_output("odd.foo"):
            os.write(2, ITK_TEXT.encode())
    assert capfd.readouterr().err == ""


def test_raw_text_is_echoed_only_when_asked(capfd, monkeypatch) -> None:
    monkeypatch.setattr(native_output, "SHOW_RAW", True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with library_output("odd.foo"):
            os.write(2, ITK_TEXT.encode())
    err = capfd.readouterr().err
    assert "itkFooImageIO.cxx, line 123" in err and "[raw image library output, odd.foo]" in err


def test_failure_inside_the_block_gives_no_extra_warning(recwarn) -> None:
    with pytest.raises(RuntimeError):
        with library_output("x"):
            os.write(2, b"ERROR: In a.cxx, line 1\nIO (0x1): cannot\n\n")
            raise RuntimeError("read failed")
    assert not [w for w in recwarn if issubclass(w.category, LibraryWarning)]


def test_overlapping_blocks_on_two_threads_capture_everything_and_restore_stderr(capfd) -> None:
    # Threads that write outputs in parallel each open a block; descriptor 2 is one for the whole process.
    import threading

    first_open, second_open, first_closed = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with library_output("a.nii.gz"):
            first_open.set()
            second_open.wait(5)
            os.write(2, b"WARNING: In a.cxx, line 1\nIO (0x1): first notice\n\n")
        first_closed.set()

    def second() -> None:
        first_open.wait(5)
        with library_output("b.nii.gz"):
            second_open.set()
            first_closed.wait(5)
            os.write(2, b"WARNING: In b.cxx, line 2\nIO (0x2): second notice\n\n")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    notices = sorted(str(w.message) for w in caught if issubclass(w.category, LibraryWarning))
    assert [n.split(": the image library reported: ")[1] for n in notices] == [
        "first notice (--debug shows its full text)", "second notice (--debug shows its full text)"]
    os.write(2, b"after the blocks\n")  # descriptor 2 reaches the terminal again
    assert capfd.readouterr().err == "after the blocks\n"


def zero_pixdim_nifti(path: Path) -> Path:
    # pixdim[1] = 0 with a valid sform: ITK prints a multi-line "unexpected scales in sform" warning twice.
    image = nibabel.Nifti1Image(np.random.default_rng(0).normal(100, 20, (10, 10, 8)).astype(np.float32),
                                np.diag([2.0, 2.0, 2.0, 1.0]))
    image.header["pixdim"][1:4] = [0.0, 2.0, 2.0]
    nibabel.save(image, str(path))
    return path


def test_itk_chatter_of_a_real_read_stays_off_stderr(tmp_path: Path, capfd) -> None:
    path = zero_pixdim_nifti(tmp_path / "v.nii")
    volume = read_volume(path)
    assert capfd.readouterr().err == ""
    np.testing.assert_allclose(volume.spacing, (2.0, 2.0, 2.0))  # placed by the sform, not ITK's guess


def test_without_capture_itk_does_print_on_that_file(tmp_path: Path, capfd) -> None:
    # The case above is a real one: ITK itself writes to descriptor 2 on it.
    sitk.ReadImage(str(zero_pixdim_nifti(tmp_path / "v.nii")))
    assert "unexpected scales in sform" in capfd.readouterr().err


@pytest.mark.parametrize("debug", [False, True])
def test_cli_stderr_is_one_line_per_message_and_raw_only_with_debug(tmp_path: Path, capfd, debug: bool) -> None:
    path = zero_pixdim_nifti(tmp_path / "v.nii")
    model = make_tiny_model(tmp_path / "tiny.safetensors")
    argv = ["enhance", str(path), str(tmp_path / "sr.nii.gz"), "--model", str(model), "--quiet"]
    code = cli.main((["--debug"] if debug else []) + argv)
    err = capfd.readouterr().err
    assert code == 0
    if debug:
        assert "[raw image library output" in err and "itkNiftiImageIO.cxx" in err
    else:
        assert all(line.startswith("mrisuperres: ") for line in err.splitlines()), err
        assert "itkNiftiImageIO" not in err


def test_cli_prints_python_warnings_of_libraries_in_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    from MRISuperResLib.engine import prepared_input

    real = prepared_input.read_volume

    def chatty(path, **kwargs):
        warnings.warn("Invalid value for VR DS: '1.0000000000000001'\nsecond line", UserWarning)
        return real(path, **kwargs)

    monkeypatch.setattr(prepared_input, "read_volume", chatty)
    path = tmp_path / "v.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(8, 10, 10)).astype(np.float32)),
                    str(path))
    model = make_tiny_model(tmp_path / "tiny.safetensors")
    assert cli.main(["enhance", str(path), str(tmp_path / "sr.nii.gz"), "--model", str(model), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "mrisuperres: warning: UserWarning from a library: Invalid value for VR DS" in err
    assert all(line.startswith("mrisuperres: ") for line in err.splitlines()), err


def test_nibabel_header_fixes_become_one_warning_line(tmp_path: Path, capsys) -> None:
    path = zero_pixdim_nifti(tmp_path / "v.nii")
    model = make_tiny_model(tmp_path / "tiny.safetensors")
    assert cli.main(["enhance", str(path), str(tmp_path / "sr.nii.gz"), "--model", str(model), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("pixdim[1,2,3] should be non-zero") == 1, err
    assert all(line.startswith("mrisuperres: warning: ") for line in err.splitlines()), err
