"""The Enhance module's self-test checks, run in Slicer by "Reload and Test" and by ctest
(``MRISuperResTest`` in ``MRISuperRes.py`` calls them with itself as the test case).

They build a small synthetic volume in the scene, so they need no data; the checks that run the engine skip where
PyTorch or MONAI are not installed (extension build machines).
"""

from __future__ import annotations

import importlib.util
import unittest
from typing import Any

import numpy as np

#: Packages the enhance checks need; without them there is nothing to enhance with.
ENGINE_PACKAGES = ("torch", "monai")


def missing_engine_packages() -> list[str]:
    """The packages of :data:`ENGINE_PACKAGES` that are not installed (installed on the first Enhance)."""
    return [name for name in ENGINE_PACKAGES if importlib.util.find_spec(name) is None]


def small_test_volume(scene: Any, name: str = "MRISuperResTestInput") -> Any:
    """A smooth 12 x 14 x 10 (i, j, k) float volume node with 2 mm isotropic spacing and display nodes."""
    import slicer.util

    volume_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    volume_node.CreateDefaultDisplayNodes()
    grid = np.mgrid[0:12, 0:14, 0:10].astype(np.float32)
    slicer.util.updateVolumeFromArray(volume_node, (np.sin(grid[0] / 3) + np.cos(grid[1] / 4) + grid[2] / 10))
    volume_node.SetSpacing(2.0, 2.0, 2.0)
    return volume_node


def check_enhance_adds_output_nodes(case: unittest.TestCase, logic: Any, scene: Any) -> None:
    """Enhance the small volume with the shipped default model (x2, CPU) through the module logic's blocking
    ``enhance`` and check the SR node's name, dimensions and AI-generated label, and the difference node."""
    result = logic.enhance(small_test_volume(scene), model="default", scale=2, device="cpu")
    case.assertEqual(result.srVolumeNode.GetName(), "MRISuperResTestInput_SR_x2")
    case.assertEqual(result.srVolumeNode.GetImageData().GetDimensions(), (20, 28, 24))
    case.assertIn("AI-generated", result.srVolumeNode.GetDescription())
    case.assertIsNotNone(result.differenceVolumeNode)


def check_background_enhance_and_linked_views(case: unittest.TestCase, logic: Any, scene: Any, application: Any
                                              ) -> None:
    """The widget's path: the logic's background process (waited for here), then the three linked views shown,
    re-oriented and restored (the layout checks need a main window: ``application.layoutManager()``)."""
    from .layout import COMPARE_LAYOUT_ID, CompareViews

    parameter_node = logic.getParameterNode()
    parameter_node.inputVolume = small_test_volume(scene)
    parameter_node.device = "cpu"
    process = logic.startEnhance(parameter_node, (2.0, 2.0, 2.0))
    nodes = process.run_blocking() if process.poll().state == "running" else process.finish()
    logic.rememberOutputs(parameter_node, nodes)
    case.assertEqual(parameter_node.srVolume.GetImageData().GetDimensions(), (20, 28, 24))

    layout_manager = application.layoutManager()
    previous_layout = layout_manager.layout if layout_manager else None
    comparison = CompareViews(scene, application_logic=application.applicationLogic())
    comparison.show(parameter_node.inputVolume, parameter_node.srVolume, parameter_node.differenceVolume)
    if layout_manager:
        case.assertEqual(layout_manager.layout, COMPARE_LAYOUT_ID)
    comparison.set_orientation("Coronal")
    comparison.set_difference_opacity(0.3)
    comparison.restore()
    if layout_manager:
        case.assertEqual(layout_manager.layout, previous_layout)
