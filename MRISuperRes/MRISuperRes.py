"""MRI Super-Resolution: the Slicer module that enhances a low-resolution MRI volume.

This file stays thin: Qt lives here, the work lives in the ``MRISuperResLib`` package next to it. Slicer puts this
module's folder on ``sys.path``, so the package is importable as ``MRISuperResLib``; import it inside functions,
never at module level, so that Slicer can load the module before PyTorch is installed.
"""

import sys

import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

LIBRARY_PACKAGE = "MRISuperResLib"
DOCUMENTATION_URL = "https://github.com/mrisuperres/SlicerMRISuperRes#readme"


#
# MRISuperRes
#


class MRISuperRes(ScriptedLoadableModule):
    """Module description shown in Slicer's module selector and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MRI Super-Resolution")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Filtering")]
        self.parent.dependencies = []
        self.parent.contributors = ["MRISuperRes developers"]
        self.parent.helpText = _("""
Super-resolve a low-resolution MRI volume with a deep-learning model and compare the result with the input.
See the <a href="{url}">documentation</a>.
""").format(url=DOCUMENTATION_URL)
        self.parent.acknowledgementText = _("""
Built on 3D Slicer's scripted module template, with PyTorch, MONAI and SimpleITK.
""")


#
# MRISuperResParameterNode
#


@parameterNodeWrapper
class MRISuperResParameterNode:
    """
    The parameters of the Enhance step, saved with the scene.

    inputVolume - The low-resolution volume to enhance; never modified.
    outputVolume - The volume that receives the super-resolved result.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode


#
# MRISuperResWidget
#


class MRISuperResWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Reads the GUI into the parameter node and hands the work to the logic."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MRISuperRes.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        # The .ui file connects the top-level widget's mrmlSceneChanged(vtkMRMLScene*) signal to every
        # node selector's setMRMLScene(vtkMRMLScene*) slot, so setting the scene here reaches all of them.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = MRISuperResLogic()

        # Keep the parameter node valid across scene close.
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)

        # Make sure parameter node is initialized (needed for module reload)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        self.removeObservers()

    def enter(self) -> None:
        """Called each time the user opens this module."""
        self.initializeParameterNode()

    def exit(self) -> None:
        """Called each time the user opens a different module."""
        # Stop reacting to parameter node changes; the GUI is refreshed when the user comes back.
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        """Called just before the scene is closed."""
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        """Called just after the scene is closed."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Forget the imported library too, so that "Reload" picks up edits to ``MRISuperResLib``."""
        for name in [name for name in sys.modules if name == LIBRARY_PACKAGE or name.startswith(LIBRARY_PACKAGE + ".")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def initializeParameterNode(self) -> None:
        """Ensure the parameter node exists and is observed; preselect the first volume as input."""
        self.setParameterNode(self.logic.getParameterNode())

        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: MRISuperResParameterNode | None) -> None:
        """Set and observe the parameter node, and bind it to the widgets named by their SlicerParameterName."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        parameterNode = self._parameterNode
        if not (parameterNode and parameterNode.inputVolume and parameterNode.outputVolume):
            self.ui.applyButton.toolTip = _("Select input and output volumes")
            self.ui.applyButton.enabled = False
        elif parameterNode.inputVolume.GetID() == parameterNode.outputVolume.GetID():
            # The input is never modified: the result always goes to a separate volume.
            self.ui.applyButton.toolTip = _("Select an output volume different from the input volume")
            self.ui.applyButton.enabled = False
        else:
            self.ui.applyButton.toolTip = _("Super-resolve the input volume")
            self.ui.applyButton.enabled = True

    def onApplyButton(self) -> None:
        """Run Enhance when the user clicks the button."""
        slicer.util.errorDisplay(_("Enhance is not implemented yet in this build."))


#
# MRISuperResLogic
#


class MRISuperResLogic(ScriptedLoadableModuleLogic):
    """Entry point for scripts and the widget: works without a GUI.

    Engine code comes from ``MRISuperResLib``, imported inside the methods that need it.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self) -> MRISuperResParameterNode:
        return MRISuperResParameterNode(super().getParameterNode())

    def enhance(self, volumeNode, model="default", scale=2, device="auto", **options):
        """Super-resolve ``volumeNode`` in the current scene (blocking) and return the output nodes.

        Example (Python console or ``Slicer --no-main-window --python-script``)::

            nodes = slicer.modules.mrisuperres.logic().enhance(getNode("T1"), model="default", scale=2)
            nodes.sr, nodes.baseline, nodes.difference, nodes.consistency

        ``scale`` is one factor or three in IJK order (``(1, 1, 4)`` restores 4x thicker slices along K);
        ``options`` go to ``MRISuperResLib.enhance.enhance_volume`` (tile, overlap, uncertainty, ...).
        """
        from MRISuperResLib.slicer_outputs import EnhanceLogic

        return EnhanceLogic(slicer.mrmlScene).enhance(volumeNode, model=model, scale=scale, device=device, **options)


#
# MRISuperResTest
#


class MRISuperResTest(ScriptedLoadableModuleTest):
    """Self-test, run from the module's "Reload and Test" button and by ctest."""

    def setUp(self):
        """Start every test from an empty scene."""
        slicer.mrmlScene.Clear()

    def runTest(self):
        """Run all tests of this module."""
        self.setUp()
        self.test_LogicInstantiates()
        self.setUp()
        self.test_EnhanceAddsOutputNodes()

    def test_EnhanceAddsOutputNodes(self):
        """Enhance a small synthetic volume with the shipped default model and check the output nodes."""
        import numpy as np

        volumeNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "MRISuperResTestInput")
        volumeNode.CreateDefaultDisplayNodes()
        grid = np.mgrid[0:12, 0:14, 0:10].astype(np.float32)
        slicer.util.updateVolumeFromArray(volumeNode, (np.sin(grid[0] / 3) + np.cos(grid[1] / 4) + grid[2] / 10))
        volumeNode.SetSpacing(2.0, 2.0, 2.0)
        nodes = MRISuperResLogic().enhance(volumeNode, model="default", scale=2, device="cpu")
        self.assertEqual(nodes.sr.GetName(), "MRISuperResTestInput_SR_x2")
        self.assertEqual(nodes.sr.GetImageData().GetDimensions(), (20, 28, 24))
        self.assertIn("AI-generated", nodes.sr.GetDescription())
        self.delayDisplay("Enhance test passed")

    def test_LogicInstantiates(self):
        """The logic builds without a GUI and gives an empty parameter node in a fresh scene."""
        self.delayDisplay("Starting the test")

        logic = MRISuperResLogic()
        parameterNode = logic.getParameterNode()
        self.assertIsNone(parameterNode.inputVolume)
        self.assertIsNone(parameterNode.outputVolume)

        self.delayDisplay("Test passed")
