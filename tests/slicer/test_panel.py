"""What the Enhance panel offers and refuses, decided by ``slicer_logic`` on real slicer-core nodes."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from MRISuperResLib.slicer import panel as slicer_logic  # noqa: E402
from MRISuperResLib.engine.model_zoo import shipped_models  # noqa: E402
from MRISuperResLib.slicer.panel import (  # noqa: E402
    EnhanceLogic,
    device_choices,
    input_problem,
    model_choices,
    scale_problem,
    thick_slice_scale,
)


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


def volume(scene, shape_kji=(10, 12, 14), cls="vtkMRMLScalarVolumeNode", name="T1"):
    node = scene.AddNewNodeByClass(cls, name)
    rng = np.random.default_rng(0)
    slicer.util.updateVolumeFromArray(node, rng.random(shape_kji).astype(np.float32) * 100)
    return node


def test_a_scalar_3d_volume_is_accepted(scene) -> None:
    assert input_problem(volume(scene)) is None


@pytest.mark.parametrize(("make", "reason"), [
    (lambda scene: None, "Select an input volume"),
    (lambda scene: volume(scene, cls="vtkMRMLLabelMapVolumeNode", name="seg"), "seg is a label map"),
    (lambda scene: scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty"), "empty has no voxels"),
    (lambda scene: volume(scene, shape_kji=(1, 12, 14), name="slice"), "slice is 2D"),
])
def test_inputs_that_cannot_be_enhanced_say_why(scene, make, reason: str) -> None:
    assert reason in input_problem(make(scene))


def test_a_vector_volume_is_refused(scene) -> None:
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    slicer.util.updateVolumeFromArray(node, np.zeros((4, 5, 6, 3), np.uint8))
    assert "not a scalar volume" in input_problem(node)


@pytest.mark.parametrize(("spacing", "expected"), [
    ((1.0, 1.0, 4.0), (1.0, 1.0, 4.0)),
    ((0.94, 0.94, 5.2), (1.0, 1.0, 5.0)),
    ((3.0, 1.0, 1.0), (3.0, 1.0, 1.0)),
    ((1.0, 1.0, 12.0), (1.0, 1.0, 5.0)),
    ((1.0, 1.0, 1.2), None),
])
def test_thick_slice_scale_follows_the_thickest_axis(spacing, expected) -> None:
    assert thick_slice_scale(spacing) == expected


def test_model_choices_list_default_then_shipped_models_with_scales(tmp_path) -> None:
    choices = model_choices([tmp_path / "missing.safetensors"])
    assert choices[0].value == "default"
    assert [c.value for c in choices[1:]] == [e.name for e in shipped_models()]
    assert all("scales:" in c.description for c in choices[1:])


def test_a_browsed_model_file_is_offered_by_its_path(tmp_path) -> None:
    import shutil

    path = tmp_path / "browsed.safetensors"
    shutil.copy(shipped_models()[0].path, path)
    choice = model_choices([path])[-1]
    assert choice.value == str(path) and choice.supports(shipped_models()[0].metadata.scales[0])
    # A browsed file that is a listed model is not listed twice.
    assert len(model_choices([shipped_models()[0].path])) == len(model_choices())


def test_scale_problems_name_the_supported_scales() -> None:
    entry = shipped_models()[0]
    supported = entry.metadata.scales[0]
    assert scale_problem(entry.name, supported) is None
    message = scale_problem(entry.name, (7.0, 7.0, 7.0))
    assert "cannot do scale 7" in message and "supports" in message
    assert "no shipped model does scale 7" in scale_problem("default", (7.0, 7.0, 7.0))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 4.0), (4.0, 1.0, 1.0), (1.0, 4.1, 1.0)])
def test_restoring_4x_thick_slices_along_any_axis_has_a_default_model(spacing) -> None:
    assert scale_problem("default", thick_slice_scale(spacing)) is None


def test_devices_always_offer_auto_and_cpu() -> None:
    values = [value for _, value in device_choices()]
    assert values[:2] == ["auto", "cpu"]
    assert all(v == "mps" or v.startswith("cuda:") for v in values[2:])


def test_the_documented_result_shape(scene, single_thread) -> None:
    node = volume(scene, shape_kji=(8, 10, 12))
    before = slicer.util.arrayFromVolume(node).copy()
    result = EnhanceLogic(scene).enhance(node, model="default", scale=2.0, device="cpu")
    assert result.srVolumeNode.GetName() == "T1_SR_x2"
    assert result.baselineVolumeNode is result.baseline and result.differenceVolumeNode is result.difference
    assert result.consistencyVolumeNode.GetImageData().GetDimensions() == (12, 10, 8)
    assert result.srVolumeNode.GetImageData().GetDimensions() == (24, 20, 16)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before)
    assert slicer_logic.EnhanceLogic is EnhanceLogic


def test_models_trained_into_a_user_folder_are_offered_by_name(tmp_path, monkeypatch, capsys) -> None:
    from helpers import make_tiny_model

    from MRISuperResLib.cli.app import main

    folder = tmp_path / "trained"
    folder.mkdir()
    path = make_tiny_model(folder / "my-t2-model.safetensors", description="trained on my T2 scans")
    monkeypatch.setenv("MRISUPERRES_MODEL_PATH", str(folder))
    monkeypatch.setenv("MRISUPERRES_CONFIG_DIR", str(tmp_path / "config"))
    choices = model_choices([path])  # also browsed to: listed once
    assert [c.value for c in choices].count("my-t2-model") == 1 and str(path) not in [c.value for c in choices]
    assert "trained on my T2 scans" in next(c for c in choices if c.value == "my-t2-model").description
    assert scale_problem("my-t2-model", (2.0, 2.0, 2.0)) is None
    assert main(["models"]) == 0
    assert "my-t2-model" in capsys.readouterr().out.split("families")[0]


def test_a_listed_model_file_is_found_by_its_file(tmp_path, monkeypatch) -> None:
    """Browse... to a shipped file, or the Training hand-off of a model in its registered output folder, selects
    the entry listed by name (not an error, not a second entry)."""
    import shutil

    from helpers import make_tiny_model

    from MRISuperResLib.engine import model_zoo
    from MRISuperResLib.slicer.panel import find_model_choice, model_file_problem

    monkeypatch.setenv("MRISUPERRES_CONFIG_DIR", str(tmp_path / "config"))
    shipped = shipped_models()[0]
    assert find_model_choice(model_choices(), shipped.path).value == shipped.name
    folder = tmp_path / "Slicer models"
    folder.mkdir()
    trained = make_tiny_model(folder / "harness-tiny.safetensors")
    model_zoo.register_model_folder(folder)  # what the training logic does with its output folder
    choices = model_choices()
    assert find_model_choice(choices, folder / ".." / folder.name / trained.name).value == "harness-tiny"
    elsewhere = tmp_path / "other.safetensors"
    shutil.copy(shipped.path, elsewhere)
    assert find_model_choice(choices, elsewhere) is None and model_file_problem(elsewhere) is None
    pickled = tmp_path / "model.safetensors"
    pickled.write_bytes(b"\x80\x04junk")
    assert "pickled" in model_file_problem(pickled)
    assert "does not exist" in model_file_problem(tmp_path / "missing.safetensors")


def test_building_what_the_enhance_panel_shows_imports_neither_torch_nor_monai(tmp_path) -> None:
    """What the widget calls on opening (model list from file headers, device list from a child process, the
    checks behind the Enhance button, the dependency check), in a fresh interpreter: Slicer's process must not
    pay for, nor be pinned to, torch and MONAI."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    library = Path(__file__).resolve().parents[2] / "MRISuperRes"
    code = f"""
import json, sys
import numpy as np
import slicer
from MRISuperResLib.slicer import dependencies as slicer_dependencies
from MRISuperResLib.slicer.panel import DeviceProbe, input_problem, model_choices, scale_problem, thick_slice_scale
scene = slicer.vtkMRMLScene()
node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T1")
slicer.util.updateVolumeFromArray(node, np.zeros((6, 7, 8), np.float32))
choices = model_choices()
problems = [scale_problem(c.value, s) for c in choices for s in ((2.0, 2.0, 2.0), (1.0, 1.0, 4.0))]
assert input_problem(node) is None and thick_slice_scale((1, 1, 4)) == (1.0, 1.0, 4.0)
devices = DeviceProbe().result()
slicer_dependencies.dependency_plan({str(library / 'Resources' / 'requirements.txt')!r})
print(json.dumps({{"models": len(choices), "devices": devices[:2], "torch": "torch" in sys.modules,
                  "monai": "monai" in sys.modules, "safetensors": "safetensors" in sys.modules}}))
"""
    env = {**__import__("os").environ, "PYTHONPATH": str(library), "MRISUPERRES_CONFIG_DIR": str(tmp_path),
           "MRISUPERRES_MODEL_PATH": ""}
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    assert seen["models"] == 1 + len(shipped_models())
    assert seen["devices"] == [["Auto (best available)", "auto"], ["CPU", "cpu"]]
    assert not seen["torch"] and not seen["monai"] and not seen["safetensors"], seen
