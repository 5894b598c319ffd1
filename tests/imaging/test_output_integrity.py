"""Outputs that never lie: a file we write is complete and exactly the result, or it is not there.

Requirement under test:

* a write that fails part-way (disk or quota full: ``write()`` returns ``EFBIG`` under ``RLIMIT_FSIZE``, which
  ITK's NIfTI writer does not report) is refused with one line, exit status 1, and leaves nothing behind; every
  staged file is flushed to disk and read back before it counts;
* output names are checked before any work: the format comes from the extension in any letter case, the file is
  written with its extension in lower case and reported under that name; unknown extensions, missing folders,
  outputs on the input and two outputs on one path are refused;
* sidecars are named after the full output name, so ``sr.nii.gz`` and ``sr.nrrd`` live in one folder, and a
  batch whose inputs would produce one output name twice is refused before any work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import make_tiny_model

from MRISuperResLib.cli import app as cli
from MRISuperResLib.imaging import verified_write
from MRISuperResLib.imaging import volume_io
from MRISuperResLib.errors import OutputError
from MRISuperResLib.imaging.output_paths import check_no_collisions, planned_files, sidecar_path, written_path
from MRISuperResLib.imaging.volume import Grid, Volume
from MRISuperResLib.imaging.volume_io import read_volume, write_volume

ROOT = Path(__file__).resolve().parents[2]
FORMATS = [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr"]


def random_volume(shape=(64, 64, 64), seed: int = 0) -> Volume:
    """Random float32 voxels (1 MB at 64^3, compressing badly) on an oblique-free 1 mm grid."""
    array = np.random.default_rng(seed).random(shape).astype(np.float32)
    return Volume(array, Grid(shape, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)))


def smooth_input(path: Path, shape=(12, 14, 10), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    image = sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(rng.random(shape[::-1]).astype(np.float32)), 1.0)
    array = sitk.GetArrayFromImage(image)
    image = sitk.GetImageFromArray((100 + 100 * (array - array.min()) / (array.max() - array.min())).astype(np.float32))
    image.SetSpacing((2.0, 2.0, 2.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def everything_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def run_main(capsys: pytest.CaptureFixture, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("mrisuperres: error:")]


# ------------------------------------------------------------------------------- 1. failed writes


def run_with_file_size_limit(code: str, limit: int, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run Python ``code`` in a child whose files may not grow beyond ``limit`` bytes (``RLIMIT_FSIZE``), with
    SIGXFSZ ignored so that ``write()`` fails with ``EFBIG`` instead of killing the process."""
    script = tmp_path / "limited.py"
    script.write_text(textwrap.dedent(f"""
        import resource, signal, sys
        sys.path.insert(0, {str(ROOT / "MRISuperRes")!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    """) + textwrap.dedent(code))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


@pytest.mark.parametrize(("names", "limit"), [([f"v{ext}" for ext in FORMATS], 300_000), (["series"], 4_000)],
                         ids=["volume-files", "dicom-series"])
def test_writes_cut_short_by_a_full_disk_are_refused_for_every_format(tmp_path: Path, names, limit: int) -> None:
    """64^3 float32 (1 MB; 8 KB per DICOM slice) against a smaller file-size limit: ITK reports the failure for
    some formats and silently truncates others (NIfTI); every one must be refused, with nothing left behind."""
    out = tmp_path / "out"
    out.mkdir()
    code = f"""
        import json, numpy as np
        from MRISuperResLib.errors import OutputError
        from MRISuperResLib.imaging.volume import Grid, Volume
        from MRISuperResLib.imaging.volume_io import write_volume
        volume = Volume(np.random.default_rng(0).random((64, 64, 64)).astype(np.float32),
                        Grid((64, 64, 64), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)))
        outcome = {{}}
        for name in {names!r}:
            try:
                write_volume(volume, {str(out)!r} + "/" + name)
                outcome[name] = "written"
            except OutputError as error:
                outcome[name] = str(error)
        print(json.dumps(outcome))
    """
    done = run_with_file_size_limit(code, limit, tmp_path)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(outcome) == sorted(names)
    for name, message in outcome.items():
        assert message.startswith(f"cannot write {out / name}"), (name, message)
        assert "nothing was written" in message and "\n" not in message
    assert everything_under(out) == []


def test_a_sidecar_cut_short_is_refused(tmp_path: Path) -> None:
    code = f"""
        from pathlib import Path
        from MRISuperResLib.errors import OutputError
        from MRISuperResLib.imaging.verified_write import write_text_verified
        try:
            write_text_verified(Path({str(tmp_path / "s.json")!r}), "x" * 5000, "out/sr.nii.gz.json")
            print("written")
        except OutputError as error:
            print(error)
    """
    done = run_with_file_size_limit(code, 1000, tmp_path)
    assert done.stdout.startswith("cannot write out/sr.nii.gz.json: File too large"), done.stdout + done.stderr


def test_cli_with_a_full_disk_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    """The whole ``mrisuperres enhance`` under a 100 KB file-size limit: exit 1, one error line, no output, no
    sidecar, no staging folder, the input unchanged."""
    source = smooth_input(tmp_path / "in" / "t1.nii.gz", shape=(24, 28, 20))
    model = make_tiny_model(tmp_path / "tiny-x2.safetensors")
    before = source.read_bytes()
    (tmp_path / "out").mkdir()
    for output in ("sr.nii.gz", "sr.nrrd", "sr.mha"):
        code = f"""
            import sys
            from MRISuperResLib.cli.app import main
            sys.exit(main(["enhance", {str(source)!r}, {str(tmp_path / "out" / output)!r}, "--model", {str(model)!r},
                           "--device", "cpu", "--quiet", "--baseline", {str(tmp_path / "out" / "b.nii.gz")!r}]))
        """
        done = run_with_file_size_limit(code, 100_000, tmp_path)
        assert done.returncode == 1, (output, done.stderr)
        errors = error_lines(done.stderr)
        assert len(errors) == 1 and "cannot write" in errors[0] and "Traceback" not in done.stderr, done.stderr
        # Nothing else on stderr: not ITK's own "NWAD: wrote only ... bytes" lines, nor the hidden staging names.
        assert done.stderr.strip().splitlines() == errors, done.stderr
        assert ".mrisuperres-partial" not in errors[0] and "-uncompressed" not in errors[0], errors[0]
        assert everything_under(tmp_path / "out") == []
    assert source.read_bytes() == before


@pytest.mark.parametrize("extension", FORMATS)
def test_a_file_silently_cut_short_by_the_writer_is_caught_by_the_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extension: str
) -> None:
    """The writer reports success but the file on disk is cut short (as ITK's NIfTI writer does on a full
    disk): the read-back finds it and nothing is committed."""
    real_write = sitk.WriteImage

    def truncating_write(image: sitk.Image, name: str, *args, **kwargs) -> None:
        real_write(image, name, *args, **kwargs)
        data = Path(name)
        for candidate in (data.with_suffix(".zraw"), Path(str(data)[: -len(".nhdr")] + ".raw.gz")):
            if candidate.exists():
                data = candidate
        size = data.stat().st_size
        with open(data, "r+b") as stream:
            stream.truncate(size * 2 // 3)

    monkeypatch.setattr(volume_io.sitk, "WriteImage", truncating_write)
    with pytest.raises(OutputError, match="cannot write .*nothing was written"):
        write_volume(random_volume((32, 32, 32)), tmp_path / f"v{extension}")
    assert everything_under(tmp_path) == []


@pytest.mark.parametrize("extension", [".nii", ".nii.gz"])
def test_a_file_whose_voxels_changed_on_disk_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       extension: str) -> None:
    """NIfTI written by ITK with the last bytes zeroed (same size, readable; for ``.nii.gz`` the intermediate
    ``.nii`` that is then compressed): the comparison finds it."""
    real_write = sitk.WriteImage

    def zeroing_write(image: sitk.Image, name: str, *args, **kwargs) -> None:
        real_write(image, name, *args, **kwargs)
        with open(name, "r+b") as stream:
            stream.seek(-4096, os.SEEK_END)
            stream.write(bytes(4096))

    monkeypatch.setattr(volume_io.sitk, "WriteImage", zeroing_write)
    with pytest.raises(OutputError, match="differs from the result"):
        write_volume(random_volume((32, 32, 32)), tmp_path / f"v{extension}")
    assert everything_under(tmp_path) == []


def test_a_nifti_gz_written_with_another_geometry_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The intermediate ``.nii`` of a ``.nii.gz`` with the right voxels but another spacing (header only)."""
    real_write = sitk.WriteImage

    def respacing_write(image: sitk.Image, name: str, *args, **kwargs) -> None:
        changed = sitk.Image(image)
        changed.SetSpacing((1.0, 1.0, 1.5))
        real_write(changed, name, *args, **kwargs)

    monkeypatch.setattr(volume_io.sitk, "WriteImage", respacing_write)
    with pytest.raises(OutputError, match=r"geometry \(spacing\) differs"):
        write_volume(random_volume((16, 16, 16)), tmp_path / "v.nii.gz")
    assert everything_under(tmp_path) == []


@pytest.mark.parametrize("damage", ["cut short", "one byte changed", "bytes appended"])
def test_a_nifti_gz_that_differs_on_disk_from_its_gzip_stream_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    """The ``.nii.gz`` itself changed between writing and the flush (a disk that dropped or altered data): the
    read-back compares it with the gzip stream that was compressed and finds it, in a file of several members."""
    real_flush = verified_write.fsync_path

    def damaging_flush(path) -> None:
        path = Path(path)
        if path.name.endswith(".nii.gz"):
            data = bytearray(path.read_bytes())
            if damage == "cut short":
                data = data[: len(data) - 1000]
            elif damage == "one byte changed":
                data[len(data) // 2] ^= 0xFF
            else:
                data += b"\0" * 10
            path.write_bytes(bytes(data))
        real_flush(path)

    monkeypatch.setattr(verified_write, "fsync_path", damaging_flush)
    monkeypatch.setattr(volume_io, "_GZIP_BLOCK", 100_000)  # 1 MB of voxels: ten gzip members
    with pytest.raises(OutputError, match="differs from the result"):
        write_volume(random_volume((64, 64, 64)), tmp_path / "v.nii.gz")
    assert everything_under(tmp_path) == []


def test_a_failed_flush_to_disk_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_fsync(descriptor: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(verified_write.os, "fsync", failing_fsync)
    with pytest.raises(OutputError, match="Input/output error"):
        write_volume(random_volume((8, 8, 8)), tmp_path / "v.nrrd")
    assert everything_under(tmp_path) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_are_never_written(tmp_path: Path, bad: float) -> None:
    volume = random_volume((8, 8, 8))
    volume.array[3, 4, 5] = bad
    with pytest.raises(OutputError, match="1 NaN or infinite voxels"):
        write_volume(volume, tmp_path / "v.nii.gz")
    assert everything_under(tmp_path) == []


@pytest.mark.parametrize("extension", FORMATS + [""])
def test_verified_writes_still_write_every_format_exactly(tmp_path: Path, extension: str) -> None:
    volume = Volume(np.random.default_rng(1).integers(-500, 3000, (9, 10, 11)).astype(np.int16),
                    Grid((9, 10, 11), (0.9, 1.1, 2.5), (-10.0, 20.0, 5.5), np.eye(3)))
    written = write_volume(volume, tmp_path / f"v{extension or 'series'}")
    np.testing.assert_array_equal(read_volume(written).array, volume.array)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# -------------------------------------------------------------------------------- 2. output names


@pytest.mark.parametrize(("name", "written"), [
    ("SR.NII.GZ", "SR.nii.gz"), ("sr.Nii", "sr.nii"), ("SR.NRRD", "SR.nrrd"), ("Sr.MhA", "Sr.mha"),
    ("SR.MHD", "SR.mhd"), ("SR.NHDR", "SR.nhdr"), ("Series", "Series"), ("sr.nii.gz", "sr.nii.gz"),
])
def test_the_format_comes_from_the_extension_in_any_case_and_is_written_lower_case(
    tmp_path: Path, name: str, written: str
) -> None:
    assert written_path(tmp_path / name) == tmp_path / written
    volume = random_volume((6, 7, 8))
    assert write_volume(volume, tmp_path / name) == tmp_path / written
    assert sorted(p.name for p in tmp_path.iterdir() if p.name == written) == [written]
    # A DICOM series stores rescaled int16: within 1/60000 of the range.
    tolerance = 0.0 if "." in written else 2e-5
    np.testing.assert_allclose(read_volume(tmp_path / written).array, volume.array, rtol=0, atol=tolerance)
    if (tmp_path / written).is_file():
        assert sitk.ReadImage(str(tmp_path / written)).GetSize() == (6, 7, 8)  # any ITK reader finds the format


@pytest.mark.parametrize("name", ["SR.NII.GZ", "Sr.Nrrd", "SR.MHA"])
def test_cli_upper_case_output_is_written_and_reported_under_its_real_name(
    tmp_path: Path, capsys: pytest.CaptureFixture, name: str
) -> None:
    source = smooth_input(tmp_path / "in" / "t1.nii.gz")
    model = make_tiny_model(tmp_path / "tiny-x2.safetensors")
    (tmp_path / "out").mkdir()
    code, out, err = run_main(capsys, "enhance", source, tmp_path / "out" / name, "--model", model, "--json",
                              "--device", "cpu")
    assert code == 0, err
    real = written_path(tmp_path / "out" / name)
    assert real.name != name
    summary = json.loads(out)
    assert summary["outputs"]["sr"] == str(real)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([real.name, real.name + ".json"])
    assert json.loads(sidecar_path(real).read_text())["run"]["outputs"]["sr"] == str(real)
    assert f"is written as {real.name}" in err
    assert read_volume(real).shape == (24, 28, 20)
    code, out, err = run_main(capsys, "enhance", source, tmp_path / "out" / name, "--model", model, "--device",
                              "cpu", "--quiet", "--overwrite")
    assert code == 0 and f"-> {real}" in out, err


def _refusal_cases(tmp: Path, source: Path) -> dict[str, tuple[list, str]]:
    out = tmp / "out"
    return {
        "unknown extension": ([source, out / "sr.png"], "unknown extension"),
        "double extension": ([source, out / "sr.nii.gz.bak"], "unknown extension"),
        "extension only": ([source, out / ".NII.GZ"], "no name before its extension"),
        "missing folder": ([source, tmp / "nowhere" / "sr.nii.gz"], "does not exist"),
        "output is the input": ([source, source, "--overwrite"], "is the input"),
        "two outputs one path": ([source, out / "sr.nii.gz", "--baseline", out / "sr.NII.GZ"], "share one path"),
        "output is a folder": ([source, tmp / "folder.nii.gz", "--overwrite"], "is a folder"),
        "figure not png": ([source, out / "sr.nii.gz", "--figure", out / "f.jpg"], ".png"),
        "sidecar exists": ([source, out / "old.nii.gz"], "old.nii.gz.json already exists"),
        "data file exists": ([source, out / "old.mhd"], "old.zraw already exists"),
    }


@pytest.mark.parametrize("case", ["unknown extension", "double extension", "extension only", "missing folder",
                                  "output is the input",
                                  "two outputs one path", "output is a folder", "figure not png", "sidecar exists",
                                  "data file exists"])
def test_output_name_problems_are_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          case: str) -> None:
    """The model named does not exist: a refusal that names the output (not the model) proves the outputs were
    checked before the model was even looked for."""
    source = smooth_input(tmp_path / "in" / "t1.nii.gz")
    (tmp_path / "out").mkdir()
    (tmp_path / "folder.nii.gz").mkdir()
    (tmp_path / "out" / "old.nii.gz.json").write_text("{}\n")
    (tmp_path / "out" / "old.zraw").write_bytes(b"earlier data")
    before = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    argv, phrase = _refusal_cases(tmp_path, source)[case]
    code, _, err = run_main(capsys, "enhance", *argv, "--model", tmp_path / "no-such-model.safetensors")
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1 and phrase in lines[0], err
    assert "no-such-model" not in lines[0] and ".mrisuperres-partial" not in lines[0]
    assert {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")} == before


# ------------------------------------------------------------------------------ 12. sidecar names


def test_outputs_with_one_stem_and_different_formats_share_a_folder(tmp_path: Path, capsys) -> None:
    source = smooth_input(tmp_path / "in" / "t1.nii.gz")
    model = make_tiny_model(tmp_path / "tiny-x2.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("sr.nii.gz", "sr.nrrd", "sr.mha", "sr"):
        code, _, err = run_main(capsys, "enhance", source, out / name, "--model", model, "--quiet", "--device", "cpu")
        assert code == 0, (name, err)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["sr.nii.gz", "sr.nii.gz.json", "sr.nrrd", "sr.nrrd.json", "sr.mha", "sr.mha.json", "sr", "sr.json"])
    for name in ("sr.nii.gz", "sr.nrrd", "sr.mha", "sr"):
        assert json.loads((out / f"{name}.json").read_text())["run"]["outputs"]["sr"] == str(out / name)


def test_batch_inputs_with_one_stem_in_two_folders_are_refused_before_any_work(tmp_path: Path, capsys) -> None:
    a = smooth_input(tmp_path / "a" / "x.nii.gz", seed=1)
    b = smooth_input(tmp_path / "b" / "x.nii.gz", seed=2)
    code, _, err = run_main(capsys, "enhance", a, b, tmp_path / "out", "--model", tmp_path / "no-such-model")
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1 and "would both write" in lines[0] and str(a) in lines[0] and str(b) in lines[0], err
    assert not (tmp_path / "out").exists()


def test_batch_inputs_with_one_stem_and_different_formats_get_distinct_outputs(tmp_path: Path, capsys) -> None:
    a = smooth_input(tmp_path / "a" / "x.nii.gz", seed=1)
    b = smooth_input(tmp_path / "b" / "x.nrrd", seed=2)
    model = make_tiny_model(tmp_path / "tiny-x2.safetensors")
    code, _, err = run_main(capsys, "enhance", a, b, tmp_path / "out", "--model", model, "--quiet", "--device",
                            "cpu", "--companions")
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    expected = [f"x_sr{suffix}{ext}{side}" for ext in (".nii.gz", ".nrrd")
                for suffix in ("", "_baseline", "_difference", "_consistency") for side in ("", ".json")]
    assert names == sorted(expected)
    assert json.loads((tmp_path / "out" / "x_sr.nrrd.json").read_text())["provenance"]["source"] == "x.nrrd"


def test_batch_output_that_would_replace_another_input_is_refused(tmp_path: Path, capsys) -> None:
    """``scans/`` into itself with ``--overwrite``: x.nii.gz's output x_sr.nii.gz is itself an input there."""
    scans = tmp_path / "scans"
    smooth_input(scans / "x.nii.gz", seed=1)
    smooth_input(scans / "x_sr.nii.gz", seed=2)
    before = {p.name: p.read_bytes() for p in scans.iterdir()}
    code, _, err = run_main(capsys, "enhance", scans, scans, "--overwrite", "--model", tmp_path / "none")
    assert code == 1 and "is the input" in error_lines(err)[0], err
    assert {p.name: p.read_bytes() for p in scans.iterdir()} == before


def test_planned_files_name_data_files_and_sidecars() -> None:
    assert planned_files("o/a.MHD", sidecar=True) == [Path("o/a.mhd"), Path("o/a.zraw"), Path("o/a.mhd.json")]
    assert planned_files("o/a.nhdr", sidecar=False) == [Path("o/a.nhdr"), Path("o/a.raw.gz")]
    assert planned_files("o/a.nhdr", sidecar=False, compress=False) == [Path("o/a.nhdr"), Path("o/a.raw")]
    assert planned_files("o/series", sidecar=True) == [Path("o/series"), Path("o/series.json")]
    with pytest.raises(OutputError, match="share one path"):
        check_no_collisions({"one": planned_files("o/a.mhd", sidecar=False),
                             "two": [Path("o/a.zraw")]})


@pytest.mark.parametrize(("span", "offset"), [(1.0, 0.0), (50.0, 100.0), (0.01, 5.0), (70000.0, -30000.0)])
def test_dicom_series_of_any_float_range_reads_back_within_its_precision(tmp_path: Path, span: float,
                                                                          offset: float) -> None:
    """Float ranges under about 120 used to overflow int16 (values above the middle came back wrong)."""
    volume = random_volume((8, 9, 10))
    volume = volume.with_array((offset + span * volume.array).astype(np.float32))
    written = write_volume(volume, tmp_path / "series")
    np.testing.assert_allclose(read_volume(written).array, volume.array, rtol=0, atol=span / 60000)


def test_a_figure_cut_short_is_refused(tmp_path: Path) -> None:
    code = f"""
        import numpy as np
        from MRISuperResLib.errors import MRISuperResError
        from MRISuperResLib.engine.figure import save_figure
        from MRISuperResLib.imaging.volume import Grid, Volume
        volume = Volume(np.random.default_rng(0).random((20, 20, 20)).astype(np.float32),
                        Grid((20, 20, 20), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)))
        try:
            save_figure({str(tmp_path / "out" / "f.png")!r}, {{"input": volume, "SR": volume}})
            print("written")
        except MRISuperResError as error:
            print(error)
    """
    (tmp_path / "out").mkdir()
    done = run_with_file_size_limit(code, 20_000, tmp_path)
    assert done.stdout.startswith(f"cannot write {tmp_path / 'out' / 'f.png'}"), done.stdout + done.stderr
    assert everything_under(tmp_path / "out") == []


def test_text_reports_are_replaced_atomically_and_verified(tmp_path: Path) -> None:
    from MRISuperResLib.imaging.verified_write import replace_text_file

    target = tmp_path / "table.md"
    target.write_text("old\n")
    replace_text_file(target, "| a | b |\n")
    assert target.read_text() == "| a | b |\n" and sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]
    code = f"""
        from MRISuperResLib.errors import OutputError
        from MRISuperResLib.imaging.verified_write import replace_text_file
        try:
            replace_text_file({str(target)!r}, "x" * 50000)
        except OutputError as error:
            print(error)
    """
    done = run_with_file_size_limit(code, 10_000, tmp_path)
    assert "File too large" in done.stdout, done.stdout + done.stderr
    assert target.read_text() == "| a | b |\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["limited.py", "table.md"]


def test_text_reports_get_the_users_file_mode(tmp_path: Path) -> None:
    # Staged with mkstemp (0600), a new report was private while every other output is 0644 under umask 022.
    from MRISuperResLib.imaging.verified_write import replace_text_file

    mask = os.umask(0o022)
    try:
        replace_text_file(tmp_path / "new.md", "a\n")
        assert (tmp_path / "new.md").stat().st_mode & 0o777 == 0o644
        kept = tmp_path / "kept.csv"
        kept.write_text("old\n")
        kept.chmod(0o640)
        replace_text_file(kept, "b\n")
        assert kept.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(mask)


def test_simulate_and_register_take_upper_case_output_names_and_refuse_outputs_on_inputs(tmp_path: Path,
                                                                                          capsys) -> None:
    source = smooth_input(tmp_path / "in" / "t1.nii.gz", shape=(16, 16, 12))
    code, out, err = run_main(capsys, "simulate", source, tmp_path / "LOW.NII.GZ", "--scale", "2")
    assert code == 0, err
    assert (tmp_path / "LOW.nii.gz").is_file() and f"{tmp_path / 'LOW.nii.gz'}:" in out
    before = source.read_bytes()
    code, _, err = run_main(capsys, "simulate", source, source, "--scale", "2", "--overwrite")
    assert code == 1 and "is the input" in error_lines(err)[0], err
    code, _, err = run_main(capsys, "register", source, tmp_path / "LOW.nii.gz", source, "--overwrite")
    assert code == 1 and "is the input" in error_lines(err)[0], err
    assert source.read_bytes() == before


def test_a_failed_overwrite_keeps_the_earlier_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "v.nii.gz"
    earlier = write_volume(random_volume((8, 8, 8), seed=1), target).read_bytes()
    real_write = sitk.WriteImage

    def truncating_write(image: sitk.Image, name: str, *args, **kwargs) -> None:
        real_write(image, name, *args, **kwargs)
        with open(name, "r+b") as stream:
            stream.truncate(100)

    monkeypatch.setattr(volume_io.sitk, "WriteImage", truncating_write)
    with pytest.raises(OutputError, match="nothing was written"):
        write_volume(random_volume((8, 8, 8), seed=2), target, overwrite=True)
    assert target.read_bytes() == earlier and everything_under(tmp_path) == ["v.nii.gz"]


@pytest.mark.parametrize("failure", [OSError(13, "Permission denied"), KeyboardInterrupt()],
                         ids=["rename-fails", "interrupted"])
def test_a_commit_that_fails_half_way_puts_every_earlier_file_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    """Four outputs replacing earlier ones; the last rename into place fails (or Ctrl-C arrives there): the three
    already renamed are undone and every earlier file is back, byte for byte."""
    from MRISuperResLib.engine.enhance import enhance_file

    source = smooth_input(tmp_path / "in" / "t1.nii.gz")
    model = make_tiny_model(tmp_path / "tiny-x2.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    names = ["sr.nii.gz", "sr.nii.gz.json", "baseline.nrrd", "baseline.nrrd.json"]
    for name in names:
        (out / name).write_bytes(f"earlier {name}".encode())
    real_replace = os.replace
    failed: list[bool] = []

    def failing_replace(source_path, target_path):
        staged = Path(source_path).name == "sr.nii.gz.json" and ".mrisuperres-partial-" in str(source_path)
        if Path(target_path) == out / "sr.nii.gz.json" and staged and not failed:
            failed.append(True)
            raise failure
        return real_replace(source_path, target_path)

    monkeypatch.setattr(volume_io.os, "replace", failing_replace)
    with pytest.raises(type(failure) if isinstance(failure, KeyboardInterrupt) else OutputError):
        enhance_file(source, out / "sr.nii.gz", model, 2, baseline_path=out / "baseline.nrrd", overwrite=True,
                     device="cpu")
    assert failed
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {name: f"earlier {name}".encode() for name in names}


def test_nhdr_and_mhd_outputs_of_one_name_uncompressed_are_refused_before_any_work(tmp_path: Path, capsys) -> None:
    """Uncompressed, ``x.nhdr`` and ``x.mhd`` would both keep their voxels in ``x.raw``."""
    source = smooth_input(tmp_path / "in.nii.gz", seed=1)
    (tmp_path / "out").mkdir()
    code, _, err = run_main(capsys, "enhance", source, tmp_path / "out" / "x.nhdr", "--baseline",
                            tmp_path / "out" / "x.mhd", "--no-compress", "--model", tmp_path / "no-such-model")
    assert code == 1 and "model" not in error_lines(err)[0], err
    assert list((tmp_path / "out").iterdir()) == []
