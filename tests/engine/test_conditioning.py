"""Cross-attention conditioning (seed 002): context encoding, per-slice positions, training, enhance, Slicer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import randomized
from MRISuperResLib import models
from MRISuperResLib.cli import app as cli
from MRISuperResLib.engine.checkpoint import load_model_file, save_model
from MRISuperResLib.engine.conditioning import (
    ContextError,
    ContextSpec,
    context_for_model,
    parse_context,
    slice_positions,
)
from MRISuperResLib.engine.device import select_device
from MRISuperResLib.engine.enhance import enhance_volume
from MRISuperResLib.engine.inference import run_tiled
from MRISuperResLib.training.augment import PatchBatch, augment_batch
from MRISuperResLib.training.config import ConfigError, config_from_dict
from MRISuperResLib.imaging.volume import Grid, Volume
from MRISuperResLib.imaging.volume_io import write_volume

def run_main(capsys: pytest.CaptureFixture, *argv) -> tuple[int, str, str]:
    """``cli.main`` in-process: exit code, stdout, stderr."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


VARIABLES = {"age": {"kind": "numeric", "offset": 50, "scale": 20},
             "sex": {"kind": "categorical", "categories": ["F", "M"]},
             "slice_position": {"kind": "slice_position"}}
NETWORK = {"scale": [2, 2, 2], "input_slices": 3, "channels": 8, "channel_mult": [1, 2], "res_blocks": 1,
           "groups": 4, "self_attention": False, "cross_attention_stages": [2, 3]}


def conditioned_model(path: Path, seed: int = 0) -> Path:
    """A small conditioned 2.5D U-Net with random weights (so that the context changes the output)."""
    spec = ContextSpec.from_config(VARIABLES)
    config = {**NETWORK, "context_dim": spec.dim, "slice_position_index": spec.slice_position_index}
    torch.manual_seed(seed)
    network = randomized(models.create("unet25d", **config), seed=seed, std=0.1)
    return save_model(network, path, name=path.stem, family="unet25d", config=config,
                      extra={"conditioning": spec.to_metadata()})


def test_encoding_numeric_scaling_and_categorical_one_hot() -> None:
    spec = ContextSpec.from_config(VARIABLES)
    assert spec.dim == 4 and spec.slice_position_index == 3
    np.testing.assert_allclose(spec.encode({"age": "63", "sex": "m"}), [0.65, 0.0, 1.0, 0.5])
    assert ContextSpec.from_metadata(spec.to_metadata()) == spec
    assert parse_context("age=63, sex=F") == {"age": "63", "sex": "F"}


@pytest.mark.parametrize("values, message", [
    ({"age": 63}, r"lacks sex: this model is conditioned on age \(number\), sex \(one of F/M\)"),
    ({"age": 63, "sex": "X"}, "sex=X is not one of F, M"),
    ({"age": "old", "sex": "F"}, "age=old is not a number"),
    ({"age": 63, "sex": "F", "weight": 80}, "unknown context variable"),
])
def test_bad_context_values_are_one_line_errors(values: dict, message: str) -> None:
    with pytest.raises(ContextError, match=message) as caught:
        context_for_model({"conditioning": ContextSpec.from_config(VARIABLES).to_metadata()}, values)
    assert "\n" not in str(caught.value)


def test_context_given_to_an_unconditioned_model_is_refused() -> None:
    with pytest.raises(ContextError, match="is not conditioned on a context; remove --context"):
        context_for_model({"family": "edsr3d"}, "age=63")
    assert context_for_model({"family": "edsr3d"}, None) is None
    with pytest.raises(ContextError, match="not name=value"):
        parse_context("age63")


def test_each_slice_gets_its_own_position_and_tiles_agree_with_the_whole_volume(tmp_path: Path,
                                                                                 single_thread) -> None:
    loaded = load_model_file(conditioned_model(tmp_path / "cond.safetensors"))
    network = loaded.network
    rng = np.random.default_rng(0)
    x = rng.random((8, 8, 24)).astype(np.float32)
    context = ContextSpec.from_metadata(loaded.metadata.conditioning).encode({"age": 70, "sex": "F"})
    tensor = torch.from_numpy(x)[None, None]
    with torch.inference_mode():
        whole = network(tensor, context=torch.from_numpy(context)[None])[0, 0].numpy()
        constant = network(tensor, context=torch.from_numpy(context)[None],
                           slice_positions=torch.full((48,), 0.5))[0, 0].numpy()
    assert np.abs(whole - constant).max() > 1e-4  # the slice position reaches the network
    # Tiles along the slice axis (k) hold whole planes: with their positions passed on they match exactly.
    tiled = run_tiled(network, x, select_device("cpu"), tile=(8, 8, 8), halo=12, context=context,
                      slice_positions=slice_positions(48))
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    unaware = run_tiled(network, x, select_device("cpu"), tile=(8, 8, 8), halo=12, context=context)
    assert np.abs(unaware - whole).max() > 1e-4  # each tile taken as a whole volume: positions wrong


def test_augmentation_flips_positions_with_the_slice_axis_and_never_rotates_it() -> None:
    low = torch.arange(4 * 4 * 4, dtype=torch.float32).reshape(1, 1, 4, 4, 4)
    high = torch.arange(8 * 8 * 8, dtype=torch.float32).reshape(1, 1, 8, 8, 8)
    positions = torch.linspace(0.1, 0.8, 8)[None]
    batch = PatchBatch(low, high.clone(), high, torch.ones(1, 4), positions)
    for seed in range(12):
        out = augment_batch(batch, np.random.default_rng(seed), scale=(2, 2, 2), slice_axis=2)
        # Each fine slice along k keeps its own position: slice content and position move together.
        first = out.high[0, 0, 0, 0, :]
        original = high[0, 0].reshape(-1, 8)
        index = [int(torch.nonzero((original == v).any(0))[0]) for v in first]
        np.testing.assert_allclose(out.slice_positions[0].numpy(), positions[0, index].numpy())
        assert torch.equal(out.context, batch.context)


def test_config_takes_a_context_and_checks_it(tmp_path: Path) -> None:
    base = {"model": {"family": "unet25d", "config": dict(NETWORK)},
            "data": {"train": ["a.nii.gz"], "context": {"variables": VARIABLES,
                                                       "subjects": {"a.nii.gz": {"age": 40, "sex": "F"}}}}}
    assert config_from_dict(base).data.context["subjects"]["a.nii.gz"]["age"] == 40
    bad = {**base, "data": {"context": {"variables": VARIABLES, "subjects": {"a.nii.gz": {"age": 40}}}}}
    with pytest.raises(ConfigError, match="data.context: context for a.nii.gz lacks sex"):
        config_from_dict(bad)
    with pytest.raises(ConfigError, match="only a model with cross-attention takes a context"):
        config_from_dict({"model": {"family": "edsr3d"}, "data": base["data"]})


def synthetic_files(folder: Path) -> list[Path]:
    paths = []
    rng = np.random.default_rng(1)
    for index in range(3):
        array = (rng.random((24, 24, 24)) * 100 + 50).astype(np.float32)
        paths.append(write_volume(Volume(array, Grid((24, 24, 24), (1.0,) * 3, (0.0,) * 3, np.eye(3))),
                                  folder / f"s{index}.nii.gz"))
    return paths


def test_training_passes_the_context_and_stores_its_encoding(tmp_path: Path, single_thread) -> None:
    from MRISuperResLib.training.loop import Trainer

    paths = synthetic_files(tmp_path)
    subjects = {p.name: {"age": 30 + 10 * i, "sex": "FM"[i % 2]} for i, p in enumerate(paths)}
    config = config_from_dict({
        "name": "cond", "output_dir": str(tmp_path / "run"),
        "model": {"family": "unet25d", "config": dict(NETWORK)},
        "data": {"train": [str(p) for p in paths[:2]], "validation": [str(paths[2])], "patch_size": [8, 8, 8],
                 "batch_size": 2, "crop_foreground": False,
                 "context": {"variables": VARIABLES, "subjects": subjects}},
        "run": {"steps": 2, "validate_every": 2, "checkpoint_every": 2, "device": "cpu", "amp": False,
                "early_stop_patience": 0},
    })
    trainer = Trainer(config, show_progress=False, log=lambda text: None)
    seen = []
    original = trainer.network.forward
    trainer.network.forward = lambda x, context=None, slice_positions=None: (
        seen.append((context, slice_positions)) or original(x, context, slice_positions))
    result = trainer.run()
    contexts = [c for c, _ in seen if c is not None]
    assert contexts and all(c.shape[-1] == 4 for c in contexts)
    assert any(p is not None and float(p.min()) >= 0 and float(p.max()) <= 1 for _, p in seen)
    metadata = load_model_file(result.model_path).metadata
    assert metadata.conditioning["variables"][1] == {"name": "sex", "kind": "categorical",
                                                        "categories": ["F", "M"]}
    assert metadata.config["context_dim"] == 4 and metadata.config["slice_position_index"] == 3
    from MRISuperResLib.engine.model_zoo import model_card_text

    assert "- conditioned on: age (numeric), sex (F/M), slice_position (slice_position)" in model_card_text(metadata)


def test_enhance_uses_the_context_and_the_cli_reports_a_missing_one(tmp_path: Path, tiny_model: Path, capsys,
                                                                    single_thread) -> None:
    model = conditioned_model(tmp_path / "cond.safetensors")
    rng = np.random.default_rng(2)
    volume = Volume((rng.random((8, 8, 8)) * 100).astype(np.float32), Grid((8, 8, 8), (2.0,) * 3, (0.0,) * 3,
                                                                           np.eye(3)))
    young = enhance_volume(volume, model, 2, device="cpu", consistency=False, context="age=20,sex=F")
    old = enhance_volume(volume, model, 2, device="cpu", consistency=False, context={"age": 80, "sex": "M"})
    assert np.abs(young.sr.array - old.sr.array).max() > 1e-3
    source = write_volume(volume, tmp_path / "in.nii.gz")
    out = tmp_path / "out.nii.gz"
    base = ["enhance", str(source), str(out), "--quiet", "--threads", "1"]
    code, _, err = run_main(capsys, *base, "--model", model)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "lacks age, sex: this model is conditioned on age (number), sex (one of F/M)" in err
    assert not out.exists()
    code, _, err = run_main(capsys, *base, "--model", tiny_model, "--context", "age=3")
    assert code == 1 and "is not conditioned on a context" in err and not out.exists()
    code, _, err = run_main(capsys, *base, "--model", model, "--context", "age=63,sex=F")
    assert code == 0 and out.exists(), err


def test_slicer_background_run_passes_the_context_on() -> None:
    from MRISuperResLib.slicer.enhance_process import EnhanceProcess

    process = EnhanceProcess.__new__(EnhanceProcess)
    EnhanceProcess.__init__(process, None, None, "default", 2, context={"age": 63, "sex": "F"})  # type: ignore[arg-type]
    command = process.command()
    assert command[command.index("--context") + 1] == "age=63,sex=F"
    EnhanceProcess.__init__(process, None, None, "default", 2)  # type: ignore[arg-type]
    assert "--context" not in process.command()


def test_slicer_training_pairs_carry_their_context(small_real_volume: Volume, tmp_path: Path, monkeypatch) -> None:
    slicer = pytest.importorskip("slicer")
    from MRISuperResLib.engine import model_zoo
    from MRISuperResLib.slicer.training import TrainingLogic, TrainingPair, TrainingSettings
    from MRISuperResLib.slicer.volumes import add_volume_node
    from MRISuperResLib.training.config import load_config

    monkeypatch.setenv(model_zoo.CONFIG_DIR_VARIABLE, str(tmp_path / "settings"))
    scene = slicer.vtkMRMLScene()
    nodes = [add_volume_node(scene, small_real_volume.with_array(small_real_volume.array * gain), f"brain{index}")
             for index, gain in enumerate((1.0, 0.8, 1.2))]
    pairs = [TrainingPair(node, validation=index == 2, context={"age": 30 + index, "sex": "FMF"[index]})
             for index, node in enumerate(nodes)]
    settings = TrainingSettings(name="cond", output_folder=tmp_path / "models", preset="unet25d-small",
                                model_config=dict(NETWORK), patch_size=(8, 8, 8), steps=2, device="cpu",
                                context_variables=VARIABLES)
    config = load_config(TrainingLogic(scene).prepare(pairs, settings).config_path)
    assert config.data.context["variables"] == VARIABLES
    assert sorted(config.data.context["subjects"].values(), key=lambda v: v["age"]) == [
        {"age": 30, "sex": "F"}, {"age": 31, "sex": "M"}, {"age": 32, "sex": "F"}]
    missing = [TrainingPair(nodes[0]), *pairs[1:]]
    with pytest.raises(Exception, match="lacks age, sex|no entry for"):
        from MRISuperResLib.training.loop import Trainer

        job = TrainingLogic(scene).prepare(missing, TrainingSettings(**{**vars(settings), "name": "cond2"}))
        Trainer(load_config(job.config_path), show_progress=False).load_data()
