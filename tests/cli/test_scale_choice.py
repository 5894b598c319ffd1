"""Which scale a run uses: from the input's voxels when --scale is not given (thick slices restored, never the fine
axes thinned), --scale iso, a fixed-scale model run at its own scale, and a warning for a scale that makes voxels
more anisotropic."""

from __future__ import annotations

import json

import pytest
import SimpleITK as sitk
from helpers import image_from_ijk, make_tiny_model, run_cli, smooth_array, terminal_lines, write_image

from MRISuperResLib.engine.model_zoo import load_model
from MRISuperResLib.imaging.geometry import (anisotropy_warning, default_scale, format_voxel_range, isotropic_scale,
                                             voxel_size_warning)


@pytest.mark.parametrize(("spacing", "supported", "expected"), [
    ((1.0, 1.0, 1.0), None, (2.0, 2.0, 2.0)),
    ((1.0, 1.0, 1.3), None, (2.0, 2.0, 2.0)),          # near-isotropic: the plain default
    ((1.0, 1.0, 4.0), None, (1.0, 1.0, 4.0)),          # thick k: restore it, never thin i and j
    ((3.0, 1.0, 1.0), None, (3.0, 1.0, 1.0)),
    ((0.4, 0.4, 6.0), None, (1.0, 1.0, 5.0)),          # at most 5
    ((1.0, 1.0, 1.0), [(1.0, 1.0, 4.0)], (1.0, 1.0, 4.0)),   # a thick-only model runs at its scale, along k
    ((1.0, 4.0, 1.0), [(1.0, 1.0, 2.0)], (1.0, 2.0, 1.0)),   # ... its largest factor on the thickest axis
    ((1.0, 1.0, 4.0), [(1.0, 1.0, 4.0), (2.0, 2.0, 2.0)], (1.0, 1.0, 4.0)),
])
def test_default_scale_follows_the_voxels_and_the_model(spacing, supported, expected) -> None:
    assert default_scale(spacing, supported) == expected


def test_iso_and_the_anisotropy_warning() -> None:
    assert isotropic_scale((1.0, 1.0, 1.2)) is None and isotropic_scale((2.0, 1.0, 1.0)) == (2.0, 1.0, 1.0)
    warning = anisotropy_warning((3.0, 1.0, 1.0), (1.0, 1.0, 3.0))
    assert warning is not None and "3 x 1 x 0.333 mm" in warning and "scale 3,1,1 (--scale iso" in warning
    assert "\n" not in warning
    assert anisotropy_warning((1.0, 1.0, 4.0), (1.0, 1.0, 4.0)) is None
    assert anisotropy_warning((1.0, 1.0, 1.0), (2.0, 2.0, 2.0)) is None
    assert "isotropic factor" in anisotropy_warning((1.0, 1.0, 1.0), (1.0, 1.0, 2.0))


def test_the_voxel_size_warning_names_the_output_voxels_and_the_trained_range() -> None:
    warning = voxel_size_warning((0.4, 0.4, 6.0), (1.0, 1.0, 4.0), (0.9, 1.0))
    assert warning is not None and "0.4 x 0.4 x 1.5 mm" in warning and "0.9-1 mm" in warning
    assert "\n" not in warning
    assert voxel_size_warning((1.0, 1.0, 4.0), (1.0, 1.0, 4.0), (0.9, 1.0)) is None
    assert voxel_size_warning((1.6, 1.6, 7.0), (1.0, 1.0, 4.0), (0.9, 1.0)) is None  # within a factor of 2
    assert voxel_size_warning((1.0, 1.0, 1.0), (2.0, 2.0, 2.0), (0.9, 1.0)) is None  # x2 on 1 mm scans: common use
    assert voxel_size_warning((0.4, 0.4, 6.0), (1.0, 1.0, 4.0), None) is None  # range unknown: no warning
    warning = voxel_size_warning((6.0, 6.0, 6.0), (2.0, 2.0, 2.0), (1.0, 1.0))
    assert "3 x 3 x 3 mm lie outside the 1 mm" in warning


def test_a_shipped_model_warns_about_voxels_far_from_its_training(tmp_path, capsys) -> None:
    scan = write_image(tmp_path / "fine.nrrd", image_from_ijk(smooth_array((24, 24, 12)), (0.4, 0.4, 2.0)))
    code, stdout, err = run_cli(capsys, "enhance", scan, tmp_path / "sr.nrrd", "--model", "edsr3d-thick-x2-brain",
                                "--scale", "1,1,2", "--json", "--no-sidecar")
    assert code == 0, err
    trained = format_voxel_range(load_model("edsr3d-thick-x2-brain", (1, 1, 2)).metadata.trained_voxel_mm)
    assert any(f"0.4 x 0.4 x 1 mm lie outside the {trained} mm" in line for line in json.loads(stdout)["warnings"])
    assert any("lie outside" in line for line in terminal_lines(err) if line.startswith("mrisuperres: warning:"))


@pytest.fixture()
def thick_scan(tmp_path):
    """A small scan with 1 x 1 x 2 mm voxels (thick slices along k)."""
    return write_image(tmp_path / "in" / "thick.nrrd", image_from_ijk(smooth_array((12, 12, 8)), (1.0, 1.0, 2.0)))


def test_a_thick_scan_without_scale_gets_its_slices_restored(tmp_path, thick_scan, capsys) -> None:
    model = make_tiny_model(tmp_path / "thick-x2.safetensors", scale=(1, 1, 2))
    out = tmp_path / "out" / "sr.nrrd"
    out.parent.mkdir()
    code, stdout, err = run_cli(capsys, "enhance", thick_scan, out, "--model", model, "--json", "--no-sidecar")
    assert code == 0, err
    assert json.loads(stdout)["scale"] == "1,1,2"
    assert sitk.ReadImage(str(out)).GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
    notes = terminal_lines(err)
    assert notes == ["mrisuperres: 1 x 1 x 2 mm voxels: enhancing at --scale 1,1,2 (give --scale to choose another)"]


def test_scale_iso_and_a_scale_that_thins_the_fine_axes(tmp_path, thick_scan, capsys) -> None:
    thick_model = make_tiny_model(tmp_path / "thick-x2.safetensors", scale=(1, 1, 2))
    out = tmp_path / "out"
    out.mkdir()
    # Thick slices along k, but the scale asks for i: the voxels get more anisotropic (0.5 x 1 x 2 mm).
    code, stdout, err = run_cli(capsys, "enhance", thick_scan, out / "a.nrrd", "--model", thick_model, "--scale",
                                "2,1,1", "--json", "--no-sidecar")
    assert code == 0, err
    [warning] = [line for line in terminal_lines(err) if line.startswith("mrisuperres: warning:")]
    assert "0.5 x 1 x 2 mm" in warning and "scale 1,1,2 (--scale iso" in warning
    # The engine's warning: in the run's summary (and so in sidecars and cohort manifests) too.
    assert any("more anisotropic" in line for line in json.loads(stdout)["warnings"])
    # --scale iso with an isotropic-only model: refused in one line, nothing written, naming its scales.
    model = make_tiny_model(tmp_path / "any-x2.safetensors", scale=(2, 2, 2))
    code, _, err = run_cli(capsys, "enhance", thick_scan, out / "b.nrrd", "--model", model, "--scale", "iso")
    assert code == 1 and "cannot do scale 1,1,2" in err and "Traceback" not in err
    assert not (out / "b.nrrd").exists()


def test_scale_iso_on_isotropic_voxels_is_refused_in_one_line(tmp_path, capsys) -> None:
    scan = write_image(tmp_path / "iso.nrrd", image_from_ijk(smooth_array((12, 12, 8)), (1.0, 1.0, 1.0)))
    code, _, err = run_cli(capsys, "enhance", scan, tmp_path / "sr.nrrd", "--scale", "iso")
    lines = terminal_lines(err)
    assert code == 1 and len(lines) == 1 and "already near-isotropic" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iso.nrrd"]


def test_a_scale_chosen_for_a_one_scale_model_also_warns(tmp_path, capsys) -> None:
    scan = write_image(tmp_path / "iso.nrrd", image_from_ijk(smooth_array((12, 12, 8)), (1.0, 1.0, 1.0)))
    model = make_tiny_model(tmp_path / "thick-x2.safetensors", scale=(1, 1, 2))
    code, _, err = run_cli(capsys, "enhance", scan, tmp_path / "sr.nrrd", "--model", model, "--no-sidecar")
    lines = terminal_lines(err)
    assert code == 0 and any("enhancing at --scale 1,1,2" in line for line in lines), err
    assert any(line.startswith("mrisuperres: warning: scale 1,1,2 turns 1 x 1 x 1 mm") for line in lines), err
