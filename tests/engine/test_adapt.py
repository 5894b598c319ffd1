"""Per-scan adaptation (``adapt.py``, ``enhance --adapt``): a small real thick-slice volume adapts in seconds and
improves on its held-back planes, is deterministic for a seed, cancels without output, and records where it
came from (provenance of every output, metadata and input SHA-256 of the saved adapted model).

The input is a 48x48x48 crop of the real MNI152 T1 (1 mm) box-averaged to 4 mm slices along k (48x48x12).
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from MRISuperResLib.cli import app as cli
from MRISuperResLib.engine.adapt import (
    AdaptSettings,
    PairSampler,
    adapt_model,
    in_plane_factors,
    in_plane_spec,
    save_adapted_model,
    thick_ratio,
    to_target_spacing,
    warmed_up_ema,
)
from MRISuperResLib.engine.checkpoint import load_model_file
from MRISuperResLib.processing.degradation import box_downsample
from MRISuperResLib.engine.enhance import enhance_file, enhance_volume
from MRISuperResLib.errors import CancelledError, InputError
from MRISuperResLib.imaging.geometry import resampled_grid
from MRISuperResLib.engine.model_zoo import load_model
from MRISuperResLib.imaging.volume import Grid, Volume
from MRISuperResLib.imaging.volume_io import read_volume, write_volume

SCALE = (1.0, 1.0, 4.0)
#: A few cheap steps: small patches, raw sampling where the sampling itself is not under test.
FAST = {"seconds": None, "steps": 6, "batch_size": 2, "patch": 16, "low_patch": 4, "validation_patches": 4,
        "validate_every": 2, "region": 48, "learning_rate": 1e-4}


@pytest.fixture(scope="module")
def thick_volume(mni_volume: Volume) -> Volume:
    """48x48x12 at 1x1x4 mm: a central crop of the MNI152 T1 with 4 mm box-profile slices along k, its contrast
    inverted (T2-like, dark white matter): a contrast the shipped model never trained on, so a few adaptation steps
    have something to learn (on the T1 itself the 48-channel model is already at its held-back optimum)."""
    start = [n // 2 - 24 for n in mni_volume.shape]
    fine = mni_volume.array[start[0]:start[0] + 48, start[1]:start[1] + 48, start[2]:start[2] + 48].astype(np.float32)
    fine = fine.max() - fine
    grid = Grid((48, 48, 48), mni_volume.spacing, mni_volume.grid.origin, mni_volume.grid.direction)
    low_grid = resampled_grid(grid, (48, 48, 12))
    return Volume(box_downsample(fine, (48, 48, 12)), low_grid)


@pytest.fixture(scope="module")
def thick_model():
    return load_model("edsr3d-thick-x4-brain", SCALE)


@pytest.fixture(autouse=True)
def _restore_sigterm():
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_adapts_in_seconds_and_improves_on_held_back_planes(thick_volume, thick_model):
    before = [p.detach().clone() for p in thick_model.network.parameters()]
    adapted, report = adapt_model(thick_volume, thick_model, SCALE, AdaptSettings(**FAST, sampling="bootstrap"))
    assert report.steps == 6 and report.bootstrap_seconds > 0
    assert report.history[0] == (0, report.held_back_before)
    assert report.held_back_after < report.held_back_before, report.history
    assert report.best_step > 0
    # the starting model is untouched; the adapted one differs and runs like any model
    assert all(torch_equal(a, b) for a, b in zip(before, thick_model.network.parameters()))
    assert adapted.name == "edsr3d-thick-x4-brain-adapted"
    assert adapted.file_sha256 == adapted.metadata.weights_sha256 != thick_model.metadata.weights_sha256
    # trained channels-last, handed back in the default layout (safetensors and tiling need contiguous weights)
    assert all(p.is_contiguous() for p in adapted.network.parameters())
    result = enhance_volume(thick_volume, adapted, SCALE, consistency=False)
    assert result.sr.shape == (48, 48, 48) and np.isfinite(result.sr.array).all()
    assert "adapted to this input" in result.sr.metadata["MRISuperRes.adaptation"]


@pytest.mark.parametrize("held_back", [True, False])
def test_a_batch_of_pairs_is_the_same_pairs_drawn_one_at_a_time(thick_volume, thick_model, held_back):
    # The held-back patches are drawn as batches; they must be the patches (and so the loss) drawn one by one.
    order, ratio = thick_ratio(thick_model, SCALE)
    settings = AdaptSettings(**FAST)
    pool = np.transpose(thick_volume.array, order) / float(thick_volume.array.max())
    sampler = PairSampler(pool, pool > 0.05, ratio, in_plane_spec(thick_model, 4.0, settings), settings, 1, True)
    batch = sampler.draw(np.random.default_rng(7), 3, held_back=held_back, augment=not held_back)
    rng = np.random.default_rng(7)
    single = [sampler.draw(rng, 1, held_back=held_back, augment=not held_back) for _ in range(3)]
    for index, tensors in enumerate(zip(*single)):
        assert batch[index].shape[0] == 3
        assert np.array_equal(batch[index].numpy(), np.concatenate([t.numpy() for t in tensors]))


def test_in_plane_axes_finer_than_the_target_spacing_are_resampled_to_it():
    settings = AdaptSettings(**FAST)
    # a 0.66 x 0.66 x 6 mm prostate at r = 4: pairs at 1.5 mm, the through-plane target
    assert in_plane_factors((0.66, 0.66), 1.5, settings) == pytest.approx((1.5 / 0.66, 1.5 / 0.66))
    # within the tolerance, or coarser than the target: left as they are
    assert in_plane_factors((0.95, 1.2), 1.0, settings) == (1.0, 1.0)
    assert in_plane_factors((0.5, 1.0), 1.0, settings) == (2.0, 1.0)
    assert in_plane_factors((0.5, 0.5), 1.0, AdaptSettings(**FAST, match_spacing=False)) == (1.0, 1.0)
    with pytest.raises(ValueError, match="match_spacing"):
        AdaptSettings(**FAST, match_spacing="no")
    with pytest.raises(ValueError, match="holdback_tolerance"):
        AdaptSettings(**FAST, holdback_tolerance="0.1")
    ramp = np.broadcast_to(np.linspace(0.2, 0.8, 40, dtype=np.float32)[:, None, None], (40, 30, 6))
    head = np.zeros(ramp.shape, dtype=bool)
    head[10:30] = True
    pool, mask = to_target_spacing(ramp, head, (2.0, 1.0))
    assert pool.shape == mask.shape == (20, 30, 6)
    # k-space resampling keeps the mean; the mask keeps its extent in mm (20 of 40 fine voxels -> 10 of 20)
    assert float(pool.mean()) == pytest.approx(float(ramp.mean()), abs=1e-4)
    assert mask[:, 0, 0].sum() == 10 and mask[5:15].all()
    unchanged = to_target_spacing(ramp, head, (1.0, 1.0))
    assert unchanged[0] is ramp and unchanged[1] is head


def test_a_scan_with_fine_in_plane_voxels_adapts_on_pairs_at_the_target_spacing(thick_volume, thick_model):
    # The same voxels declared 0.5 x 0.5 x 4 mm: the target is 1 mm, so the pairs are cut from a 2x coarser region.
    grid = thick_volume.grid
    fine = Volume(thick_volume.array, Grid(grid.shape, (0.5, 0.5, 4.0), grid.origin, grid.direction))
    settings = AdaptSettings(**FAST, sampling="bootstrap")
    matched, report = adapt_model(fine, thick_model, SCALE, settings)
    _, plain = adapt_model(fine, thick_model, SCALE, AdaptSettings(**FAST, sampling="bootstrap", match_spacing=False))
    assert report.settings["match_spacing"] and not plain.settings["match_spacing"]
    assert report.held_back_before != plain.held_back_before
    assert report.held_back_after < report.held_back_before, report.history
    assert enhance_volume(fine, matched, SCALE, consistency=False).sr.shape == (48, 48, 48)


def test_a_small_field_of_view_is_resampled_only_as_far_as_the_pairs_fit(thick_volume, thick_model):
    # 0.25 mm in-plane, 1 mm target: a 4x coarser 12x12 region could not hold a 16-voxel pair; 48x48 -> 16x16 does.
    grid = thick_volume.grid
    fine = Volume(thick_volume.array, Grid(grid.shape, (0.25, 0.25, 4.0), grid.origin, grid.direction))
    _, report = adapt_model(fine, thick_model, SCALE, AdaptSettings(**{**FAST, "steps": 2}))
    assert report.steps == 2 and report.settings["match_spacing"]


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_weight_average_warms_up_then_holds_its_decay():
    import torch
    from torch.optim.swa_utils import AveragedModel

    layer = torch.nn.Linear(1, 1, bias=False)
    averaged = AveragedModel(layer, multi_avg_fn=warmed_up_ema(0.98))
    seen = []
    for value in (1.0, 2.0, 3.0):
        layer.weight.data.fill_(value)
        averaged.update_parameters(layer)
        seen.append(float(averaged.module.weight.detach()))
    # first update copies; then decays 2/11 and 3/12: 1 + (2 - 1) * 9/11 = 1.8182, 1.8182 + (3 - 1.8182) * 0.75
    assert seen == pytest.approx([1.0, 1.818182, 2.704545], abs=1e-5)
    # after many steps the decay is the cap: the average moves 2 % of the way
    mean = [torch.zeros(2)]
    warmed_up_ema(0.98)(mean, [torch.ones(2)], torch.tensor(1000))
    assert mean[0].tolist() == pytest.approx([0.02, 0.02])


def test_the_weight_average_is_what_is_validated_and_returned(thick_volume, thick_model):
    plain, plain_report = adapt_model(thick_volume, thick_model, SCALE, AdaptSettings(**FAST, sampling="raw", ema=0))
    averaged, report = adapt_model(thick_volume, thick_model, SCALE, AdaptSettings(**FAST, sampling="raw"))
    # the same seed trains the same way; only what is scored (and kept) differs
    assert report.history[0] == plain_report.history[0]
    assert report.history[1:] != plain_report.history[1:]
    assert averaged.file_sha256 != plain.file_sha256
    assert report.settings["ema"] == 0.98


def kept_step(history: list[tuple[int, float]], tolerance: float) -> int:
    """The step adapt_model must return: the latest whose loss is below the start's and within ``tolerance`` of
    the lowest loss seen up to it."""
    initial, lowest, kept = history[0][1], history[0][1], 0
    for step, value in history[1:]:
        lowest = min(lowest, value)
        if value < initial and value <= lowest * (1 + tolerance):
            kept = step
    return kept


def test_the_latest_weights_near_the_lowest_held_back_loss_are_kept(thick_volume, thick_model):
    fast = {**FAST, "steps": 8, "validate_every": 1}
    _, strict = adapt_model(thick_volume, thick_model, SCALE, AdaptSettings(**fast, holdback_tolerance=0.0))
    _, loose = adapt_model(thick_volume, thick_model, SCALE, AdaptSettings(**fast, holdback_tolerance=0.5))
    assert loose.history == strict.history  # the same training; only which weights are kept differs
    losses = dict(strict.history)
    assert strict.best_step == kept_step(strict.history, 0.0)
    assert strict.held_back_after == min(losses.values())
    assert loose.best_step == kept_step(loose.history, 0.5) >= strict.best_step
    assert loose.held_back_after == losses[loose.best_step] < loose.held_back_before


def test_never_worse_than_the_start_on_held_back_planes(thick_volume, thick_model):
    # A learning rate far too high: every step makes things worse, so the starting weights must come back. (At 0.5
    # the 48-channel model's loss is no longer finite after one step and adaptation stops before any held-back score.)
    settings = AdaptSettings(**{**FAST, "learning_rate": 0.03, "steps": 4}, sampling="raw")
    adapted, report = adapt_model(thick_volume, thick_model, SCALE, settings)
    assert report.best_step == 0 and report.held_back_after == report.held_back_before
    assert max(loss for _, loss in report.history[1:]) > report.held_back_before
    assert adapted.metadata.weights_sha256 == thick_model.metadata.weights_sha256


def test_deterministic_for_a_seed_and_any_thick_axis(thick_volume, thick_model):
    settings = AdaptSettings(**FAST, sampling="raw", seed=3)
    first, report_1 = adapt_model(thick_volume, thick_model, SCALE, settings)
    second, report_2 = adapt_model(thick_volume, thick_model, SCALE, settings)
    assert first.file_sha256 == second.file_sha256 and report_1.history == report_2.history
    other, _ = adapt_model(thick_volume, thick_model, SCALE, AdaptSettings(**FAST, sampling="raw", seed=4))
    assert other.file_sha256 != first.file_sha256
    # the same scan with its thick axis first (scale 4,1,1) adapts through the axis permutation, identically
    moved = Volume(np.ascontiguousarray(np.transpose(thick_volume.array, (2, 0, 1))),
                   Grid((12, 48, 48), (4.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)))
    assert thick_ratio(thick_model, (4.0, 1.0, 1.0)) == ((1, 2, 0), 4)
    permuted, report_3 = adapt_model(moved, thick_model, (4.0, 1.0, 1.0), settings)
    assert report_3.history == report_1.history and permuted.file_sha256 == first.file_sha256


def test_isotropic_scale_and_bad_slice_thickness_are_refused(thick_volume, thick_model):
    with pytest.raises(InputError, match="thick slices along one axis"):
        adapt_model(thick_volume, load_model("default", (2.0, 2.0, 2.0)), (2.0, 2.0, 2.0), AdaptSettings(**FAST))
    with pytest.raises(InputError, match="slice thickness 5 mm"):
        adapt_model(thick_volume, thick_model, SCALE, AdaptSettings(**FAST, slice_thickness=5.0))


def test_a_scale_on_the_wrong_axis_says_to_check_the_scale(thick_volume, thick_model):
    # thick along k, but the ratio asked along i: the planes along k are too few to cut in-plane pairs from
    with pytest.raises(InputError, match=r"in-plane size 48x12 .* check that --scale puts the ratio on the thick"):
        adapt_model(thick_volume, thick_model, (4.0, 1.0, 1.0), AdaptSettings(**FAST))


def test_slice_thickness_sets_the_gap_of_the_profile(thick_volume, thick_model):
    adapted, _ = adapt_model(thick_volume, thick_model, SCALE,
                             AdaptSettings(**{**FAST, "steps": 1}, sampling="raw", slice_thickness=3.0))
    assert adapted.metadata.adapted["slice_profile"]["gap"] == pytest.approx(0.25)
    assert adapted.metadata.adapted["slice_profile"]["kind"] == "box"


def test_cancel_in_the_api_leaves_no_output(thick_volume, thick_model, tmp_path):
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(CancelledError):
        adapt_model(thick_volume, thick_model, SCALE, AdaptSettings(**FAST, sampling="raw"), cancel=cancel)
    source = write_volume(thick_volume, tmp_path / "thick.nii.gz")
    output = tmp_path / "out" / "sr.nii.gz"
    output.parent.mkdir()
    with pytest.raises(CancelledError):
        enhance_file(source, output, thick_model, SCALE, adapt=AdaptSettings(**FAST, sampling="raw"),
                     cancel=lambda: True)
    assert list(output.parent.iterdir()) == []


def test_cli_adapt_provenance_and_saved_model(thick_volume, tmp_path, capsys):
    source = write_volume(thick_volume, tmp_path / "thick.nii.gz")
    input_sha = hashlib.sha256(source.read_bytes()).hexdigest()
    output, saved = tmp_path / "sr.nrrd", tmp_path / "mine-adapted.safetensors"
    status = cli.main(["enhance", str(source), str(output), "--scale", "1,1,4", "--adapt", "120", "--adapt-steps",
                       "2", "--save-adapted", str(saved), "--baseline", str(tmp_path / "b.nrrd"), "--threads", "2",
                       "--quiet"])
    assert status == 0, capsys.readouterr().err
    sr = read_volume(output)
    assert sr.metadata["MRISuperRes.adaptation"].startswith("adapted to this input: fine-tuned from "
                                                            "edsr3d-thick-x4-brain")
    assert input_sha[:12] in sr.metadata["MRISuperRes.adaptation"]
    assert sr.metadata["MRISuperRes.model"] == "edsr3d-thick-x4-brain-adapted"
    assert "MRISuperRes.adaptation" not in read_volume(tmp_path / "b.nrrd").metadata  # the baseline is not the model's
    sidecar = json.loads((tmp_path / "sr.nrrd.json").read_text())
    assert sidecar["run"]["adaptation"]["steps"] == 2 and "adapted to this input" in sidecar["provenance"]["adaptation"]
    from MRISuperResLib.engine.device import cpu_has_bfloat16

    arithmetic = "bfloat16" if cpu_has_bfloat16() else "float32"  # auto on a CPU: the training's rule
    assert sidecar["run"]["adaptation"]["arithmetic"] == arithmetic
    model = load_model_file(saved)
    adapted = model.metadata.adapted
    assert adapted["arithmetic"] == arithmetic
    assert adapted["from"] == "edsr3d-thick-x4-brain" and adapted["input_sha256"] == input_sha
    assert adapted["input_sha256_of"] == "file" and adapted["input"] == "thick.nii.gz" and "this_run" not in adapted
    assert model.metadata.name == "edsr3d-thick-x4-brain-adapted" and model.metadata.mask_background is True
    assert model.metadata.consistency["threshold"] > 0
    # the saved model enhances the same input to the same result, its provenance naming the input it was made on
    again = enhance_volume(read_volume(source), model, SCALE, consistency=False)
    assert np.allclose(again.sr.array, sr.array, atol=1e-3 * float(np.abs(sr.array).max()))
    assert again.sr.metadata["MRISuperRes.adaptation"].startswith("adapted to input thick.nii.gz")


def test_cli_adapt_refuses_isotropic_scale_and_stray_options(thick_volume, tmp_path, capsys):
    source = write_volume(thick_volume, tmp_path / "thick.nii.gz")
    cases = [
        (["--scale", "2", "--adapt"], "--adapt needs thick slices along one axis"),
        (["--scale", "1,1,4", "--save-adapted", str(tmp_path / "m.safetensors")], "need --adapt"),
        (["--scale", "1,1,4", "--adapt", "--save-adapted", str(tmp_path / "m.pt")], "model files end in"),
    ]
    for options, message in cases:
        status = cli.main(["enhance", str(source), str(tmp_path / "sr.nii.gz"), *options])
        err = capsys.readouterr().err.strip().splitlines()
        assert status != 0 and len(err) == 1 and message in err[0] and "Traceback" not in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thick.nii.gz"]


def test_cli_interrupted_while_adapting_leaves_no_output(thick_volume, tmp_path):
    source = write_volume(thick_volume, tmp_path / "thick.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "MRISuperResLib.cli", "enhance", str(source), str(out / "sr.nii.gz"), "--scale",
         "1,1,4", "--adapt", "600", "--save-adapted", str(out / "m.safetensors"), "--progress-lines",
         "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        seen = ""
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            seen += line
            if "adapting" in line or not line:
                break
        assert "adapting" in seen, seen
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == cli.EXIT_INTERRUPTED, process.stderr.read()[-2000:]
    assert list(out.iterdir()) == []


def test_save_adapted_refuses_a_model_that_was_not_adapted(thick_model, tmp_path):
    from MRISuperResLib.errors import ModelError

    with pytest.raises(ModelError, match="not adapted"):
        save_adapted_model(thick_model, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_adaptation_inside_enhance_takes_its_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    from MRISuperResLib.engine import adapt as adapt_module
    from MRISuperResLib.engine.adapt_settings import AdaptSettings

    seen = []
    monkeypatch.setattr(adapt_module, "adapt_model", lambda volume, model, scale, settings, *rest, **named:
                        seen.append(settings))
    for adapt in (True, 60.0, AdaptSettings(steps=3), AdaptSettings(steps=3, precision="float32")):
        adapt_module.adapt_for_enhance(None, None, (1, 1, 4), adapt, "cpu", "x", None, None, "bfloat16")
    assert [s.precision for s in seen] == ["bfloat16", "bfloat16", "bfloat16", "float32"]


def _cpu_bfloat16(monkeypatch: pytest.MonkeyPatch, present: bool) -> None:
    """Make this CPU look as if it had (or lacked) bfloat16 instructions, for the device choice and the training."""
    from MRISuperResLib.engine import device as device_module
    from MRISuperResLib.engine import mixed_precision as precision_module

    monkeypatch.setattr(device_module, "cpu_has_bfloat16", lambda: present)
    monkeypatch.setattr(precision_module, "cpu_has_bfloat16", lambda: present)


@pytest.mark.parametrize("present", [True, False])
def test_the_fine_tuning_arithmetic_follows_the_training_rule(monkeypatch: pytest.MonkeyPatch, present: bool) -> None:
    import torch
    from MRISuperResLib.engine.adapt import fine_tuning_dtype
    from MRISuperResLib.engine.device import DeviceChoice, select_device
    from MRISuperResLib.engine.mixed_precision import training_dtype

    _cpu_bfloat16(monkeypatch, present)
    half = torch.bfloat16 if present else None
    # auto: enhance (and the bootstrap pass) run float32 on a CPU, the fine-tuning trains as `train` does
    auto = select_device("cpu", "auto")
    assert auto.autocast_dtype is None
    assert fine_tuning_dtype(auto) is half is training_dtype(auto, amp=True)
    assert fine_tuning_dtype(select_device("cpu", "bfloat16")) is half  # without the instructions: float32
    assert fine_tuning_dtype(select_device("cpu", "float32")) is None
    # CUDA: the GPU's half type (float16 without bfloat16), unless float32 is asked for
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: present)
    gpu = torch.device("cuda")
    assert fine_tuning_dtype(DeviceChoice(gpu)) is (torch.bfloat16 if present else torch.float16)
    assert fine_tuning_dtype(DeviceChoice(gpu, precision="float32")) is None


def _conv_output_types(model):
    """Record the dtype of every 3D convolution's output of ``model``'s network (and of its copies) until
    removed: returns ``(types, remove)``."""
    import torch

    types: set = set()
    handles = [module.register_forward_hook(lambda m, i, out: types.add(out.dtype))
               for module in model.network.modules() if isinstance(module, torch.nn.Conv3d)]
    return types, lambda: [handle.remove() for handle in handles]


@pytest.mark.parametrize("present", [True, False])
def test_bfloat16_fine_tuning_keeps_float32_weights_and_says_so(thick_volume, thick_model, monkeypatch, present):
    import torch

    _cpu_bfloat16(monkeypatch, present)
    types, remove = _conv_output_types(thick_model)
    try:
        adapted, report = adapt_model(thick_volume, thick_model, SCALE,
                                      AdaptSettings(**{**FAST, "steps": 2}, sampling="raw"))
    finally:
        remove()
    arithmetic = "bfloat16" if present else "float32"
    assert (torch.bfloat16 in types) is present and torch.float32 in types  # held-back scores stay float32
    assert report.arithmetic == arithmetic and report.summary()["arithmetic"] == arithmetic
    assert adapted.metadata.adapted["arithmetic"] == arithmetic
    assert report.held_back_after <= report.held_back_before and report.steps == 2
    assert all(p.dtype == torch.float32 for p in adapted.network.parameters())
    assert all(b.dtype == torch.float32 for b in adapted.network.buffers() if b.is_floating_point())


def test_float32_precision_forces_float32_fine_tuning(thick_volume, thick_model, monkeypatch):
    import torch

    _cpu_bfloat16(monkeypatch, True)
    types, remove = _conv_output_types(thick_model)
    lines = []
    try:
        adapted, report = adapt_model(thick_volume, thick_model, SCALE,
                                      AdaptSettings(**{**FAST, "steps": 2}, sampling="raw", precision="float32"),
                                      progress=lambda fraction, text: lines.append(text))
    finally:
        remove()
    assert types == {torch.float32}
    assert report.arithmetic == "float32" and adapted.metadata.adapted["arithmetic"] == "float32"
    assert lines[-1].startswith("adapted: 2 steps in float32")
