"""The README's Python-console example runs as written on a real slicer-core scene.

In Slicer, ``slicer.modules.mrisuperres.logic()`` is the C++ logic of a scripted module (no ``enhance``), so the
documented entry is ``slicer.util.getModuleLogic("MRISuperRes")``, which returns the module widget's
``MRISuperResLogic``; that class's ``enhance`` is ``EnhanceLogic(slicer.mrmlScene).enhance``. Here only the module
manager lookup (which needs the application) is replaced by that logic; everything else the example calls is the
real ``slicer.util`` of the wheel on a real scene.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from MRISuperResLib.slicer.outputs import EnhanceLogic  # noqa: E402

README = Path(__file__).resolve().parents[2] / "README.md"


def console_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("**Python console and batch**"):]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_the_readme_uses_the_logic_that_scripted_modules_expose() -> None:
    code = console_example()
    assert 'slicer.util.getModuleLogic("MRISuperRes")' in code.splitlines()[0]
    for path in [README, *README.parent.glob("MRISuperRes*/MRISuperRes*.py")]:
        assert ".mrisuperres.logic().enhance" not in path.read_text(encoding="utf-8").replace("\n", ""), path


def test_the_readme_console_example_runs_on_a_real_scene(monkeypatch, single_thread) -> None:
    scene = slicer.vtkMRMLScene()
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    logic = EnhanceLogic(scene)
    monkeypatch.setattr(slicer.util, "getModuleLogic", lambda name: logic if name == "MRISuperRes" else None)
    rng = np.random.default_rng(0)
    for name, spacing in (("T1", (2.0, 2.0, 2.0)), ("T2_thick", (1.0, 1.0, 4.0))):
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        slicer.util.updateVolumeFromArray(node, (rng.random((8, 10, 12)) * 100).astype(np.float32))
        node.SetSpacing(*spacing)
    namespace = {"slicer": slicer, "getNode": slicer.util.getNode}
    exec(compile(console_example(), "README.md", "exec"), namespace)
    names = {scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode").GetName()
             for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))}
    assert {"T1_SR_x2", "T2_thick_SR_x2", "T2_thick_SR_x1,1,4"} <= names
    # The loop skipped the first result's outputs: one x2 SR of T1, none of its outputs enhanced again.
    assert not any(name.startswith("T1_SR_x2_") for name in names)
    assert namespace["result"].srVolumeNode.GetImageData().GetDimensions() == (24, 20, 16)
