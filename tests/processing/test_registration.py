"""Registration of real pairs (processing.registration) and the ``register`` CLI subcommand (cli.register)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import rotation_matrix

from MRISuperResLib.cli import register as cli_register
from MRISuperResLib.errors import InputError, MRISuperResError, OutputError
from MRISuperResLib.imaging.geometry import resampled_grid
from MRISuperResLib.processing import registration
from MRISuperResLib.processing.registration import (
    affine_matrix,
    load_transform,
    moving_grid_in_fixed_frame,
    register,
    resample_into,
    save_transform,
    transform_points,
)
from MRISuperResLib.imaging.volume import Volume
from MRISuperResLib.imaging.volume_io import from_sitk, read_volume, to_sitk, write_volume


def coarsen(volume: Volume, factors: tuple[int, int, int]) -> Volume:
    """Block-average ``volume`` by integer factors (SimpleITK's BinShrink keeps the geometry cell-centred)."""
    return from_sitk(sitk.BinShrink(to_sitk(volume, volume.array.astype(np.float32)), list(factors)))


def known_motion(volume: Volume, degrees: float = 7.0, translation=(4.0, -3.0, 3.5)) -> sitk.Euler3DTransform:
    """A rigid motion (rotation about an oblique axis through the volume's centre, then a ~6 mm shift)."""
    motion = sitk.Euler3DTransform()
    motion.SetCenter(tuple(volume.grid.physical_points(np.array(volume.shape) / 2.0)))
    motion.SetMatrix(tuple(rotation_matrix((1.0, -2.0, 1.5), np.deg2rad(degrees)).ravel()))
    motion.SetTranslation(tuple(translation))
    return motion


def moved(volume: Volume, motion: sitk.Transform) -> Volume:
    """``volume`` as the scanner would see it after the subject moved by ``motion``: a point p of the original
    appears at ``motion(p)``, on the original grid (resampling takes output -> input points, hence the inverse)."""
    image = to_sitk(volume, volume.array.astype(np.float32))
    return from_sitk(sitk.Resample(image, image, motion.GetInverse(), sitk.sitkLinear, 0.0))


@pytest.fixture(scope="module")
def ixi_pair(shared_data: Path) -> tuple[Volume, Volume]:
    """The real IXI002 T1 (fixed) and T2 (moving) at full resolution."""
    return (read_volume(shared_data / "pairs" / "IXI002_T1.nii.gz"),
            read_volume(shared_data / "pairs" / "IXI002_T2.nii.gz"))


@pytest.fixture(scope="module")
def ixi_coarse(ixi_pair: tuple[Volume, Volume]) -> tuple[Volume, Volume]:
    """The pair block-averaged to about 3.7 mm (T1 3.6x3.75x3.75, T2 3.75x3.75x3.75) to keep tests fast."""
    t1, t2 = ixi_pair
    return coarsen(t1, (3, 4, 4)), coarsen(t2, (4, 4, 3))


@pytest.fixture(scope="module")
def reference(ixi_coarse: tuple[Volume, Volume]) -> registration.RegistrationResult:
    """T2 registered onto T1 as acquired: the two scans are ~1-2 mm apart, so this is the alignment to recover."""
    return register(*ixi_coarse)


def test_recovers_known_rigid_motion_of_real_t2_onto_t1(ixi_pair, ixi_coarse, reference):
    t1, t2 = ixi_pair
    motion = known_motion(t2)
    t2_moved = coarsen(moved(t2, motion), (4, 4, 3))
    result = register(ixi_coarse[0], t2_moved)

    # Points inside the brain on the original 1 mm T1 grid (every 6th voxel).
    points = t1.grid.physical_points((np.argwhere(t1.array[::6, ::6, ::6] > 0) * 6).astype(np.float64))
    expected = transform_points(reference.transform, points)
    recovered = transform_points(motion.GetInverse(), transform_points(result.transform, points))
    error = np.linalg.norm(recovered - expected, axis=1)
    displacement = np.linalg.norm(transform_points(motion, expected) - expected, axis=1)
    assert displacement.mean() > 6.0  # the motion is large compared with the tolerance
    assert error.max() < 0.5, f"max error {error.max():.3f} mm, mean {error.mean():.3f} mm"
    assert result.metric < registration.MATCH_THRESHOLD
    assert set(result.stage_metrics) == {"rigid", "affine"} and result.iterations["affine"] > 0
    assert result.transform.GetName() == "AffineTransform"


def test_good_pair_metric_is_well_below_the_threshold(reference):
    assert reference.metric < 2 * registration.MATCH_THRESHOLD
    # The affine stage refines the rigid one; it must not make the match worse.
    assert reference.stage_metrics["affine"] <= reference.stage_metrics["rigid"] + 1e-3
    summary = reference.summary()
    assert np.asarray(summary["fixed_to_moving_lps"]).shape == (4, 4)
    json.dumps(summary)


def test_noise_pair_raises_with_the_metric(ixi_coarse):
    t1, t2 = ixi_coarse
    noise = t2.with_array(np.random.default_rng(0).uniform(0, 500, t2.shape).astype(np.float32))
    with pytest.raises(InputError, match=r"registration failed: final Mattes mutual information -?0\.0\d\d is "
                                         r"above -0\.100 .*same subject"):
        register(t1, noise, affine=False, iterations=30)  # noise never converges: cap the time


def test_constant_volume_is_refused(small_real_volume):
    constant = small_real_volume.with_array(np.full(small_real_volume.shape, 7.0, np.float32))
    with pytest.raises(InputError, match="moving volume is constant"):
        register(small_real_volume, constant)


def test_reproducible_with_a_seed_and_masks_respected(small_real_volume):
    fixed = small_real_volume
    moving = moved(fixed, known_motion(fixed, degrees=5.0, translation=(3.0, 2.0, -2.0)))
    mask = fixed.array > 0.2 * fixed.array.max()
    first = register(fixed, moving, affine=False, mask=mask, seed=3)
    second = register(fixed, moving, affine=False, mask=mask, seed=3)
    assert first.transform.GetParameters() == second.transform.GetParameters()
    assert first.metric == second.metric
    with pytest.raises(InputError, match="mask is empty"):
        register(fixed, moving, mask=np.zeros(fixed.shape, bool))


def test_registers_a_moved_copy_of_a_small_real_volume(small_real_volume):
    """Runs without the shared data: MNI152 at 4 mm against a rigidly moved copy of itself."""
    fixed = small_real_volume
    motion = known_motion(fixed, degrees=6.0)
    result = register(fixed, moved(fixed, motion), affine=False)
    points = fixed.grid.physical_points(np.argwhere(fixed.array > 0.3 * fixed.array.max()).astype(np.float64))
    error = np.linalg.norm(transform_points(result.transform, points) - transform_points(motion, points), axis=1)
    assert error.max() < 1.0  # a quarter of a voxel


@pytest.mark.parametrize("suffix", [".tfm", ".h5"])
def test_transform_save_load_round_trip(tmp_path, suffix):
    transform = sitk.AffineTransform(tuple((rotation_matrix((1, 2, 3), 0.1) * 1.02).ravel()), (1.5, -2.0, 3.25),
                                     (10.0, 20.0, -5.0))
    path = save_transform(transform, tmp_path / f"t{suffix}")
    loaded = load_transform(path)
    assert np.allclose(affine_matrix(loaded), affine_matrix(transform), atol=1e-9)
    with pytest.raises(OutputError, match="already exists"):
        save_transform(transform, path, overwrite=False)
    with pytest.raises(OutputError, match="unknown extension"):
        save_transform(transform, tmp_path / "t.nii.gz")
    with pytest.raises(InputError, match="does not exist"):
        load_transform(tmp_path / "missing.tfm")
    assert not list(tmp_path.glob(".mrisuperres-partial-*"))


def test_resample_into_a_coarser_grid_over_the_fixed_extent(ixi_coarse, reference):
    t1, t2 = ixi_coarse
    grid = resampled_grid(t1.grid, tuple(n // 2 for n in t1.shape))
    aligned = resample_into(t2, reference.transform, grid)
    assert aligned.grid.same_geometry(grid)
    assert aligned.array.dtype == np.float32
    # Aligned T2 is bright where the coarse T1 shows brain, dark in the background.
    brain = resample_into(t1, sitk.Transform(), grid, "linear").array > 50
    assert aligned.array[brain].mean() > 5 * max(abs(aligned.array[~brain].mean()), 1.0)


def test_moving_grid_in_fixed_frame_keeps_voxel_values_for_rigid_transforms(small_real_volume):
    moving = small_real_volume
    transform = sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.1, -0.05, 0.2, (5.0, -3.0, 2.0))
    grid = moving_grid_in_fixed_frame(moving.grid, transform)
    assert grid.shape == moving.shape and np.allclose(grid.spacing, moving.spacing)
    # Each voxel centre of the new grid maps onto the same voxel centre of the moving grid.
    index = np.array([[0.0, 0.0, 0.0], [3.0, 7.0, 11.0], [40.0, 50.0, 30.0]])
    assert np.allclose(transform_points(transform, grid.physical_points(index)),
                       moving.grid.physical_points(index), atol=1e-6)
    aligned = resample_into(moving, transform, grid, "linear")
    assert np.allclose(aligned.array, moving.array, atol=1e-3)


def test_affine_matrix_matches_transform_points():
    transform = sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.3, -0.2, 0.1, (5.0, 6.0, 7.0))
    points = np.random.default_rng(1).normal(0, 50, (5, 3))
    matrix = affine_matrix(transform)
    assert np.allclose(points @ matrix[:3, :3].T + matrix[:3, 3], transform_points(transform, points))


# ---------------------------------------------------------------- CLI


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    cli_register.add_parser(commands)
    return cli_register.run(parser.parse_args(["register", *argv]))


MOTION = {"degrees": 6.0, "translation": (-3.0, 4.0, 2.0)}


@pytest.fixture(scope="module")
def pair_files(small_real_volume, tmp_path_factory) -> tuple[Path, Path]:
    """A fixed volume (MNI152 at 4 mm) and a rigidly moved copy of it, as files (no shared data needed)."""
    folder = tmp_path_factory.mktemp("pair")
    moving = moved(small_real_volume, known_motion(small_real_volume, **MOTION))
    return write_volume(small_real_volume, folder / "t1.nii.gz"), write_volume(moving, folder / "t2.nrrd")


def test_cli_register_writes_aligned_volume_and_transform(pair_files, tmp_path, capsys):
    fixed, moving = pair_files
    output = tmp_path / "t2_in_t1.nii.gz"
    assert run_cli([str(fixed), str(moving), str(output), "--rigid-only", "--grid", "coarse:2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["metric"] < registration.MATCH_THRESHOLD and summary["transform_type"] == "Euler3DTransform"
    t1 = read_volume(fixed)
    written = read_volume(output)
    assert written.grid.same_geometry(resampled_grid(t1.grid, tuple(int(round(n / 2)) for n in t1.shape)),
                                      tolerance=1e-4)
    transform = load_transform(tmp_path / "t2_in_t1.tfm")
    assert np.allclose(affine_matrix(transform), summary["fixed_to_moving_lps"], atol=1e-6)
    points = t1.grid.physical_points(np.argwhere(t1.array > 0.3 * t1.array.max()).astype(np.float64))
    error = transform_points(transform, points) - transform_points(known_motion(t1, **MOTION), points)
    assert np.linalg.norm(error, axis=1).max() < 1.0  # a quarter of a 4 mm voxel
    assert "registered onto t1.nii.gz" in written.metadata["ITK_FileNotes"]

    # Existing outputs are refused before any work; --overwrite replaces them.
    with pytest.raises(OutputError, match="already exists"):
        run_cli([str(fixed), str(moving), str(output)])
    with pytest.raises(MRISuperResError, match="--grid"):
        run_cli([str(fixed), str(moving), str(tmp_path / "x.nii.gz"), "--grid", "finer"])


def test_cli_register_moving_grid_and_custom_transform_path(pair_files, tmp_path, capsys):
    fixed, moving = pair_files
    output = tmp_path / "aligned.nrrd"
    transform_path = tmp_path / "sub" / "lr_to_hr.h5"
    transform_path.parent.mkdir()
    assert run_cli([str(fixed), str(moving), str(output), "--grid", "moving", "--rigid-only",
                    "--transform", str(transform_path)]) == 0
    assert "Mattes mutual information" in capsys.readouterr().out
    written = read_volume(output)
    assert written.shape == read_volume(moving).shape
    assert written.metadata["MRISuperRes.role"] == "registered"
    assert transform_path.is_file()


def test_cli_register_bad_pair_writes_nothing(pair_files, tmp_path):
    fixed, moving = pair_files
    t2 = read_volume(moving)
    noise = write_volume(t2.with_array(np.random.default_rng(0).uniform(0, 500, t2.shape).astype(np.float32)),
                         tmp_path / "noise.nii.gz")
    output = tmp_path / "out.nii.gz"
    with pytest.raises(InputError, match="Mattes mutual information"):
        run_cli([str(fixed), str(noise), str(output), "--rigid-only"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise.nii.gz"]
