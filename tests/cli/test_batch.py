"""Command line, several inputs or a folder of inputs into an output folder: companions per input, JSON, and a
bad input that is reported while the others are written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import (
    SHAPE,
    assert_clean_failure,
    fingerprint,
    image_from_ijk,
    partial_folders,
    run_cli,
    smooth_array,
    terminal_lines,
    write_image,
    write_smooth,
)
from MRISuperResLib.cli import app as cli

# ------------------------------------------------------------------------------------ several inputs


def test_several_inputs_into_a_folder_with_companions(tmp_path, tiny_model, capsys):
    a = write_smooth(tmp_path / "in" / "a.nii.gz", seed=1)
    b = write_smooth(tmp_path / "in" / "b.nrrd", seed=2)
    out_dir = tmp_path / "results"  # created by the run
    before = fingerprint(tmp_path / "in")
    code, out, err = run_cli(capsys, "enhance", a, b, out_dir, "--model", tiny_model, "--companions", "--quiet")
    assert code == 0, err
    expected = set()
    for stem, ext in (("a", ".nii.gz"), ("b", ".nrrd")):
        for suffix in ("_sr", "_sr_baseline", "_sr_difference", "_sr_consistency"):
            expected |= {f"{stem}{suffix}{ext}", f"{stem}{suffix}{ext}.json"}
    assert {p.name for p in out_dir.iterdir()} == expected
    assert sitk.ReadImage(str(out_dir / "a_sr.nii.gz")).GetSize() == tuple(2 * n for n in SHAPE)
    assert sitk.ReadImage(str(out_dir / "b_sr_consistency.nrrd")).GetSize() == SHAPE
    assert f"{a} -> {out_dir / 'a_sr.nii.gz'}" in out and f"{b} -> {out_dir / 'b_sr.nrrd'}" in out
    assert fingerprint(tmp_path / "in") == before


def test_folder_of_inputs_into_an_output_folder_json(tmp_path, tiny_model, capsys):
    scans = tmp_path / "scans"
    write_smooth(scans / "s1.nii.gz", seed=1)
    write_smooth(scans / "s2.mha", seed=2)
    (scans / "notes.txt").write_text("not a volume\n")
    out_dir = tmp_path / "enhanced"
    out_dir.mkdir()
    before = fingerprint(scans)
    code, out, err = run_cli(capsys, "enhance", scans, out_dir, "--model", tiny_model, "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["failed"] == []
    assert [Path(r["input"]).name for r in payload["results"]] == ["s1.nii.gz", "s2.mha"]
    for result in payload["results"]:
        for key in ("timings_s", "device", "outputs", "consistency_nrmse"):
            assert key in result
    assert {p.name for p in out_dir.iterdir()} == {"s1_sr.nii.gz", "s1_sr.nii.gz.json", "s2_sr.mha",
                                                  "s2_sr.mha.json"}
    assert payload["results"][1]["outputs"]["sr"] == str(out_dir / "s2_sr.mha")
    assert fingerprint(scans) == before


def test_empty_input_folder_is_a_one_line_error(tmp_path, tiny_model, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("nothing here\n")
    before = fingerprint(tmp_path)
    code, _, err = run_cli(capsys, "enhance", tmp_path / "empty", tmp_path / "out", "--model", tiny_model)
    assert_clean_failure(code, err, ("holds no volume files",), root=tmp_path, before=before)


def _bad_nan(path: Path) -> Path:
    array = smooth_array()
    array[1, 1, 1] = np.nan
    return write_image(path.with_name("bad.nrrd"), image_from_ijk(array))  # NRRD keeps NaN (NIfTI: see above)


def _bad_constant(path: Path) -> Path:
    return write_image(path.with_name("bad.nii.gz"), image_from_ijk(np.full(SHAPE, 5.0, np.float32)))


def _bad_small(path: Path) -> Path:
    return write_smooth(path.with_name("bad.nii.gz"), shape=(12, 3, 10))


def _bad_unreadable(path: Path) -> Path:
    bad = path.with_name("bad.nii.gz")
    bad.write_bytes(b"\x00garbage" * 100)
    return bad


@pytest.mark.parametrize("make_bad", [_bad_nan, _bad_constant, _bad_small, _bad_unreadable],
                         ids=["nan", "constant", "too-small", "unreadable"])
def test_batch_with_one_bad_input_writes_the_others(tmp_path, tiny_model, capsys, make_bad):
    good1 = write_smooth(tmp_path / "in" / "good1.nii.gz", seed=1)
    bad = make_bad(tmp_path / "in" / "x")
    good2 = write_smooth(tmp_path / "in" / "good2.nii.gz", seed=2)
    out_dir = tmp_path / "out"
    before = fingerprint(tmp_path / "in")
    code, out, err = run_cli(capsys, "enhance", good1, bad, good2, out_dir, "--model", tiny_model, "--quiet")
    assert code == cli.EXIT_ERROR
    assert "Traceback" not in err
    assert {p.name for p in out_dir.iterdir()} == {"good1_sr.nii.gz", "good1_sr.nii.gz.json", "good2_sr.nii.gz",
                                                  "good2_sr.nii.gz.json"}
    errors = [line for line in terminal_lines(err) if line.startswith("mrisuperres: error:")]
    assert len(errors) == 1, err
    assert bad.name in errors[0], f"the error line does not say which input failed: {errors[0]!r}"
    assert "1 of 3 inputs failed" in err
    assert fingerprint(tmp_path / "in") == before
    assert partial_folders(tmp_path) == []


def test_batch_refuses_single_file_companion_options(tmp_path, tiny_model, capsys):
    a = write_smooth(tmp_path / "in" / "a.nii.gz")
    b = write_smooth(tmp_path / "in" / "b.nii.gz", seed=3)
    before = fingerprint(tmp_path)
    code, _, err = run_cli(capsys, "enhance", a, b, tmp_path / "in", "--baseline", tmp_path / "base.nii.gz",
                            "--model", tiny_model)
    assert_clean_failure(code, err, ("--companions",), root=tmp_path, before=before)


def test_batch_output_that_is_a_file_is_refused(tmp_path, tiny_model, capsys):
    a = write_smooth(tmp_path / "in" / "a.nii.gz")
    b = write_smooth(tmp_path / "in" / "b.nii.gz", seed=3)
    (tmp_path / "out.nii.gz").write_bytes(b"a file")
    before = fingerprint(tmp_path)
    code, _, err = run_cli(capsys, "enhance", a, b, tmp_path / "out.nii.gz", "--model", tiny_model)
    assert_clean_failure(code, err, ("must be a folder",), root=tmp_path, before=before)
