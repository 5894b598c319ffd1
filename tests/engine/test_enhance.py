"""Enhancing volumes and files end to end (MRISuperResLib.engine.enhance)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_tiny_model, oblique_grid, sample_smooth_function

from torch.nn import functional as F

from MRISuperResLib.engine import enhance as enhance_module
from MRISuperResLib.engine import output_writer as writer_module
from MRISuperResLib.engine.checkpoint import LoadedModel, load_model_file
from MRISuperResLib.engine.enhance import EnhanceResult, enhance_file, enhance_volume
from MRISuperResLib.errors import CancelledError, InputError, ModelError, OutputError
from MRISuperResLib.imaging.geometry import upsampled_grid
from MRISuperResLib.processing.interpolation import resample_to_grid
from MRISuperResLib.imaging.output_paths import sidecar_path
from MRISuperResLib.imaging.volume import Grid, Volume
from MRISuperResLib.imaging.volume_io import read_volume, write_volume

#: Normalisation that never clips (so a trilinear network sees the input's full range).
FULL_RANGE = {"lower_percentile": 0.0, "upper_percentile": 100.0, "clip": True}
#: Coarse voxels along each border left out of accuracy checks.
BORDER = 3


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def tiny_x2(model_folder: Path) -> LoadedModel:
    return load_model_file(make_tiny_model(model_folder / "tiny-x2.safetensors"))


@pytest.fixture(scope="module")
def real_input(small_real_volume: Volume) -> tuple[Volume, np.ndarray]:
    """The small real brain (never to be modified) and a copy of its voxels taken before any test ran."""
    return small_real_volume, small_real_volume.array.copy()


@pytest.fixture(scope="module")
def x2_result(real_input: tuple[Volume, np.ndarray], tiny_x2: LoadedModel) -> EnhanceResult:
    return enhance_volume(real_input[0], tiny_x2, 2, device="cpu")


@pytest.fixture(scope="module")
def small_crop(small_real_volume: Volume) -> Volume:
    """A 24x28x24 piece of the real brain on its own grid (for the larger shipped model and file tests)."""
    grid = small_real_volume.grid
    start = np.array([12.0, 14.0, 12.0])
    origin = grid.physical_points(start)
    crop = small_real_volume.array[12:36, 14:42, 12:36].copy()
    return Volume(crop, Grid(crop.shape, grid.spacing, tuple(origin), grid.direction))


def interior(array: np.ndarray, scale: tuple[float, float, float]) -> np.ndarray:
    margins = [int(BORDER * s) for s in scale]
    return array[tuple(slice(m, n - m) for m, n in zip(margins, array.shape))]


def rms(array: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(array, dtype=np.float64))))


def test_sr_baseline_and_difference_lie_on_the_upsampled_grid(
    real_input: tuple[Volume, np.ndarray], x2_result: EnhanceResult
) -> None:
    expected = upsampled_grid(real_input[0].grid, (2.0, 2.0, 2.0))
    for output in (x2_result.sr, x2_result.baseline, x2_result.difference):
        assert output.grid.same_geometry(expected, tolerance=0.0)
        assert output.array.shape == tuple(2 * n for n in real_input[0].shape)
        assert output.array.dtype == np.float32
    assert x2_result.input_shape == real_input[0].shape
    assert x2_result.scale == (2.0, 2.0, 2.0)


def test_input_volume_is_not_modified(real_input: tuple[Volume, np.ndarray], x2_result: EnhanceResult) -> None:
    volume, before = real_input
    assert np.array_equal(volume.array, before)
    assert not np.shares_memory(x2_result.sr.array, volume.array)


def test_difference_is_sr_minus_baseline(x2_result: EnhanceResult) -> None:
    assert np.array_equal(x2_result.difference.array, x2_result.sr.array - x2_result.baseline.array)
    assert np.abs(x2_result.difference.array).max() > 0  # the tiny model's tail is random: it adds something


def test_baseline_is_the_bspline_upsampling_of_the_input(
    real_input: tuple[Volume, np.ndarray], x2_result: EnhanceResult
) -> None:
    expected = resample_to_grid(real_input[0], x2_result.sr.grid, "bspline").array
    value_range = float(np.ptp(real_input[0].array))
    np.testing.assert_allclose(x2_result.baseline.array, expected, rtol=0, atol=1e-5 * value_range)


def test_consistency_map_lies_on_the_input_grid_with_a_finite_score(
    real_input: tuple[Volume, np.ndarray], x2_result: EnhanceResult
) -> None:
    assert x2_result.consistency is not None
    assert x2_result.consistency.grid.same_geometry(real_input[0].grid, tolerance=0.0)
    assert np.all(x2_result.consistency.array >= 0)
    assert np.isfinite(x2_result.consistency_nrmse) and x2_result.consistency_nrmse >= 0
    assert np.isfinite(x2_result.baseline_consistency_nrmse) and x2_result.baseline_consistency_nrmse >= 0


def test_every_output_carries_provenance(x2_result: EnhanceResult) -> None:
    roles = {"sr": "super-resolved", "baseline": "baseline", "difference": "difference",
             "consistency": "consistency"}
    for attribute, role in roles.items():
        metadata = getattr(x2_result, attribute).metadata
        assert metadata["MRISuperRes.model"] == "tiny-x2"
        assert metadata["MRISuperRes.scale"] == "2"
        assert metadata["MRISuperRes.role"] == role
        assert metadata["MRISuperRes.model_sha256"] == x2_result.model.file_sha256
    for attribute in ("sr", "difference", "consistency"):
        assert "AI-generated" in getattr(x2_result, attribute).metadata["MRISuperRes.notice"]
    assert "not acquired" in x2_result.baseline.metadata["MRISuperRes.notice"]


def test_summary_describes_the_run(x2_result: EnhanceResult) -> None:
    summary = x2_result.summary()
    assert summary["output_shape"] == list(x2_result.sr.shape)
    assert summary["model"] == "tiny-x2"
    assert summary["device"].startswith("cpu")
    json.dumps(summary)


def test_summary_spacing_reads_as_the_header_does(small_crop: Volume, tiny_x2: LoadedModel) -> None:
    grid = small_crop.grid
    # 0.47 mm as a float32 NIfTI header stores it: 0.4699999988079071 as a Python float
    stored = Grid(grid.shape, tuple(float(np.float32(0.94)) for _ in range(3)), grid.origin, grid.direction)
    result = enhance_volume(Volume(small_crop.array, stored), tiny_x2, 2, device="cpu", consistency=False)
    assert result.summary()["output_spacing"] == [0.47, 0.47, 0.47]


def test_an_untrained_model_returns_the_baseline_exactly(small_crop: Volume, model_folder: Path) -> None:
    untrained = make_tiny_model(model_folder / "untrained-x2.safetensors", random_tail=False)
    # The network's output as it is: the data-consistency projection would correct the baseline too.
    result = enhance_volume(small_crop, str(untrained), 2, device="cpu", projection=False)
    assert np.array_equal(result.sr.array, result.baseline.array)
    assert np.count_nonzero(result.difference.array) == 0
    assert result.consistency_nrmse == result.baseline_consistency_nrmse


@pytest.mark.parametrize("dtype", [np.int16, np.uint8])
def test_keep_dtype_returns_the_input_dtype_and_leaves_the_input_alone(
    small_crop: Volume, tiny_x2: LoadedModel, dtype
) -> None:
    volume = small_crop.with_array(np.clip(np.rint(small_crop.array), 0, 255).astype(dtype))
    before = volume.array.copy()
    kept = enhance_volume(volume, tiny_x2, 2, device="cpu", keep_dtype=True, consistency=False)
    assert kept.sr.array.dtype == dtype
    assert np.array_equal(volume.array, before)
    as_float = enhance_volume(volume, tiny_x2, 2, device="cpu", consistency=False)
    assert as_float.sr.array.dtype == np.float32
    info = np.iinfo(dtype)
    expected = np.clip(np.rint(as_float.sr.array), info.min, info.max).astype(dtype)
    assert np.array_equal(kept.sr.array, expected)


def test_keep_dtype_on_float_input_stays_float32(small_crop: Volume, tiny_x2: LoadedModel) -> None:
    result = enhance_volume(small_crop, tiny_x2, 2, device="cpu", keep_dtype=True, consistency=False)
    assert result.sr.array.dtype == np.float32


def test_through_plane_scale_with_a_matching_model(
    real_input: tuple[Volume, np.ndarray], model_folder: Path
) -> None:
    volume = real_input[0]
    model = make_tiny_model(model_folder / "tiny-x114.safetensors", scale=(1, 1, 4))
    result = enhance_volume(volume, model, "1,1,4", device="cpu")
    assert result.sr.shape == (volume.shape[0], volume.shape[1], 4 * volume.shape[2])
    assert result.sr.grid.same_geometry(upsampled_grid(volume.grid, (1.0, 1.0, 4.0)), tolerance=0.0)
    assert result.sr.metadata["MRISuperRes.scale"] == "1,1,4"
    assert result.consistency is not None and result.consistency.shape == volume.shape


@pytest.mark.parametrize(("scale", "order"), [((4, 1, 1), (1, 2, 0)), ((1, 4, 1), (0, 2, 1))])
def test_a_permuted_scale_runs_the_model_on_permuted_axes(
    small_crop: Volume, model_folder: Path, scale: tuple[int, int, int], order: tuple[int, int, int]
) -> None:
    model = make_tiny_model(model_folder / "tiny-x114.safetensors", scale=(1, 1, 4))
    result = enhance_volume(small_crop, model, scale, device="cpu", tile=(6, 7, 8), mask_background=False)
    assert result.axis_order == order and result.summary()["axis_order"] == "".join("ijk"[a] for a in order)
    assert result.sr.shape == tuple(n * f for n, f in zip(small_crop.shape, scale))
    assert result.sr.grid.same_geometry(upsampled_grid(small_crop.grid, tuple(map(float, scale))), tolerance=0.0)
    # The same as transposing the input by hand to put the thick axis at k, enhancing at 1,1,4 and transposing back.
    array = np.ascontiguousarray(np.transpose(small_crop.array, order))
    transposed = Volume(array, Grid(array.shape, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0)))
    by_hand = enhance_volume(transposed, model, (1, 1, 4), device="cpu", mask_background=False)
    restore = tuple(int(a) for a in np.argsort(order))
    assert np.allclose(result.difference.array, np.transpose(by_hand.difference.array, restore), atol=1e-5)
    assert not np.allclose(result.difference.array, 0.0)


def test_a_scale_the_model_cannot_do_is_refused(small_crop: Volume, tiny_x2: LoadedModel) -> None:
    with pytest.raises(ModelError, match="supports 2"):
        enhance_volume(small_crop, tiny_x2, "1,1,4", device="cpu")


def test_consistency_can_be_skipped(small_crop: Volume, tiny_x2: LoadedModel) -> None:
    result = enhance_volume(small_crop, tiny_x2, 2, device="cpu", consistency=False)
    assert result.consistency is None
    assert np.isnan(result.consistency_nrmse)


def test_integer_input_with_few_values_warns_about_label_maps(small_crop: Volume, tiny_x2: LoadedModel) -> None:
    labels = small_crop.with_array((small_crop.array > np.median(small_crop.array)).astype(np.int16))
    result = enhance_volume(labels, tiny_x2, 2, device="cpu", consistency=False)
    assert any("label map" in warning for warning in result.warnings)


def test_too_small_input_is_refused(tiny_x2: LoadedModel) -> None:
    grid = oblique_grid((3, 8, 8))
    with pytest.raises(InputError, match="needs at least 4"):
        enhance_volume(Volume(np.random.default_rng(0).random(grid.shape, np.float32), grid), tiny_x2, 2)


def test_progress_ends_at_one_and_cancel_aborts(small_crop: Volume, tiny_x2: LoadedModel) -> None:
    fractions: list[float] = []
    enhance_volume(small_crop, tiny_x2, 2, device="cpu", consistency=False,
                   progress=lambda fraction, text: fractions.append(fraction))
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(b >= a for a, b in zip(fractions, fractions[1:]))
    with pytest.raises(CancelledError):
        enhance_volume(small_crop, tiny_x2, 2, device="cpu", cancel=lambda: True)


def test_a_stop_while_the_baseline_thread_starts_leaves_no_thread_behind(
        small_crop: Volume, tiny_x2: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    # A SIGTERM turned into KeyboardInterrupt can land inside submit(), once the idle thread runs: that thread
    # must still be stopped, or the interpreter's exit joins it forever (a hung `mrisuperres` after "interrupted").
    submit = enhance_module.IdleExecutor.submit

    def interrupted_submit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        submit(self, *args, **kwargs)
        raise KeyboardInterrupt

    before = set(threading.enumerate())
    monkeypatch.setattr(enhance_module.IdleExecutor, "submit", interrupted_submit)
    with pytest.raises(KeyboardInterrupt):
        enhance_volume(small_crop, tiny_x2, 2, device="cpu")
    for thread in set(threading.enumerate()) - before:
        thread.join(10)
        assert not thread.is_alive(), thread.name


# The overlay test: the SR volume must sit on its grid with no half-voxel shift.


@pytest.fixture(scope="module")
def smooth_oblique_volume() -> Volume:
    grid = oblique_grid((20, 18, 16), spacing=(1.0, 1.25, 1.5))
    return Volume(sample_smooth_function(grid).astype(np.float32), grid)


@pytest.mark.parametrize(
    ("model_kind", "scale", "max_rms", "min_ratio"),
    [
        ("trilinear", (2, 2, 2), 0.5, 4.0),
        ("trilinear", (1, 1, 4), 0.5, 4.0),
        ("untrained", (2, 2, 2), 0.05, 20.0),
    ],
)
def test_sr_overlays_the_function_at_its_physical_voxel_centres(
    smooth_oblique_volume: Volume, model_folder: Path, model_kind: str, scale, max_rms: float, min_ratio: float
) -> None:
    if model_kind == "trilinear":
        # Untrained "trilinear" skip: output = trilinear upsampling of the normalised input, de-normalised.
        model = make_tiny_model(model_folder / f"trilinear-{'-'.join(map(str, scale))}.safetensors", scale=scale,
                                global_skip="trilinear", random_tail=False, normalization=FULL_RANGE)
    else:
        # Untrained "baseline" skip (zero last layer): output = cubic B-spline.
        model = make_tiny_model(model_folder / "untrained-x2.safetensors", random_tail=False)
    result = enhance_volume(smooth_oblique_volume, model, scale, device="cpu", consistency=False, projection=False)
    fine = result.sr.grid
    factors = tuple(float(s) for s in scale)
    error = rms(interior(result.sr.array - sample_smooth_function(fine), factors))
    shifted_error = rms(interior(result.sr.array - sample_smooth_function(fine, shift=0.5), factors))
    assert error < max_rms  # the function spans about 120
    assert shifted_error > min_ratio * error


def test_trilinear_sr_is_the_trilinear_upsampling_in_input_units(smooth_oblique_volume: Volume,
                                                                  model_folder: Path) -> None:
    model = make_tiny_model(model_folder / "trilinear-plain.safetensors", global_skip="trilinear", random_tail=False,
                            normalization=FULL_RANGE)
    result = enhance_volume(smooth_oblique_volume, model, 2, device="cpu", consistency=False, projection=False)
    source = torch.from_numpy(smooth_oblique_volume.array)[None, None]
    expected = F.interpolate(source, scale_factor=2, mode="trilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(result.sr.array, expected, rtol=0, atol=1e-3)


# Files.


@pytest.fixture()
def input_file(tmp_path: Path, small_crop: Volume) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    return write_volume(small_crop, folder / "t1.nii.gz")


def output_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def four_outputs(folder: Path) -> dict[str, Path]:
    return {
        "output_path": folder / "sr.nii.gz",
        "baseline_path": folder / "baseline.nrrd",
        "difference_path": folder / "difference.mha",
        "consistency_path": folder / "consistency.nii",
    }


def test_enhance_file_writes_every_output_with_a_sidecar(tmp_path: Path, input_file: Path,
                                                         tiny_x2: LoadedModel) -> None:
    out = tmp_path / "out"
    out.mkdir()
    paths = four_outputs(out)
    result = enhance_file(input_file, model=tiny_x2, scale=2, device="cpu", **paths)
    assert output_names(out) == sorted(
        ["sr.nii.gz", "sr.nii.gz.json", "baseline.nrrd", "baseline.nrrd.json", "difference.mha",
         "difference.mha.json", "consistency.nii", "consistency.nii.json"]
    )
    assert result.paths == {"sr": str(paths["output_path"]), "baseline": str(paths["baseline_path"]),
                            "difference": str(paths["difference_path"]),
                            "consistency": str(paths["consistency_path"])}
    sr = read_volume(paths["output_path"])
    assert sr.grid.same_geometry(result.sr.grid, tolerance=1e-5)
    np.testing.assert_array_equal(sr.array, result.sr.array)
    assert read_volume(paths["consistency_path"]).grid.same_geometry(read_volume(input_file).grid, tolerance=1e-5)
    for role, name in [("super-resolved", "sr.nii.gz"), ("baseline", "baseline.nrrd"),
                       ("difference", "difference.mha"), ("consistency", "consistency.nii")]:
        record = json.loads((out / f"{name}.json").read_text())
        assert record["provenance"]["role"] == role
        assert record["provenance"]["model"] == "tiny-x2"
        assert record["provenance"]["source"] == "t1.nii.gz"
        assert record["provenance"]["model_sha256"] == tiny_x2.file_sha256
        assert record["run"]["output_shape"] == list(result.sr.shape)
    assert "AI-generated" in json.loads((out / "sr.nii.gz.json").read_text())["provenance"]["notice"]
    assert not list(out.glob(".mrisuperres-partial-*"))


def test_nifti_outputs_say_ai_generated_in_descrip(tmp_path: Path, input_file: Path, tiny_x2: LoadedModel) -> None:
    out = tmp_path / "out"
    out.mkdir()
    enhance_file(input_file, out / "sr.nii.gz", tiny_x2, 2, device="cpu", difference_path=out / "difference.nii.gz")
    for name in ("sr.nii.gz", "difference.nii.gz"):
        assert "AI-generated" in read_volume(out / name).metadata["descrip"]


def test_nifti_descrip_keeps_the_ai_notice_with_a_long_model_name(tmp_path: Path, input_file: Path) -> None:
    model = make_tiny_model(tmp_path / "edsr3d-t2-thick-slice-finetuned-ixi-guys.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    enhance_file(input_file, out / "sr.nii.gz", model, 2, device="cpu", consistency=False)
    assert "AI-generated" in read_volume(out / "sr.nii.gz").metadata["descrip"]


def test_nrrd_outputs_carry_provenance_keys(tmp_path: Path, input_file: Path, tiny_x2: LoadedModel) -> None:
    out = tmp_path / "out"
    out.mkdir()
    enhance_file(input_file, out / "sr.nrrd", tiny_x2, 2, device="cpu", sidecar=False)
    assert output_names(out) == ["sr.nrrd"]
    metadata = read_volume(out / "sr.nrrd").metadata
    assert metadata["MRISuperRes.model"] == "tiny-x2"
    assert "AI-generated" in metadata["MRISuperRes.notice"]


def test_enhance_file_reads_and_writes_dicom_series(tmp_path: Path, small_crop: Volume, tiny_x2: LoadedModel) -> None:
    series = write_volume(small_crop.with_array(np.rint(small_crop.array).astype(np.int16)), tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    result = enhance_file(series, out / "sr", tiny_x2, 2, device="cpu", consistency=False)
    assert (out / "sr.json").is_file()  # a DICOM folder "sr" has the sidecar "sr.json"
    read = read_volume(out / "sr")
    assert read.grid.same_geometry(result.sr.grid, tolerance=1e-6)


def test_enhance_file_refuses_when_any_output_exists_and_writes_nothing(
    tmp_path: Path, input_file: Path, tiny_x2: LoadedModel
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    paths = four_outputs(out)
    paths["difference_path"].write_bytes(b"old")
    with pytest.raises(OutputError, match="already exists"):
        enhance_file(input_file, model=tiny_x2, scale=2, device="cpu", **paths)
    assert output_names(out) == ["difference.mha"]
    assert paths["difference_path"].read_bytes() == b"old"


def test_enhance_file_refuses_when_a_sidecar_exists(tmp_path: Path, input_file: Path, tiny_x2: LoadedModel) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "sr.nii.gz.json").write_text("{}")
    with pytest.raises(OutputError, match="sr.nii.gz.json already exists"):
        enhance_file(input_file, out / "sr.nii.gz", tiny_x2, 2, device="cpu")
    assert output_names(out) == ["sr.nii.gz.json"]


def test_enhance_file_with_overwrite_replaces_existing_outputs(
    tmp_path: Path, input_file: Path, tiny_x2: LoadedModel
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "sr.nii.gz").write_bytes(b"old")
    (out / "sr.nii.gz.json").write_text("{}")
    enhance_file(input_file, out / "sr.nii.gz", tiny_x2, 2, device="cpu", overwrite=True)
    assert read_volume(out / "sr.nii.gz").shape == (48, 56, 48)
    assert "provenance" in json.loads((out / "sr.nii.gz.json").read_text())


def test_enhance_file_refuses_to_overwrite_its_input(tmp_path: Path, input_file: Path, tiny_x2: LoadedModel) -> None:
    before = input_file.read_bytes()
    with pytest.raises(OutputError, match="is the input"):
        enhance_file(input_file, input_file, tiny_x2, 2, device="cpu", overwrite=True)
    with pytest.raises(OutputError, match="is the input"):
        enhance_file(input_file, tmp_path / "sr.nii.gz", tiny_x2, 2, device="cpu", baseline_path=input_file,
                     overwrite=True)
    assert input_file.read_bytes() == before
    assert output_names(tmp_path) == ["in", "t1.nii.gz"]


def test_enhance_file_refuses_two_outputs_on_one_path(tmp_path: Path, input_file: Path, tiny_x2: LoadedModel) -> None:
    with pytest.raises(OutputError, match="share one path"):
        enhance_file(input_file, tmp_path / "sr.nii.gz", tiny_x2, 2, baseline_path=tmp_path / "sr.nii.gz")


def test_enhance_file_refuses_an_unknown_extension_before_writing(
    tmp_path: Path, input_file: Path, tiny_x2: LoadedModel
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OutputError, match="unknown extension"):
        enhance_file(input_file, out / "sr.nii.gz", tiny_x2, 2, device="cpu", consistency_path=out / "c.png")
    assert output_names(out) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_enhance_file_refuses_an_unwritable_folder_before_writing(
    tmp_path: Path, input_file: Path, tiny_x2: LoadedModel
) -> None:
    out, locked = tmp_path / "out", tmp_path / "locked"
    out.mkdir()
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="not writable"):
            enhance_file(input_file, out / "sr.nii.gz", tiny_x2, 2, device="cpu",
                         consistency_path=locked / "c.nii.gz")
    finally:
        locked.chmod(0o700)
    assert output_names(out) == [] and output_names(locked) == []


def test_a_failure_while_writing_leaves_no_output_at_all(
    tmp_path: Path, input_file: Path, tiny_x2: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_stage = writer_module.stage_volume

    def failing_stage(volume: Volume, staging: Path, name: str, **kwargs) -> None:
        if name.startswith("consistency"):
            (staging / name).write_bytes(b"half a file")
            raise OutputError(f"cannot write {name}: No space left on device")
        real_stage(volume, staging, name, **kwargs)

    monkeypatch.setattr(writer_module, "stage_volume", failing_stage)
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    with pytest.raises(OutputError, match="No space left"):
        enhance_file(input_file, first / "sr.nii.gz", tiny_x2, 2, device="cpu",
                     baseline_path=second / "baseline.nii.gz", consistency_path=second / "consistency.nii.gz")
    assert output_names(first) == [] and output_names(second) == []


def test_an_output_appearing_during_the_run_leaves_no_output_at_all(
    tmp_path: Path, input_file: Path, tiny_x2: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    real_enhance = enhance_module.enhance_volume

    def enhance_while_another_program_writes(*args, **kwargs) -> EnhanceResult:
        result = real_enhance(*args, **kwargs)
        (second / "baseline.nii.gz").write_bytes(b"written meanwhile")
        return result

    monkeypatch.setattr(enhance_module, "enhance_volume", enhance_while_another_program_writes)
    with pytest.raises(OutputError, match="already exists"):
        enhance_file(input_file, first / "sr.nii.gz", tiny_x2, 2, device="cpu",
                     baseline_path=second / "baseline.nii.gz")
    assert output_names(first) == []
    assert output_names(second) == ["baseline.nii.gz"]


@pytest.mark.parametrize(
    ("output", "sidecar"),
    [("out/sr.nii.gz", "out/sr.nii.gz.json"), ("sr.nrrd", "sr.nrrd.json"), ("series", "series.json"),
     ("a.b.mhd", "a.b.mhd.json")],
)
def test_sidecar_path_is_the_full_output_name_plus_json(output: str, sidecar: str) -> None:
    assert sidecar_path(output) == Path(sidecar)



def test_progress_says_done_only_after_the_files_are_written(tmp_path: Path, input_file: Path,
                                                             tiny_x2: LoadedModel) -> None:
    calls: list[tuple[float, str]] = []
    target = tmp_path / "sr.nii.gz"

    def progress(fraction: float, text: str) -> None:
        calls.append((fraction, text, target.exists()))

    enhance_file(input_file, target, tiny_x2, 2, device="cpu", progress=progress)
    assert calls[-1] == (1.0, "done", True)
    assert calls[-2][:2] == (0.97, "writing outputs") and not calls[-2][2]
    assert all(0.0 <= fraction < 1.0 for fraction, _, _ in calls[:-1])


def test_bfloat16_precision_runs_the_network_in_bfloat16_and_changes_little(
        small_crop: Volume, monkeypatch: pytest.MonkeyPatch) -> None:
    """--precision bfloat16 on a CPU (its instructions assumed present, so that every CPU tests the path): the
    shipped x2 network's contribution (SR - B-spline) moves by under 5 % of its RMS (2.3 % when written); float32 is
    the default on the CPU."""
    from MRISuperResLib.engine import device as device_module

    monkeypatch.setattr(device_module, "cpu_has_bfloat16", lambda: True)
    runs = {precision: enhance_volume(small_crop, "edsr3d-x2-brain", 2, device="cpu", precision=precision,
                                      consistency=False, projection=False)
            for precision in ("auto", "float32", "bfloat16")}
    assert np.array_equal(runs["auto"].sr.array, runs["float32"].sr.array)
    contribution = runs["float32"].difference.array
    moved = runs["bfloat16"].sr.array - runs["float32"].sr.array
    assert 0 < rms(moved) < 0.05 * rms(contribution), (rms(moved), rms(contribution))
    assert runs["bfloat16"].summary()["device"].endswith(", bfloat16")
    assert not runs["float32"].summary()["device"].endswith(", bfloat16")


def test_bfloat16_precision_without_the_instructions_runs_float32_and_says_so(
        small_crop: Volume, tiny_x2: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    from MRISuperResLib.engine import device as device_module

    monkeypatch.setattr(device_module, "cpu_has_bfloat16", lambda: False)
    asked = enhance_volume(small_crop, tiny_x2, 2, device="cpu", precision="bfloat16", consistency=False)
    plain = enhance_volume(small_crop, tiny_x2, 2, device="cpu", consistency=False)
    assert np.array_equal(asked.sr.array, plain.sr.array)
    assert any("no bfloat16 instructions" in warning and "running in float32" in warning
               for warning in asked.warnings), asked.warnings
