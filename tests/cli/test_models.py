"""Command line: ``mrisuperres models``, the default model, ``--version``, ``--no-compress`` and the help
texts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import SHAPE, SPACING, run_cli
from MRISuperResLib.engine.model_zoo import shipped_models
from MRISuperResLib.version import __version__

# ---------------------------------------------------------------------------- models, version, help


def test_models_lists_the_shipped_model(capsys):
    names = [entry.name for entry in shipped_models()]
    assert names, "no model is shipped"
    code, out, err = run_cli(capsys, "models")
    assert code == 0 and err == ""
    for name in names:
        assert name in out
    assert "default" in out


def test_default_model_restores_thick_slices_along_i(layout, capsys):
    """Without --model, 4,1,1 picks the shipped 1,1,4 model and runs it with the thick axis moved to k."""
    target = layout["out"] / "t1_iso.nii.gz"
    code, out, err = run_cli(capsys, "enhance", layout["input"], target, "--scale", "4,1,1", "--device", "cpu",
                              "--threads", "1", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["model"] == "edsr3d-thick-x4-brain" and result["axis_order"] == "jki"
    assert result["output_shape"] == [4 * SHAPE[0], SHAPE[1], SHAPE[2]]
    assert sitk.ReadImage(str(target)).GetSpacing() == pytest.approx((SPACING[0] / 4, SPACING[1], SPACING[2]))


def test_models_json(capsys):
    code, out, _ = run_cli(capsys, "models", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [row["name"] for row in rows] == [entry.name for entry in shipped_models()]
    for row in rows:
        assert {"name", "family", "scales", "parameters", "size_mb", "default_for", "description", "path"} <= set(row)
        assert Path(row["path"]).is_file() and row["parameters"] > 0
    assert any("isotropic" in row["default_for"] for row in rows)


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0
    assert out.strip() == f"mrisuperres {__version__}"


def test_no_compress_writes_raw_nrrd_and_metaimage_with_the_same_voxels(layout, tiny_model, capsys):
    outputs = {}
    for flag in ((), ("--no-compress",)):
        target = layout["out"] / f"sr{len(flag)}.nrrd"
        base = layout["out"] / f"base{len(flag)}.mha"
        code, _, err = run_cli(capsys, "enhance", layout["input"], target, "--model", tiny_model, "--baseline", base,
                                "--quiet", "--device", "cpu", *flag)
        assert code == 0, err
        header = target.read_bytes()[:1000]
        assert (b"encoding: raw" in header) == bool(flag) and (b"encoding: gzip" in header) != bool(flag)
        assert (b"CompressedData = True" in base.read_bytes()[:1000]) != bool(flag)
        outputs[flag] = (sitk.GetArrayFromImage(sitk.ReadImage(str(target))),
                         sitk.GetArrayFromImage(sitk.ReadImage(str(base))))
    for plain, packed in zip(outputs[()], outputs[("--no-compress",)]):
        np.testing.assert_array_equal(plain, packed)


def test_enhance_help_has_examples(capsys):
    code, out, _ = run_cli(capsys, "enhance", "--help")
    assert code == 0
    assert "examples" in out
    assert "mrisuperres enhance" in out
    for option in ("--model", "--scale", "--device", "--baseline", "--difference", "--consistency", "--tile",
                   "--overlap", "--json", "--overwrite", "--companions"):
        assert option in out, option


def test_top_level_help_has_examples(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    assert "examples" in out and "enhance" in out and "models" in out


def test_no_arguments_prints_help_and_fails(capsys):
    code, out, _ = run_cli(capsys)
    assert code != 0
    assert "usage:" in out and "enhance" in out
