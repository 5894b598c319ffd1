"""``evaluate`` compares the result with its reference in physical space, not index by index.

Requirement under test: the same anatomy stored with an axis reversed (or axes permuted) scores the same as
stored plainly; a result on a grid that is not voxel-aligned with the reference (``register --grid coarse:2`` of
an odd-sized reference) is resampled onto the reference grid and scored; grids that do not overlay are refused
in one line.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import make_tiny_model

from MRISuperResLib.engine.checkpoint import load_model_file
from MRISuperResLib.cli.app import main
from MRISuperResLib.processing.degradation import DegradationSpec
from MRISuperResLib.errors import InputError
from MRISuperResLib.evaluation.evaluate import evaluate_files, simulated_pair
from MRISuperResLib.evaluation.geometry import overlay_on_reference
from MRISuperResLib.imaging.geometry import resampled_grid
from MRISuperResLib.processing.interpolation import resample_to_grid
from MRISuperResLib.imaging.volume import Grid, Volume
from MRISuperResLib.imaging.volume_io import write_volume


def reversed_axis(volume: Volume, axis: int) -> Volume:
    """The same voxels at the same places, stored with index axis ``axis`` reversed."""
    grid = volume.grid
    direction = grid.direction.copy()
    direction[:, axis] *= -1
    origin = np.asarray(grid.origin) + grid.direction[:, axis] * grid.spacing[axis] * (grid.shape[axis] - 1)
    array = np.ascontiguousarray(np.flip(volume.array, axis))
    return Volume(array, Grid(array.shape, grid.spacing, tuple(origin), direction))


def swapped_axes(volume: Volume, first: int, second: int) -> Volume:
    """The same voxels at the same places, stored with index axes ``first`` and ``second`` exchanged."""
    order = [0, 1, 2]
    order[first], order[second] = order[second], order[first]
    grid = volume.grid
    array = np.ascontiguousarray(np.transpose(volume.array, order))
    return Volume(array, Grid(array.shape, tuple(grid.spacing[a] for a in order), grid.origin,
                              grid.direction[:, order]))


@pytest.fixture(scope="module")
def pair(small_real_volume: Volume) -> tuple[Volume, Volume]:
    """(reference cropped to even size, its simulated x2 low-resolution input)."""
    return simulated_pair(small_real_volume, (2, 2, 2), DegradationSpec.from_dict({"kind": "kspace"}), seed=0)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    return load_model_file(make_tiny_model(tmp_path_factory.mktemp("m") / "tiny-x2.safetensors"))


def scores_for(tmp: Path, reference: Volume, low: Volume, model, name: str):
    ref_path = write_volume(reference, tmp / f"ref_{name}.nii.gz", overwrite=True)
    low_path = write_volume(low, tmp / f"low_{name}.nii.gz", overwrite=True)
    [scores] = evaluate_files([ref_path], model, (2, 2, 2), low_inputs=[low_path], device="cpu")
    return scores


@pytest.mark.parametrize("store", [
    lambda v: reversed_axis(v, 0), lambda v: reversed_axis(v, 2), lambda v: swapped_axes(v, 0, 1),
    lambda v: reversed_axis(swapped_axes(v, 1, 2), 1),
], ids=["i-reversed", "k-reversed", "i-j-swapped", "j-k-swapped-and-reversed"])
def test_a_low_input_stored_with_other_axes_scores_as_stored_plainly(tmp_path: Path, pair, model, store) -> None:
    reference, low = pair
    plain = scores_for(tmp_path, reference, low, model, "plain")
    moved = scores_for(tmp_path, reference, store(low), model, "moved")
    assert plain.alignment == "same grid" and moved.alignment == "re-indexed"
    # B-spline is the same operation whatever the storage order: the same score to float precision.
    assert moved.psnr_baseline == pytest.approx(plain.psnr_baseline, abs=0.01)
    assert moved.ssim_baseline == pytest.approx(plain.ssim_baseline, abs=1e-4)
    # The network is not flip-invariant, but sees the same anatomy: close scores, not index-mismatch ones.
    assert moved.psnr_sr == pytest.approx(plain.psnr_sr, abs=1.0)


def test_a_reference_stored_with_a_reversed_axis_is_scored_in_physical_space(tmp_path: Path, pair, model) -> None:
    reference, low = pair
    plain = scores_for(tmp_path, reference, low, model, "plain")
    moved = scores_for(tmp_path, reversed_axis(reference, 1), low, model, "moved")
    assert moved.psnr_baseline == pytest.approx(plain.psnr_baseline, abs=0.01)


def test_a_coarse_grid_of_an_odd_reference_is_resampled_onto_it(tmp_path: Path, small_real_volume: Volume,
                                                                  model) -> None:
    """``register --grid coarse:2`` style: rint(n / 2) voxels over the reference's extent, so for odd n the SR
    voxel centres fall between the reference's."""
    reference = small_real_volume
    odd = [n for n in reference.shape if n % 2]
    assert odd, "the test volume needs an odd size along some axis"
    coarse = resampled_grid(reference.grid, tuple(int(np.rint(n / 2)) for n in reference.shape))
    low = resample_to_grid(reference, coarse, "linear")
    scores = scores_for(tmp_path, reference, low, model, "coarse")
    assert scores.alignment == "resampled (linear)"
    even, even_low = simulated_pair(reference, (2, 2, 2), DegradationSpec.from_dict({"kind": "box"}), seed=0)
    aligned = scores_for(tmp_path, even, even_low, model, "even")
    assert np.isfinite([scores.psnr_sr, scores.psnr_baseline, scores.ssim_sr]).all()
    assert scores.psnr_baseline == pytest.approx(aligned.psnr_baseline, abs=3.0)


def test_overlay_crops_to_the_voxels_both_cover(pair) -> None:
    reference, low = pair
    grid = reference.grid
    shifted = Volume(reference.array[4:, :, :].copy(),
                     Grid((grid.shape[0] - 4, *grid.shape[1:]), grid.spacing,
                          tuple(np.asarray(grid.origin) + grid.direction[:, 0] * 4 * grid.spacing[0]), grid.direction))
    overlay = overlay_on_reference([shifted], reference, "ref")
    assert overlay.how == "re-indexed" and overlay.block[0] == (4, grid.shape[0])
    np.testing.assert_array_equal(overlay.estimates[0], overlay.reference)


@pytest.mark.parametrize("shift_mm", [1000.0, -300.0])
def test_grids_that_do_not_overlay_are_refused_in_one_line(tmp_path: Path, pair, model, capsys, shift_mm) -> None:
    reference, low = pair
    far = Volume(low.array, replace(low.grid, origin=tuple(np.asarray(low.grid.origin) + shift_mm)))
    with pytest.raises(InputError, match="does not overlay reference"):
        scores_for(tmp_path, reference, far, model, "far")
    ref_path, low_path = tmp_path / "ref_far.nii.gz", tmp_path / "low_far.nii.gz"
    model_path = make_tiny_model(tmp_path / "m.safetensors")
    code = main(["evaluate", str(ref_path), "--low", str(low_path), "--model", str(model_path), "--device", "cpu"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "does not overlay reference ref_far.nii.gz" in lines[0], err


def test_evaluate_json_reports_how_each_volume_was_aligned(tmp_path: Path, pair, capsys) -> None:
    reference, low = pair
    ref_path = write_volume(reference, tmp_path / "ref.nii.gz")
    low_path = write_volume(reversed_axis(low, 0), tmp_path / "low.nii.gz")
    model_path = make_tiny_model(tmp_path / "m.safetensors")
    assert main(["evaluate", str(ref_path), "--low", str(low_path), "--model", str(model_path), "--device", "cpu",
                 "--json"]) == 0
    [volume] = json.loads(capsys.readouterr().out)["volumes"]
    assert volume["alignment"] == "re-indexed"
