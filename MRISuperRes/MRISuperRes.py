"""MRI Super-Resolution: the Slicer module that enhances a low-resolution MRI volume.

This file stays thin: the widget's Qt parts live in ``MRISuperResLib.gui`` (``enhance_choices``: the model and
device selectors; ``enhance_run``: Enhance/Cancel and the background run; ``enhance_views``: the linked views), the
work in ``MRISuperResLib.slicer`` (``panel``: what the panel offers and refuses; ``enhance_process``: the
background run; ``outputs``: the output nodes; ``layout``: the linked views; ``self_test``: the self-test's
checks). Slicer puts this module's folder on ``sys.path``, so the package is importable as ``MRISuperResLib``; it
is imported inside functions, never at module level, so that Slicer can load the module before PyTorch and the
other dependencies are installed.
"""

import os
import sys
from typing import Annotated

import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

LIBRARY_PACKAGE = "MRISuperResLib"

# Slicer appends this folder to sys.path; put it first so that the engine next to this file is the one imported
# here, as in the background processes, even when an "mrisuperres" package is also pip-installed.
_MODULE_FOLDER = os.path.dirname(os.path.abspath(__file__))
if _MODULE_FOLDER in sys.path and sys.path.index(_MODULE_FOLDER) > 0:
    sys.path.remove(_MODULE_FOLDER)
    sys.path.insert(0, _MODULE_FOLDER)
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
Super-resolve a low-resolution MRI volume with a deep-learning model and compare the result with the input in
linked views: input | super-resolved | difference. The outputs are AI-generated, not acquired: check the difference
and data-consistency maps before trusting new detail.
See the <a href="{url}">documentation</a>.
""").format(url=DOCUMENTATION_URL)
        self.parent.acknowledgementText = _("""
Built on 3D Slicer's scripted module template, with PyTorch, MONAI and SimpleITK.
""")
        # Scenes saved with the compare or training layout shown must find those layouts when they are opened.
        startupCompleted = getattr(slicer.app, "startupCompleted", None)
        if startupCompleted is not None:
            startupCompleted.connect(registerLayouts)


def registerLayouts() -> None:
    """Register the module's custom layouts with the application's layout node (called once Slicer started)."""
    layoutManager = slicer.app.layoutManager()
    if layoutManager is None:  # no main window
        return
    from MRISuperResLib.slicer.layout import register_startup_layouts

    register_startup_layouts(layoutManager.layoutLogic().GetLayoutNode())


#
# MRISuperResParameterNode
#


#: The Arithmetic selector's values: the engine's ``PRECISIONS`` (written out: the engine is not imported here).
PRECISION_CHOICES = ["auto", "float32", "bfloat16"]


@parameterNodeWrapper
class MRISuperResParameterNode:
    """
    The parameters of the Enhance step, saved with the scene.

    inputVolume - The low-resolution volume to enhance; never modified.
    model - "default", a shipped model name or a model file path.
    scaleChoice - "2", "3", "4", "thick" (restore thick slices from the input's spacing) or "perAxis".
    perAxisScale - Factors in the volume's i,j,k order, e.g. "1,1,4" (used when scaleChoice is "perAxis").
    device - "auto", "cpu", "cuda:N" or "mps".
    precision - The network's arithmetic: "auto" (half precision on a GPU, float32 on a CPU), "float32" or
        "bfloat16" (about twice as fast on CPUs with AVX512-BF16 or AMX, PSNR within 0.01 dB on the held-out set).
        "Adapt to this scan" fine-tunes as training does (bfloat16 where the CPU has it) unless "float32".
    tileSize - Input tile edge in voxels; 0 picks the largest that fits in memory.
    overlap - Fraction of a tile shared with its neighbours.
    uncertainty - Also compute the flip-ensemble uncertainty map.
    maskBackground - Keep the baseline outside the head.
    projection - Correct the network's output towards the measured input (data-consistency projection).
    adaptToScan - First fine-tune the thick-slice model on the input's own in-plane detail (slower).
    adaptSeconds - Time budget of that adaptation, in seconds.
    reuseOutputs - Update the previous output volumes instead of adding new ones.
    differenceOpacity - Opacity of the difference map over the SR in the third linked view.
    outputsInput - The input of the last run (its outputs are reused only for the same input).
    srVolume, baselineVolume, differenceVolume, consistencyVolume, uncertaintyVolume - Outputs of the last run:
        one ``<key>Volume`` per output map of ``MRISuperResLib.engine.outputs.OUTPUT_MAPS``, and a boolean named
        like each optional map (``uncertainty``) that asks for it (tests/slicer/test_module_ui.py checks both).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    model: str = "default"
    scaleChoice: str = "2"
    perAxisScale: str = "1,1,4"
    device: str = "auto"
    precision: Annotated[str, Choice(PRECISION_CHOICES)] = "auto"
    tileSize: Annotated[int, WithinRange(0, 1024)] = 0
    overlap: Annotated[float, WithinRange(0.0, 0.9)] = 0.25
    uncertainty: bool = False
    maskBackground: bool = True
    projection: bool = True
    adaptToScan: bool = False
    adaptSeconds: Annotated[float, WithinRange(10.0, 3600.0)] = 180.0
    reuseOutputs: bool = False
    differenceOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    outputsInput: vtkMRMLScalarVolumeNode
    srVolume: vtkMRMLScalarVolumeNode
    baselineVolume: vtkMRMLScalarVolumeNode
    differenceVolume: vtkMRMLScalarVolumeNode
    consistencyVolume: vtkMRMLScalarVolumeNode
    uncertaintyVolume: vtkMRMLScalarVolumeNode


#
# MRISuperResWidget
#


class MRISuperResWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Reads the GUI into the parameter node and hands the work to the logic; never blocks Slicer.

    Composes the Qt parts of ``MRISuperResLib.gui``: ``choices`` (``EnhanceChoices``: model and device selectors,
    Browse...), ``runControl`` (``EnhanceRun``: Enhance/Cancel, polling the background run) and ``views``
    (``EnhanceViews``: the linked views).
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.updatingGui = False
        self.choices = self.runControl = self.views = None  # the gui parts, made in setup()

    def setup(self) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MRISuperRes.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        # The .ui file connects the top-level widget's mrmlSceneChanged(vtkMRMLScene*) signal to the node
        # selector's setMRMLScene(vtkMRMLScene*) slot, so setting the scene here reaches it.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = MRISuperResLogic()

        # Imported here, not at module level: Slicer loads this file before the dependencies are installed.
        from MRISuperResLib.gui.enhance_choices import EnhanceChoices
        from MRISuperResLib.gui.enhance_run import EnhanceRun
        from MRISuperResLib.gui.enhance_views import EnhanceViews
        from MRISuperResLib.slicer.panel import SCALE_CHOICES

        for label, value in SCALE_CHOICES:
            self.ui.scaleComboBox.addItem(_(label), value)
        for orientation in ("Axial", "Coronal", "Sagittal"):
            self.ui.orientationComboBox.addItem(_(orientation), orientation)
        self.choices, self.runControl, self.views = EnhanceChoices(self), EnhanceRun(self), EnhanceViews(self)

        self.choices.populateModels()
        self.choices.populateDevices()

        # Keep the parameter node valid across scene close.
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        # Each part connects its own controls (the selectors, the views); Enhance is connected here.
        self.choices.connectControls()
        self.views.connectControls()
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)

        # Make sure parameter node is initialized (needed for module reload)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed: stop a running enhance."""
        if self.runControl is not None:
            self.runControl.stop()
        if self.choices is not None:
            self.choices.stop()
        self.removeObservers()

    def enter(self) -> None:
        """Called each time the user opens this module: models trained since appear in the list."""
        self.choices.populateModels()
        self.initializeParameterNode()
        self.updateGuiFromParameterNode()

    def exit(self) -> None:
        """Called each time the user opens a different module (a running enhance goes on)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiFromParameterNode)

    def selectModel(self, value: str) -> None:
        """Select a model by shipped or trained name, ``"default"``, or file path.

        A file that is already listed (a shipped model, a model in a registered model folder) selects that entry;
        another valid model file is remembered like a file picked with Browse... and selected.

        Raises:
            ValueError: unknown name, or a file that is not a MRISuperRes model (the message says why).
        """
        self._parameterNode.model = self.choices.modelValue(value)
        self.updateGuiFromParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        """Called just before the scene is closed: a run for a closing scene is cancelled."""
        if self.runControl.process is not None:
            self.runControl.cancel()
        self.views.forget()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        """Called just after the scene is closed."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Forget the imported library too, so that "Reload" picks up edits to ``MRISuperResLib``; refused while the
        Training module trains (its run would mix old and new library code)."""
        training = getattr(slicer.modules, "MRISuperResTrainingWidget", None)
        if training is not None and getattr(training, "logic", None) is not None and training.logic.isTraining():
            slicer.util.errorDisplay(_("Stop training in MRI Super-Resolution Training before reloading."))
            return
        for name in [name for name in sys.modules if name == LIBRARY_PACKAGE or name.startswith(LIBRARY_PACKAGE + ".")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    # ------------------------------------------------------------------------------------- parameter node
    @property
    def parameterNode(self):
        """The observed ``MRISuperResParameterNode`` (None while a scene closes)."""
        return self._parameterNode

    def initializeParameterNode(self) -> None:
        """Ensure the parameter node exists and is observed; preselect the first volume as input."""
        self.setParameterNode(self.logic.getParameterNode())

        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode and not firstVolumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        """Set and observe the parameter node, and bind it to the widgets named by their SlicerParameterName."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._acceptStoredPrecision()
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiFromParameterNode)
            self.updateGuiFromParameterNode()

    def _acceptStoredPrecision(self) -> None:
        """A precision this version does not offer (a scene saved by another version) becomes "auto"."""
        if self._parameterNode.precision not in PRECISION_CHOICES:
            self._parameterNode.precision = "auto"

    def updateGuiFromParameterNode(self, caller=None, event=None) -> None:
        """Show the model / scale / device choices of the parameter node and what Enhance can do now."""
        if self._parameterNode is None or self.updatingGui:
            return
        self._acceptStoredPrecision()
        self.updatingGui = True
        try:
            self.choices.showParameterNode(self._parameterNode)
        finally:
            self.updatingGui = False
        self.runControl.checkCanApply()

    # ------------------------------------------------------------------------------------ the panel's actions
    def onBrowseModel(self) -> None:
        """Pick a model file with a file dialog and select it (``EnhanceChoices.browseModel``)."""
        self.choices.browseModel()

    def requestedScale(self):
        """The per-axis scale (i, j, k) the GUI asks for, or ``(None, reason)`` when it cannot be determined."""
        return self.runControl.requestedScale()

    def onApplyButton(self) -> None:
        """Enhance, or Cancel while a run is going on."""
        self.runControl.apply()

    def onShowComparison(self) -> None:
        """Input | SR | difference over SR, linked, in the chosen orientation."""
        self.views.show()

    # The state scripts and the harness of the module read (the run's process and timer, the views' state).
    _process = property(lambda self: self.runControl.process)
    _pollTimer = property(lambda self: self.runControl.pollTimer)
    _comparisonShown = property(lambda self: self.views.shown)

    _onPoll = property(lambda self: self.runControl.poll)
    _whyNotApply = property(lambda self: self.runControl.whyNotApply)
    _populateModels = property(lambda self: self.choices.populateModels)


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

        Example (Python console or ``Slicer --no-main-window --python-script``; ``slicer.modules.mrisuperres.logic()``
        is the C++ logic of a scripted module, without this method)::

            result = slicer.util.getModuleLogic("MRISuperRes").enhance(getNode("T1"), model="default", scale=2)
            result.srVolumeNode, result.baselineVolumeNode, result.differenceVolumeNode, result.consistencyVolumeNode

        ``scale`` is one factor or three in IJK order (``(1, 1, 4)`` restores 4x thicker slices along K);
        ``options`` go to ``MRISuperResLib.engine.enhance.enhance_volume`` (tile, overlap, uncertainty, mask_background).
        """
        from MRISuperResLib.slicer.panel import EnhanceLogic

        return EnhanceLogic(slicer.mrmlScene).enhance(volumeNode, model=model, scale=scale, device=device, **options)

    # ------------------------------------------------------------------------------------ background runs
    def startEnhance(self, parameterNode, scale):
        """Start enhancing the parameter node's input in a background process and return the running process
        (``MRISuperResLib.slicer.panel.start_enhance_process``): the caller polls it; its ``finish()`` adds the
        outputs to the scene, ``cancel()`` kills the process tree and adds nothing."""
        from MRISuperResLib.slicer.panel import start_enhance_process

        return start_enhance_process(slicer.mrmlScene, parameterNode, scale, python=self.pythonExecutable(),
                                     temp_root=slicer.app.temporaryPath)

    @staticmethod
    def pythonExecutable() -> str:
        """Slicer's Python launcher (``PythonSlicer``): it sets up the same environment as the application
        (``MRISuperResLib.slicer.runner.default_python``, as the Training module's runs use)."""
        from MRISuperResLib.slicer.runner import default_python

        return default_python()

    @staticmethod
    def rememberOutputs(parameterNode, nodes, inputNode=None) -> None:
        """Keep a run's output nodes (and its input: "update the previous outputs" applies to that input only)."""
        from MRISuperResLib.engine.outputs import OUTPUT_MAPS

        with slicer.util.NodeModify(parameterNode):
            parameterNode.outputsInput = inputNode or parameterNode.inputVolume
            for output in OUTPUT_MAPS:
                setattr(parameterNode, output.parameter, getattr(nodes, output.key))

    @staticmethod
    def statusText(nodes, seconds) -> str:
        """One line: run time, device, the network's data-consistency score and whether it is suspicious, and the
        score after the data-consistency projection when it ran."""
        summary = nodes.summary
        text = _("Done in {seconds:.1f} s on {device}.").format(seconds=seconds, device=summary.get("device", "?"))
        score = summary.get("consistency_nrmse")
        if score is not None:
            text += " " + _("Consistency NRMSE {score:.4f} (B-spline {baseline:.4f}).").format(
                score=score, baseline=summary.get("baseline_consistency_nrmse", float("nan")))
        if summary.get("consistency_suspicious"):
            text += " " + _("Above the model's calibrated threshold: check the consistency map.")
        projection = summary.get("projection")
        if projection:
            text += " " + _("Corrected towards the measured data: NRMSE {after:.4f}.").format(
                after=float(projection.get("nrmse_after", float("nan"))))
        adaptation = summary.get("adaptation")
        if adaptation:
            text += " " + _(
                "Adapted to this scan: {steps} steps ({arithmetic}) in {seconds:.0f} s, held-back loss {change:+.1%}."
            ).format(
                steps=adaptation.get("steps", 0), arithmetic=adaptation.get("arithmetic", "float32"),
                seconds=adaptation.get("seconds", 0.0),
                change=-float(adaptation.get("improvement", 0.0)))
        return text

    # ------------------------------------------------------------------------------------------ dependencies
    def ensureDependencies(self, askConfirmation=True) -> bool:
        """Install what is missing: PyTorch through the PyTorch extension, then the packages of
        ``Resources/requirements.txt`` (version specifiers honoured), asking the user once.

        The installed torch, numpy and SimpleITK are pinned while pip runs, so the PyTorch extension's build is
        never replaced (see ``MRISuperResLib.slicer.dependencies.ensure_dependencies``, which both modules use).
        When a package that was already imported changed, offers to restart Slicer. Never runs at import time.
        Returns False when the user declines or installing fails (with a message saying what to do).
        """
        from MRISuperResLib.slicer import dependencies as dependencies

        return dependencies.ensure_dependencies(installDialogs(), self.resourcePath("requirements.txt"),
                                                ask=askConfirmation, title=_("MRI Super-Resolution"))

    @staticmethod
    def resourcePath(filename: str) -> str:
        return os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", filename)

    @staticmethod
    def requirementsSatisfied(requirementsFile: str) -> bool:
        """Every requirement of the file is installed at a version its specifier accepts."""
        from MRISuperResLib.slicer import dependencies as dependencies

        return not dependencies.unmet_requirements(dependencies.read_requirements(requirementsFile))

    @staticmethod
    def installRequirements(requirementsFile: str) -> None:
        """Install the unmet requirements of the file, with the installed torch, numpy and SimpleITK pinned
        (``MRISuperResLib.slicer.dependencies.install_requirements``). Asks nothing: the caller asked. Raises what
        pip raises (``subprocess.CalledProcessError``).
        """
        from MRISuperResLib.slicer import dependencies as dependencies

        dependencies.install_requirements(requirementsFile)


def installDialogs():
    """The dialogs of a dependency installation (``MRISuperResLib.slicer.dependencies.InstallDialogs``)."""
    from MRISuperResLib.slicer.dependencies import slicer_install_dialogs

    return slicer_install_dialogs(tr=_)


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
        self.setUp()
        self.test_BackgroundEnhanceAndLinkedViews()

    def _requireEngine(self):
        """Skip where PyTorch and MONAI are not installed (extension build machines): nothing to enhance with."""
        from MRISuperResLib.slicer.self_test import missing_engine_packages

        missing = missing_engine_packages()
        if missing:
            self.skipTest(f"needs {', '.join(missing)} (installed on the first Enhance)")

    def test_EnhanceAddsOutputNodes(self):
        """Enhance a small synthetic volume with the shipped default model and check the output nodes."""
        self._requireEngine()
        from MRISuperResLib.slicer.self_test import check_enhance_adds_output_nodes

        check_enhance_adds_output_nodes(self, MRISuperResLogic(), slicer.mrmlScene)
        self.delayDisplay("Enhance test passed")

    def test_BackgroundEnhanceAndLinkedViews(self):
        """The widget's path: a background process (blocking here), then the three linked views."""
        self._requireEngine()
        from MRISuperResLib.slicer.self_test import check_background_enhance_and_linked_views

        check_background_enhance_and_linked_views(self, MRISuperResLogic(), slicer.mrmlScene, slicer.app)
        self.delayDisplay("Background enhance and linked views passed")

    def test_LogicInstantiates(self):
        """The logic builds without a GUI and gives an empty parameter node in a fresh scene."""
        self.delayDisplay("Starting the test")

        logic = MRISuperResLogic()
        parameterNode = logic.getParameterNode()
        self.assertIsNone(parameterNode.inputVolume)
        self.assertEqual(parameterNode.model, "default")

        self.delayDisplay("Test passed")
