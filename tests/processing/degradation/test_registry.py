"""The forward-model registry: every kind works through the spec, a new kind is one new file, and every list of
kinds comes from it (MRISuperResLib.processing.degradation.base)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from MRISuperResLib.processing import degradation
from MRISuperResLib.processing.degradation import (
    KINDS,
    REGISTRY,
    DegradationSpec,
    ForwardModel,
    degrade,
    forward_model_class,
)

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "MRISuperRes" / "MRISuperResLib" / "processing" / "degradation"


def test_kinds_are_the_registry_default_first() -> None:
    assert set(KINDS) == set(REGISTRY) and KINDS[0] == degradation.DEFAULT_KIND == "kspace"
    assert list(KINDS[1:]) == sorted(KINDS[1:])
    built_in = {"kspace": "KSpaceTruncation", "box": "BoxProfile", "gaussian": "GaussianProfile"}
    assert {name: REGISTRY[name].__name__ for name in built_in} == built_in


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_round_trips_through_the_spec_and_degrades_to_the_shape(kind: str) -> None:
    spec = DegradationSpec((kind, kind, kind), fwhm=1.5, gap=0.1, noise=(0.0, 0.01))
    assert DegradationSpec.from_dict(spec.to_dict()) == spec
    single = DegradationSpec(kind)
    assert DegradationSpec.from_dict(single.to_dict()) == single
    model = spec.models[0]
    assert model.name == kind and isinstance(model, forward_model_class(kind))
    assert set(model.parameters) <= set(spec.to_dict())  # a model's parameters are fields of the spec
    array = np.random.default_rng(0).normal(size=(12, 10, 9)).astype(np.float32)
    for shape in ((6, 5, 3), (12, 4, 9), (5, 10, 2)):
        result = degrade(array, shape, spec)
        assert result.shape == shape and result.dtype == np.float32
        per_axis = model.degrade_axis(array.astype(np.float64), shape[1], 1)
        assert per_axis.shape == (12, shape[1], 9)


def test_forward_model_class_names_the_known_kinds() -> None:
    with pytest.raises(ValueError, match=f"unknown forward model 'sinc'; known: {', '.join(KINDS)}$"):
        forward_model_class("sinc")


def test_a_subclass_with_a_name_registers_itself_and_names_are_unique() -> None:
    @dataclass(frozen=True)
    class Nearest(ForwardModel):
        name = "nearest-test"

        def degrade_axis(self, array: np.ndarray, size: int, axis: int) -> np.ndarray:
            index = ((np.arange(size) + 0.5) * array.shape[axis] / size).astype(int)
            return np.take(array, index, axis=axis)

    try:
        assert REGISTRY["nearest-test"] is Nearest
        array = np.arange(8, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
        assert degrade(array, (4, 2, 2), DegradationSpec("nearest-test"))[:, 0, 0].tolist() == [1, 3, 5, 7]
        with pytest.raises(TypeError, match="defined twice"):
            type("Other", (ForwardModel,), {"name": "nearest-test"})
    finally:
        REGISTRY.pop("nearest-test", None)
    with pytest.raises(ValueError, match=f"not one of {', '.join(KINDS)} "):
        DegradationSpec("nearest-test")


#: A forward model as a new file would hold it: point sampling at the coarse centres (no parameters).
NEW_KIND = '''
"""Point sampling at the coarse voxel centres (an ideal, infinitely thin slice profile)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import ForwardModel


@dataclass(frozen=True)
class PointSampling(ForwardModel):
    name = "point"

    def degrade_axis(self, array: np.ndarray, size: int, axis: int) -> np.ndarray:
        index = ((np.arange(size) + 0.5) * array.shape[axis] / size).astype(int)
        return np.take(array, index, axis=axis)
'''

CHECK_NEW_KIND = '''
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import forward_copy as d
from forward_copy.acquisition import AcquisitionRanges, slice_profiles
assert "point" in d.KINDS and d.KINDS[0] == "kspace", d.KINDS
spec = d.DegradationSpec(("kspace", "kspace", "point"))
assert d.DegradationSpec.from_dict(spec.to_dict()) == spec
array = np.arange(16, dtype=np.float32)[None, None, :] * np.ones((4, 4, 1), np.float32)
assert d.degrade(array, (2, 2, 4), spec)[0, 0].tolist() == [2, 6, 10, 14]
assert "point" in slice_profiles()
AcquisitionRanges.from_dict({"thick_profiles": ["point"]})
print("ok", ",".join(d.KINDS))
'''


def test_adding_a_kind_is_one_new_file(tmp_path: Path) -> None:
    """A copy of the package plus one file: the kind is registered, listed, usable in specs and acquisitions."""
    copy = tmp_path / "forward_copy"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "point.py").write_text(NEW_KIND)
    completed = subprocess.run([sys.executable, "-c", CHECK_NEW_KIND, str(tmp_path)], capture_output=True,
                               text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    expected = ("kspace", *sorted(set(KINDS[1:]) | {"point"}))
    assert completed.stdout.strip() == "ok " + ",".join(expected)


def test_the_package_does_not_import_torch() -> None:
    code = "import sys; import MRISuperResLib.processing.degradation; print('torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                               env={"PYTHONPATH": str(ROOT / "MRISuperRes"), "PATH": ""})
    assert completed.stdout.strip() == "False", completed.stderr


def _training_panel_choices() -> ast.FunctionDef:
    tree = ast.parse((ROOT / "MRISuperResTraining" / "MRISuperResTraining.py").read_text())
    return next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "_engineChoices")


def test_the_training_panel_lists_the_registry() -> None:
    """The Training module's forward-model choices are read from KINDS (the module itself needs Slicer)."""
    namespace: dict[str, object] = {}
    exec(compile(ast.Module([_training_panel_choices()], []), "MRISuperResTraining.py", "exec"), namespace)
    _presets, kinds = namespace["_engineChoices"]()  # type: ignore[operator]
    assert kinds == list(KINDS)


def test_the_command_line_help_lists_the_registry() -> None:
    from MRISuperResLib.cli.app import build_parser

    commands = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for command in ("simulate", "evaluate"):
        kind = next(a for a in commands.choices[command]._actions if "--kind" in a.option_strings)
        assert ", ".join(KINDS) in kind.help, (command, kind.help)
