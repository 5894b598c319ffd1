"""MRI Super-Resolution Training: the Slicer module that trains a super-resolution model on the user's scans.

This file stays thin: Qt lives here, the work lives in the ``MRISuperResLib`` package of the MRISuperRes module
(installed in the same scripted-modules folder, so importable as ``MRISuperResLib``). Import it inside functions,
never at module level, so that Slicer can load the module before PyTorch is installed.
"""

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

DOCUMENTATION_URL = "https://github.com/mrisuperres/SlicerMRISuperRes#readme"


#
# MRISuperResTraining
#


class MRISuperResTraining(ScriptedLoadableModule):
    """Module description shown in Slicer's module selector and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MRI Super-Resolution Training")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Filtering")]
        # The engine package ships with the MRISuperRes module.
        self.parent.dependencies = ["MRISuperRes"]
        self.parent.contributors = ["MRISuperRes developers"]
        self.parent.helpText = _("""
Train a super-resolution model on paired high- and low-resolution MRI scans loaded in the scene.
See the <a href="{url}">documentation</a>.
""").format(url=DOCUMENTATION_URL)
        self.parent.acknowledgementText = _("""
Built on 3D Slicer's scripted module template, with PyTorch, MONAI and SimpleITK.
""")


#
# MRISuperResTrainingParameterNode
#


@parameterNodeWrapper
class MRISuperResTrainingParameterNode:
    """
    The parameters of a training run, saved with the scene.

    highResVolume - The high-resolution scan the model learns to produce.
    lowResVolume - The low-resolution scan of the same subject, paired with highResVolume.
    """

    highResVolume: vtkMRMLScalarVolumeNode
    lowResVolume: vtkMRMLScalarVolumeNode


#
# MRISuperResTrainingWidget
#


class MRISuperResTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
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

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MRISuperResTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        # The .ui file connects the top-level widget's mrmlSceneChanged(vtkMRMLScene*) signal to every
        # node selector's setMRMLScene(vtkMRMLScene*) slot, so setting the scene here reaches all of them.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = MRISuperResTrainingLogic()

        # Keep the parameter node valid across scene close.
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)

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
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanTrain)

    def onSceneStartClose(self, caller, event) -> None:
        """Called just before the scene is closed."""
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        """Called just after the scene is closed."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Ensure the parameter node exists and is observed; preselect the first volume as high-resolution."""
        self.setParameterNode(self.logic.getParameterNode())

        if not self._parameterNode.highResVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.highResVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: MRISuperResTrainingParameterNode | None) -> None:
        """Set and observe the parameter node, and bind it to the widgets named by their SlicerParameterName."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanTrain)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanTrain)
            self._checkCanTrain()

    def _checkCanTrain(self, caller=None, event=None) -> None:
        if self._parameterNode and self._parameterNode.highResVolume:
            self.ui.trainButton.toolTip = _("Train a super-resolution model on the selected data")
            self.ui.trainButton.enabled = True
        else:
            self.ui.trainButton.toolTip = _("Select a high-resolution volume")
            self.ui.trainButton.enabled = False

    def onTrainButton(self) -> None:
        """Start training when the user clicks the button."""
        slicer.util.errorDisplay(_("Training is not implemented yet in this build."))


#
# MRISuperResTrainingLogic
#


class MRISuperResTrainingLogic(ScriptedLoadableModuleLogic):
    """Entry point for scripts and the widget: works without a GUI.

    Engine code comes from ``MRISuperResLib``, imported inside the methods that need it.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self) -> MRISuperResTrainingParameterNode:
        return MRISuperResTrainingParameterNode(super().getParameterNode())


#
# MRISuperResTrainingTest
#


class MRISuperResTrainingTest(ScriptedLoadableModuleTest):
    """Self-test, run from the module's "Reload and Test" button and by ctest."""

    def setUp(self):
        """Start every test from an empty scene."""
        slicer.mrmlScene.Clear()

    def runTest(self):
        """Run all tests of this module."""
        self.setUp()
        self.test_LogicInstantiates()

    def test_LogicInstantiates(self):
        """The logic builds without a GUI and gives an empty parameter node in a fresh scene."""
        self.delayDisplay("Starting the test")

        logic = MRISuperResTrainingLogic()
        parameterNode = logic.getParameterNode()
        self.assertIsNone(parameterNode.highResVolume)
        self.assertIsNone(parameterNode.lowResVolume)

        self.delayDisplay("Test passed")
