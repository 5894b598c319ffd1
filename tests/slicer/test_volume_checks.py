"""One scalar-volume check (MRISuperResLib.slicer.volumes.scalar_volume_problem) behind the Enhance panel, the Enhance
logic and the Training logic, each wording it for its own user; real MRML nodes from the slicer-core wheel."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from MRISuperResLib.errors import InputError  # noqa: E402
from MRISuperResLib.slicer.outputs import EnhanceLogic  # noqa: E402
from MRISuperResLib.slicer.panel import input_problem  # noqa: E402
from MRISuperResLib.slicer.training.subjects import check_item  # noqa: E402
from MRISuperResLib.slicer.volumes import NodeProblem, scalar_volume_problem  # noqa: E402


def _nodes(scene):  # type: ignore[no-untyped-def]
    scalar = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "t1")
    slicer.util.updateVolumeFromArray(scalar, np.ones((4, 5, 6), dtype=np.float32))
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    slicer.util.updateVolumeFromArray(labels, np.ones((4, 5, 6), dtype=np.uint8))
    vector = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    model = scene.AddNewNodeByClass("vtkMRMLModelNode", "surface")
    return {"scalar": scalar, "labels": labels, "vector": vector, "empty": empty, "model": model}


def test_the_three_callers_refuse_what_the_one_check_finds() -> None:
    scene = slicer.vtkMRMLScene()
    nodes = _nodes(scene)
    assert scalar_volume_problem(None) is NodeProblem.MISSING
    expected = {"scalar": None, "labels": NodeProblem.LABEL_MAP, "vector": NodeProblem.NOT_SCALAR,
                "empty": NodeProblem.NO_VOXELS, "model": NodeProblem.NOT_SCALAR}
    assert {name: scalar_volume_problem(node) for name, node in nodes.items()} == expected

    # The panel's status line.
    assert input_problem(None) == "Select an input volume."
    assert input_problem(nodes["scalar"]) is None
    assert input_problem(nodes["labels"]).startswith("labels is a label map (segmentation)")
    assert input_problem(nodes["vector"]).startswith("rgb is not a scalar volume")
    assert input_problem(nodes["empty"]).startswith("empty has no voxels")

    # The Enhance logic (scripts): ValueError naming the class; an empty output node may be reused.
    logic = EnhanceLogic(scene)
    logic.check_nodes(nodes["scalar"])
    for name in ("labels", "vector", "model"):
        with pytest.raises(ValueError, match=f"input must be a scalar volume node, not {nodes[name].GetClassName()}"):
            logic.check_nodes(nodes[name])
    with pytest.raises(ValueError, match="the input must be a scalar volume node, not None"):
        logic.check_nodes(None)
    logic.check_nodes(nodes["empty"])

    # The Training logic: InputError naming the pair.
    assert check_item(scene, nodes["scalar"], "high-resolution", 1) is nodes["scalar"]
    for node in (nodes["labels"], nodes["vector"]):
        with pytest.raises(InputError, match=f"pair 2: the low-resolution volume {node.GetName()} is not a scalar"):
            check_item(scene, node, "low-resolution", 2)
    with pytest.raises(InputError, match="the high-resolution volume empty has no voxels; load its data"):
        check_item(scene, nodes["empty"], "high-resolution", None)
