"""``evaluate`` over a set of volumes: Fourier zero-filling, masked SSIM, several noise levels, one table (Markdown,
CSV, JSON), folders as input.

Requirements under test: zero-filling is the exact inverse of k-space truncation for a band-limited volume (and
truncation of a zero-filled volume gives the input back), on the cell-centred grid, for even and odd sizes; SSIM
inside a mask is the mean of the SSIM map over the mask and equals MONAI's whole-volume SSIM without one; the
noise level a simulation drew is the one reported; ``mrisuperres evaluate FOLDER --noise 0 0.01`` prints one
table with every volume and the mean per noise level, and the same rows as CSV and JSON.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import make_tiny_model
from MRISuperResLib.cli.app import main
from MRISuperResLib.processing.degradation import DegradationSpec, degrade
from MRISuperResLib.errors import InputError
from MRISuperResLib.evaluation.evaluate import (
    drawn_noise_level,
    expand_references,
    simulated_pair,
    zero_fill,
)
from MRISuperResLib.imaging.geometry import resampled_grid
from MRISuperResLib.evaluation.metrics import masked_mean_ssim, ssim, ssim_map
from MRISuperResLib.imaging.volume import Grid, Volume
from MRISuperResLib.imaging.volume_io import write_volume


def band_limited(shape: tuple[int, int, int], band: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A real volume on the cell-centred grid of ``shape`` whose spectrum is zero at ``|k| >= band / 2`` per axis."""
    rng = np.random.default_rng(seed)
    spectrum = np.zeros(shape, dtype=np.complex128)
    keep = [np.abs(np.fft.fftfreq(n, d=1.0 / n)) < b / 2 for n, b in zip(shape, band)]
    where = np.ix_(*keep)
    spectrum[where] = rng.standard_normal(spectrum[where].shape) + 1j * rng.standard_normal(spectrum[where].shape)
    # Taking the real part keeps the band (a Hermitian-symmetrised spectrum of the same support).
    return np.real(np.fft.ifftn(spectrum)) * np.sqrt(np.prod(shape)) + 3.0


@pytest.mark.parametrize("fine, coarse", [((24, 20, 16), (12, 10, 8)), ((21, 18, 15), (7, 9, 5)),
                                          ((16, 15, 12), (8, 15, 3))], ids=["x2-even", "odd-sizes", "per-axis"])
def test_zero_filling_exactly_inverts_kspace_truncation_of_a_band_limited_volume(fine, coarse) -> None:
    truth = band_limited(fine, coarse)
    grid = Grid(fine, (1.0, 0.9, 1.2), (5.0, -3.0, 2.0), np.eye(3))
    low = Volume(degrade(truth, coarse, DegradationSpec("kspace")).astype(np.float64), resampled_grid(grid, coarse))
    filled = zero_fill(low, grid)
    assert filled.grid.same_geometry(grid, tolerance=1e-9)
    np.testing.assert_allclose(filled.array, truth, atol=1e-4 * np.abs(truth).max())
    # Cubic B-spline is not the inverse of truncation: the test can tell the two apart.
    from scipy import ndimage

    spline = ndimage.zoom(low.array, [f / c for f, c in zip(fine, coarse)], order=3, mode="reflect", grid_mode=True)
    assert np.abs(spline - truth).max() > 100 * np.abs(filled.array - truth).max()


def test_truncating_a_zero_filled_volume_gives_the_input_back() -> None:
    rng = np.random.default_rng(3)
    for coarse, fine in [((10, 8, 6), (20, 16, 12)), ((9, 7, 5), (18, 21, 10))]:
        low_array = rng.standard_normal(coarse)
        low = Volume(low_array, Grid(coarse, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), np.eye(3)))
        filled = zero_fill(low, resampled_grid(low.grid, fine))
        np.testing.assert_allclose(degrade(filled.array, coarse, DegradationSpec("kspace")), low_array, atol=1e-4)


def test_zero_filling_refuses_a_grid_over_another_extent() -> None:
    low = Volume(np.ones((4, 4, 4), np.float32), Grid((4, 4, 4), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), np.eye(3)))
    with pytest.raises(ValueError, match="extent"):
        zero_fill(low, Grid((8, 8, 8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)))
    np.testing.assert_allclose(zero_fill(low, resampled_grid(low.grid, (8, 8, 8))).array, 1.0, atol=1e-6)


def test_masked_ssim_is_the_ssim_map_mean_over_the_mask(small_real_volume: Volume) -> None:
    import torch
    from monai.metrics import SSIMMetric

    truth = small_real_volume.array
    noisy = truth + np.random.default_rng(0).normal(0, 5, truth.shape).astype(np.float32)
    low, high = np.percentile(truth, [1, 99])
    scaled = [torch.from_numpy(((a - low) / (high - low)).astype(np.float32))[None, None] for a in (noisy, truth)]
    monai_value = float(SSIMMetric(spatial_dims=3, data_range=1.0, win_size=7)(*scaled).mean())
    assert ssim(noisy, truth) == pytest.approx(monai_value, abs=1e-6)
    head = truth > 0.1 * np.percentile(truth, 99)
    values = ssim_map(noisy, truth)
    assert values.shape == tuple(n - 6 for n in truth.shape)
    inside = ssim(noisy, truth, mask=head)
    assert inside == pytest.approx(float(values[head[3:-3, 3:-3, 3:-3]].mean()))
    # The background is noise on zero: SSIM there is far lower, so masking changes the value.
    assert masked_mean_ssim(values, ~head) < inside - 0.1


def test_the_reported_noise_level_is_the_one_drawn(small_real_volume: Volume) -> None:
    spec = DegradationSpec("kspace", noise=(0.0, 0.03))
    level = drawn_noise_level(spec, 7)
    assert 0.0 < level < 0.03
    _, drawn = simulated_pair(small_real_volume, (2, 2, 2), spec, 7)
    _, fixed = simulated_pair(small_real_volume, (2, 2, 2), replace(spec, noise=(level, level)), 7)
    np.testing.assert_array_equal(drawn.array, fixed.array)
    assert drawn_noise_level(DegradationSpec("kspace"), 7) == 0.0


def test_a_folder_expands_to_its_volumes(tmp_path: Path) -> None:
    (tmp_path / "b.nii.gz").write_bytes(b"")
    (tmp_path / "a.nrrd").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in expand_references([tmp_path])] == ["a.nrrd", "b.nii.gz"]
    with pytest.raises(InputError, match="does not exist"):
        expand_references([tmp_path / "missing"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="no volume files"):
        expand_references([empty])


@pytest.fixture(scope="module")
def reference_folder(tmp_path_factory: pytest.TempPathFactory, small_real_volume: Volume) -> Path:
    folder = tmp_path_factory.mktemp("refs")
    write_volume(small_real_volume, folder / "brain_a.nii.gz")
    shifted = small_real_volume.array[2:, 1:, :-2]
    write_volume(Volume(shifted, Grid(shifted.shape, small_real_volume.spacing, small_real_volume.grid.origin,
                                      small_real_volume.grid.direction)), folder / "brain_b.nii.gz")
    return folder


def test_evaluate_a_folder_at_several_noise_levels_prints_one_table_csv_and_json(
        reference_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture, single_thread) -> None:
    model = make_tiny_model(tmp_path / "tiny-x2.safetensors")
    table_csv = tmp_path / "table.csv"
    assert main(["evaluate", str(reference_folder), "--model", str(model), "--device", "cpu", "--kind", "kspace",
                 "--noise", "0", "0.02", "--csv", str(table_csv), "--output", str(tmp_path / "t.md")]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert "PSNR zero-fill" in rows[0] and "SSIM zero-fill" in rows[0]
    body = [r for r in rows[1:] if not r.startswith("|---")]
    assert [r.split(" | ")[0] for r in body] == ["| brain_a.nii.gz", "| brain_b.nii.gz", "| **mean** (2 volumes)"] * 2
    assert [r.split(" | ")[1] for r in body] == ["kspace, noise 0"] * 3 + ["kspace, noise 0.02"] * 3
    assert (tmp_path / "t.md").read_text() == table
    with table_csv.open() as handle:
        records = list(csv.DictReader(handle))
    assert [r["volume"] for r in records] == ["brain_a.nii.gz", "brain_b.nii.gz", "mean"] * 2
    for record in records:
        assert float(record["gain"]) == pytest.approx(float(record["psnr_sr"]) - float(record["psnr_baseline"]))
    assert float(records[2]["psnr_zerofill"]) == pytest.approx(
        (float(records[0]["psnr_zerofill"]) + float(records[1]["psnr_zerofill"])) / 2)
    # Noise costs zero-filling (which keeps all of it) PSNR.
    assert float(records[5]["psnr_zerofill"]) < float(records[2]["psnr_zerofill"]) - 0.2

    assert main(["evaluate", str(reference_folder / "brain_a.nii.gz"), "--model", str(model), "--device", "cpu",
                 "--kind", "kspace", "--noise", "0.02", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    [volume] = report["volumes"]
    assert volume["name"] == "brain_a.nii.gz" and volume["noise"] == 0.02
    assert volume["condition"] == "kspace, noise 0.02"
    assert volume["psnr_zerofill"] == pytest.approx(float(records[3]["psnr_zerofill"]), abs=1e-6)
    assert 0 < volume["ssim_sr"] < 1 and volume["ssim_sr"] != pytest.approx(volume["ssim_sr_whole"], abs=1e-4)


def test_evaluate_says_which_precision_ran(reference_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                          single_thread) -> None:
    model = str(make_tiny_model(tmp_path / "tiny-x2.safetensors"))
    ref = str(reference_folder / "brain_a.nii.gz")
    runs = {}
    for precision in ("auto", "Float32"):
        assert main(["evaluate", ref, "--model", model, "--device", "cpu", "--noise", "0", "--precision",
                     precision]) == 0
        runs[precision] = capsys.readouterr().out
    assert "--precision" not in runs["auto"]
    assert "SR: the network ran with --precision float32 (on cpu (1 thread))." in runs["Float32"]
    assert runs["Float32"].split("\n\nSR: the network ran")[0] == runs["auto"].rstrip("\n")
    assert main(["evaluate", ref, "--model", model, "--device", "cpu", "--noise", "0", "--json", "--precision",
                 "float32"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["precision"] == "float32" and report["device"].startswith("cpu")


def test_evaluate_reports_the_noise_drawn_from_the_models_range(reference_folder: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture, single_thread) -> None:
    model = make_tiny_model(tmp_path / "tiny-x2.safetensors", degradation={"kind": "kspace", "noise": [0.0, 0.03]})
    assert main(["evaluate", str(reference_folder / "brain_b.nii.gz"), "--model", str(model), "--device", "cpu",
                 "--seed", "3", "--json"]) == 0
    [volume] = json.loads(capsys.readouterr().out)["volumes"]
    assert volume["noise"] == pytest.approx(drawn_noise_level(DegradationSpec("kspace", noise=(0.0, 0.03)), 3))
    assert volume["condition"] == "kspace, noise drawn in [0, 0.03]"


def test_evaluate_refuses_bad_requests_in_one_line(reference_folder: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    model = str(make_tiny_model(tmp_path / "tiny-x2.safetensors"))
    ref = str(reference_folder / "brain_a.nii.gz")
    for extra, message in [(["--noise", "-0.1"], "0 or more"), (["--labels", ref, ref], "one per reference"),
                           (["--low", ref, "--noise", "0", "0.01"], "does not apply with --low"),
                           (["--csv", str(tmp_path / "missing" / "t.csv")], "does not exist")]:
        assert main(["evaluate", ref, "--model", model, "--device", "cpu", *extra]) == 1
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error
    assert not (tmp_path / "missing").exists()


def test_a_cropped_reference_keeps_its_voxels_where_they_were(small_real_volume: Volume) -> None:
    from MRISuperResLib.evaluation.evaluate import central_block, crop_volume

    head = small_real_volume.array > 0.1 * np.percentile(small_real_volume.array, 99)
    block = central_block(small_real_volume, head, (16, 100, 12))
    assert [b.stop - b.start for b in block] == [16, small_real_volume.shape[1], 12]
    cropped = crop_volume(small_real_volume, block)
    np.testing.assert_array_equal(cropped.array, small_real_volume.array[block])
    start = np.array([[b.start for b in block]], dtype=np.float64)
    np.testing.assert_allclose(cropped.grid.physical_points(np.zeros((1, 3))),
                               small_real_volume.grid.physical_points(start))
    found = np.argwhere(head)
    centre = (found.min(axis=0) + found.max(axis=0) + 1) / 2.0
    assert abs((block[0].start + block[0].stop) / 2.0 - centre[0]) <= 0.5


def test_ssim_leaves_out_the_windows_of_excluded_voxels_and_a_mask_keeps_its_own() -> None:
    rng = np.random.default_rng(0)
    reference = rng.random((20, 20, 20)).astype(np.float32)
    estimate = reference + rng.normal(0, 0.1, reference.shape).astype(np.float32)
    none = np.zeros(reference.shape, bool)
    edge = none.copy()
    edge[:, :, 0] = True
    assert ssim(estimate, reference, none) == ssim(estimate, reference)
    broken = estimate.copy()
    broken[:, :, 0] = np.nan
    value = ssim(broken, reference, edge)  # the third argument excludes; the mask is a keyword
    assert np.isfinite(value) and value == pytest.approx(ssim(estimate[:, :, 1:], reference[:, :, 1:]), abs=1e-6)
    half = none.copy()
    half[:10] = True
    assert ssim(estimate, reference, mask=half) == pytest.approx(float(ssim_map(estimate, reference)[:7].mean()))


def test_evaluate_leaves_excluded_slices_out(reference_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                             single_thread) -> None:
    from MRISuperResLib.imaging.volume_io import read_volume

    model = str(make_tiny_model(tmp_path / "tiny-x2.safetensors"))
    clean = reference_folder / "brain_a.nii.gz"
    volume = read_volume(clean)
    spiked_array = volume.array.copy()
    spiked_array[10:12] = 3e4
    spiked = write_volume(volume.with_array(spiked_array), tmp_path / "spiked.nii.gz")
    results = {}
    for label, path, extra in (("clean", clean, ["--exclude-slices", "0:10-11"]),
                               ("spiked", spiked, ["--exclude-slices", "0:10-11"]), ("unexcluded", spiked, [])):
        assert main(["evaluate", str(path), "--model", model, "--device", "cpu", "--kind", "kspace", "--noise", "0",
                     "--json", *extra]) == 0
        results[label] = json.loads(capsys.readouterr().out)["volumes"][0]
    keys = ("psnr_sr", "psnr_baseline", "psnr_zerofill", "psnr_sr_whole", "ssim_sr", "ssim_baseline", "ssim_zerofill")
    assert [results["spiked"][k] for k in keys] == pytest.approx([results["clean"][k] for k in keys], abs=1e-6)
    assert results["unexcluded"]["psnr_baseline"] != pytest.approx(results["clean"]["psnr_baseline"], abs=0.5)
    assert main(["evaluate", str(spiked), "--model", model, "--exclude-slices", "0:1", "1:2"]) == 1


def test_evaluate_adapts_the_model_to_each_input_when_asked(mni_volume: Volume, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture, single_thread) -> None:
    """``--adapt-steps``: each simulated thick-slice input adapts the shipped thick model before it is enhanced; the
    scores change, and the table and JSON say so. An isotropic scale is refused in one line."""
    start = [n // 2 - 24 for n in mni_volume.shape]
    crop = mni_volume.array[start[0]:start[0] + 48, start[1]:start[1] + 48, start[2]:start[2] + 48].astype(np.float32)
    crop = crop.max() - crop  # a contrast the model never trained on (T2-like): adaptation has something to learn
    reference = tmp_path / "mni_crop.nii.gz"
    write_volume(Volume(crop.astype(np.float32), Grid(crop.shape, mni_volume.spacing, mni_volume.grid.origin,
                                                      mni_volume.grid.direction)), reference)
    common = ["evaluate", str(reference), "--model", "edsr3d-thick-x4-brain", "--scale", "1,1,4", "--device", "cpu",
              "--json", "--quiet"]
    assert main(common) == 0
    [plain] = json.loads(capsys.readouterr().out)["volumes"]
    assert main([*common, "--adapt-steps", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    from MRISuperResLib.engine.device import cpu_has_bfloat16

    assert report["adapt"] == {"seconds": None, "steps": 3, "seed": 0, "trainable": "all",
                               "arithmetic": "bfloat16" if cpu_has_bfloat16() else "float32"}
    [adapted] = report["volumes"]
    assert adapted["psnr_baseline"] == pytest.approx(plain["psnr_baseline"])  # the same simulated input
    assert adapted["psnr_sr"] != pytest.approx(plain["psnr_sr"], abs=1e-6)
    assert main([*common[:-2], "--quiet", "--adapt-steps", "3"]) == 0
    assert "SR: the model adapted to each input before enhancing it (3 steps" in capsys.readouterr().out
    assert main([*common, "--adapt-steps", "1", "--precision", "float32"]) == 0  # float32 for the fine-tuning too
    assert json.loads(capsys.readouterr().out)["adapt"]["arithmetic"] == "float32"
    assert main(["evaluate", str(reference), "--scale", "2", "--device", "cpu", "--adapt"]) == 1
    error = capsys.readouterr().err
    assert "--adapt needs thick slices along one axis" in error and "Traceback" not in error
