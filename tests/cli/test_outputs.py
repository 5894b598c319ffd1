"""Command line, one input: the super-resolved volume and its companions (baseline, difference, consistency,
figure, JSON sidecar), the summary, the progress bar, and the label-map warning for integer volumes."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import (
    SHAPE,
    SPACING,
    assert_clean_failure,
    fingerprint,
    image_from_ijk,
    partial_folders,
    run_cli,
    sidecar_of,
    smooth_array,
    terminal_lines,
    write_image,
)
from MRISuperResLib.cli import app as cli

# ------------------------------------------------------------------------------------- label maps


def test_label_map_like_volume_warns_but_succeeds(layout, tiny_model, capsys):
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:10, 3:11, 2:8] = 1
    labels[4:8, 5:9, 3:7] = 2
    labels[5:7, 6:8, 4:6] = 3
    source = write_image(layout["root"] / "in" / "labels.nii.gz", image_from_ijk(labels))
    before = fingerprint(source.parent)
    output = layout["out"] / "labels_sr.nii.gz"
    code, out, err = run_cli(capsys, "enhance", source, output, "--model", tiny_model, "--quiet")
    assert code == 0, err
    warnings = [line for line in terminal_lines(err) if line.startswith("mrisuperres: warning:")]
    assert len(warnings) == 1, err
    assert "label map" in warnings[0] and "4 distinct" in warnings[0]
    assert "mrisuperres: error" not in err
    assert output.is_file() and sidecar_of(output).is_file()
    assert fingerprint(source.parent) == before


def test_intensity_volume_gives_no_label_map_warning(layout, tiny_model, capsys):
    array = np.rint(smooth_array() * 10).astype(np.int16)  # integer, but many distinct values
    source = write_image(layout["root"] / "in" / "t1_int.nrrd", image_from_ijk(array))
    code, _, err = run_cli(capsys, "enhance", source, layout["out"] / "sr.nrrd", "--model", tiny_model, "--quiet")
    assert code == 0, err
    assert "label map" not in err


# ---------------------------------------------------------------------------------- success paths


def test_single_file_with_all_companions_and_json(layout, tiny_model, capsys):
    out_dir = layout["out"]
    paths = {
        "sr": out_dir / "t1_sr.nii.gz",
        "baseline": out_dir / "t1_bspline.nii.gz",
        "difference": out_dir / "t1_diff.nrrd",
        "consistency": out_dir / "t1_dc.mha",
    }
    before = fingerprint(layout["input"].parent)
    code, out, err = run_cli(
        capsys, "enhance", layout["input"], paths["sr"], "--model", tiny_model, "--scale", "2", "--device", "cpu",
        "--baseline", paths["baseline"], "--difference", paths["difference"], "--consistency", paths["consistency"],
        "--tile", "8", "--overlap", "0.25", "--json",
    )
    assert code == 0, err
    result = json.loads(out)  # stdout is only the JSON document
    for key in ("timings_s", "device", "outputs", "consistency_nrmse"):
        assert key in result
    assert result["device"].startswith("cpu")
    assert result["outputs"] == {role: str(path) for role, path in paths.items()}
    assert np.isfinite(result["consistency_nrmse"]) and result["consistency_nrmse"] >= 0
    assert result["timings_s"]["total"] > 0 and "inference" in result["timings_s"]
    assert result["input_shape"] == list(SHAPE)
    assert result["output_shape"] == [2 * n for n in SHAPE]
    assert result["model"] == "tiny-x2" and result["scale"] == "2"

    for role, path in paths.items():
        assert path.is_file(), role
        image = sitk.ReadImage(str(path))
        expected = SHAPE if role == "consistency" else tuple(2 * n for n in SHAPE)
        assert image.GetSize() == expected, role
        assert image.GetSpacing() == pytest.approx(SPACING if role == "consistency" else (1.0, 1.0, 1.0)), role
        sidecar = json.loads(sidecar_of(path).read_text())
        assert sidecar["run"]["model"] == "tiny-x2", role
        assert sidecar["provenance"], role
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        [p.name for p in paths.values()] + [sidecar_of(p).name for p in paths.values()])
    assert fingerprint(layout["input"].parent) == before
    assert "Traceback" not in err and "mrisuperres: error" not in err


def test_single_file_human_summary_and_no_sidecar(layout, tiny_model, capsys):
    output = layout["out"] / "sr.nii.gz"
    code, out, err = run_cli(capsys, "enhance", layout["input"], output, "--model", tiny_model, "--no-sidecar")
    assert code == 0, err
    assert f"{layout['input']} -> {output}" in out
    assert "consistency NRMSE" in out
    assert sorted(p.name for p in layout["out"].iterdir()) == ["sr.nii.gz"]



def test_figure_is_written_with_the_outputs(layout, tiny_model, capsys):
    pytest.importorskip("matplotlib")
    figure = layout["out"] / "t1.png"
    code, out, err = run_cli(capsys, "enhance", layout["input"], layout["out"] / "sr.nii.gz", "--model", tiny_model,
                              "--figure", figure, "--json")
    assert code == 0, err
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(out)["outputs"]["figure"] == str(figure)
    assert partial_folders(layout["root"]) == []


@pytest.mark.parametrize("where", ["existing", "missing-folder"])
def test_bad_figure_path_is_refused_before_anything_is_written(layout, tiny_model, capsys, where):
    """The --figure PNG is an output like the others: an existing file (without --overwrite) or a missing folder
    must be refused up front, not after the volumes were written."""
    pytest.importorskip("matplotlib")
    if where == "existing":
        figure = layout["out"] / "t1.png"
        figure.write_bytes(b"earlier figure")
        phrase = "already exists"
    else:
        figure = layout["root"] / "no_such_folder" / "t1.png"
        phrase = "does not exist"
    output = layout["out"] / "sr.nii.gz"
    before = fingerprint(layout["root"])
    code, _, err = run_cli(capsys, "enhance", layout["input"], output, "--model", tiny_model, "--figure", figure)
    assert_clean_failure(code, err, (phrase,), root=layout["root"], before=before, outputs=(output,))


def test_progress_bar_is_shown_on_a_terminal(layout, tiny_model, capsys, monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    code = cli.main(["enhance", str(layout["input"]), str(layout["out"] / "sr.nii.gz"), "--model", str(tiny_model)])
    monkeypatch.undo()
    assert code == 0
    shown = terminal.getvalue()
    assert "%|" in shown and "super-resolving" in shown and "t1.nii.gz" in shown
    # the bar is cleared when done: nothing is left on the terminal
    assert terminal_lines(shown) == []
