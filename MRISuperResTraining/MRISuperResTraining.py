"""MRI Super-Resolution Training: the Slicer module that trains a super-resolution model on the user's scans.

This file stays thin: the panel's Qt parts live in ``MRISuperResLib.gui`` (``training_*``), the work in
``MRISuperResLib.slicer.training`` (``TrainingLogic``: pairs to files, registration, the background training
process, log tables and plots, publishing the model); both ship with the MRISuperRes module in the same
scripted-modules folder. They are imported inside functions, never at module level, so that Slicer can load this
module before PyTorch and the other dependencies are installed."""

import pathlib
import sys
from typing import Annotated

import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper, parameterPack
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

LIBRARY_PACKAGE = "MRISuperResLib"
DOCUMENTATION_URL = "https://github.com/mrisuperres/SlicerMRISuperRes#readme"


def _engineChoices():
    """The preset names (``MRISuperResLib.slicer.training.presets.PRESET_NAMES``) and the forward models of simulated
    low-resolution inputs (``MRISuperResLib.processing.degradation.KINDS``) that the parameter node offers.

    Read while Slicer loads this module: both modules import neither PyTorch nor any package that this module
    installs (only numpy, which Slicer ships). Every other engine import stays inside the function that needs it.
    """
    from MRISuperResLib.processing.degradation import KINDS
    from MRISuperResLib.slicer.training.presets import PRESET_NAMES

    return list(PRESET_NAMES), list(KINDS)


PRESET_NAMES, DEGRADATIONS = _engineChoices()

DEVICES = ["auto", "cpu", "cuda", "mps"]
REGISTRATION_METHODS = ["SimpleITK", "BRAINSFit"]


def _tableColumns():
    """The pairs table's columns (``MRISuperResLib.gui.training_pairs``: Qt only, no engine), named here for
    scripts and the self-test."""
    from MRISuperResLib.gui import training_pairs

    return (training_pairs.HIGH_COLUMN, training_pairs.LOW_COLUMN, training_pairs.VALIDATION_COLUMN,
            training_pairs.REGISTRATION_COLUMN)


HIGH_COLUMN, LOW_COLUMN, VALIDATION_COLUMN, REGISTRATION_COLUMN = _tableColumns()


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
Train a super-resolution model on your own scans: pairs of high- and low-resolution volumes of the same subject
(registered here), or high-resolution volumes from which low-resolution inputs are simulated. Training runs in
the background; the trained model then appears in the MRI Super-Resolution module.
See the <a href="{url}">documentation</a>.
""").format(url=DOCUMENTATION_URL)
        self.parent.acknowledgementText = _("""
Built on 3D Slicer's scripted module template, with PyTorch, MONAI and SimpleITK.
""")


#
# MRISuperResTrainingParameterNode
#


@parameterPack
class MRISuperResTrainingPair:
    """
    One row of the pairs table.

    highResVolume - The high-resolution scan: what the model learns to produce.
    lowResVolume - The low-resolution scan of the same subject; None to simulate it from highResVolume.
    validation - Hold this subject out for validation.
    """

    highResVolume: vtkMRMLScalarVolumeNode
    lowResVolume: vtkMRMLScalarVolumeNode
    validation: bool = False


@parameterNodeWrapper
class MRISuperResTrainingParameterNode:
    """
    The parameters of a training run, saved with the scene.

    pairs - The training pairs (table rows).
    useDataFolder, dataFolder - Also train on the volume files of a folder (a "low" subfolder holds partners).
    registrationMethod - How real pairs are aligned.
    preset - Model family and size (see MRISuperResLib.slicer.training.PRESETS).
    scale - Whole per-axis factors in i, j, k order: "2" or "1,1,4".
    degradation, noise - Forward model and largest k-space noise of simulated inputs.
    patchSize - Low-resolution patch size in voxels: "24" or "24,24,12".
    batchSize, steps, validateEvery, learningRate - Optimisation.
    l1Weight, perceptualWeight, perceptualWeightsFile, adversarialWeight - Loss terms (0 disables one).
    validationFraction - Share of subjects held out when no row is marked for validation.
    device - auto, cpu, cuda or mps.
    modelName, outputFolder - The trained model's name and where it is published.
    """

    pairs: list[MRISuperResTrainingPair]
    useDataFolder: bool = False
    dataFolder: pathlib.Path
    registrationMethod: Annotated[str, Choice(REGISTRATION_METHODS)] = "SimpleITK"
    preset: Annotated[str, Choice(PRESET_NAMES)] = "edsr3d-small"
    scale: str = "2"
    degradation: Annotated[str, Choice(DEGRADATIONS)] = "kspace"
    noise: Annotated[float, WithinRange(0.0, 0.5)] = 0.02
    patchSize: str = "24"
    batchSize: Annotated[int, WithinRange(1, 1024)] = 4
    steps: Annotated[int, WithinRange(1, 10_000_000)] = 2000
    validateEvery: Annotated[int, WithinRange(1, 1_000_000)] = 200
    # The minimum must be representable with the spin box's 6 decimals (Qt rounds it), or the GUI and the
    # parameter node disagree at the bottom of the range.
    learningRate: Annotated[float, WithinRange(1e-6, 1.0)] = 3e-4
    l1Weight: Annotated[float, WithinRange(0.0, 100.0)] = 1.0
    perceptualWeight: Annotated[float, WithinRange(0.0, 100.0)] = 0.0
    perceptualWeightsFile: pathlib.Path
    adversarialWeight: Annotated[float, WithinRange(0.0, 100.0)] = 0.0
    validationFraction: Annotated[float, WithinRange(0.01, 0.99)] = 0.2
    device: Annotated[str, Choice(DEVICES)] = "auto"
    modelName: str = "my-model"
    outputFolder: pathlib.Path


#
# MRISuperResTrainingWidget
#


class MRISuperResTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Reads the GUI into the parameter node and hands the work to the logic, through the panel's parts in
    ``MRISuperResLib.gui`` (imported in ``setup``): ``training_settings.SettingsFields``, ``training_pairs.PairsTable``,
    ``training_registration.RegistrationStep`` and ``training_run.RunController`` (start, stop, resume, progress)."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._settingsFields = None
        self._pairsTable = None
        self._registrationStep = None
        self._run = None
        self._pollTimer = None

    def setup(self) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        from MRISuperResLib.gui.training_pairs import PairsTable
        from MRISuperResLib.gui.training_registration import RegistrationStep
        from MRISuperResLib.gui.training_run import RunController
        from MRISuperResLib.gui.training_settings import SettingsFields

        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MRISuperResTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = MRISuperResTrainingLogic()
        self._settingsFields = SettingsFields(self.ui, self.logic)
        parameterNode = lambda: self._parameterNode  # the node changes with the scene
        self._pairsTable = PairsTable(self.ui, self.logic, parameterNode, MRISuperResTrainingPair,
                                      edited=self._updateButtons)
        self._registrationStep = RegistrationStep(
            self.ui, self.logic, parameterNode, self._pairsTable.selectedRealPair, changed=self._updateButtons,
            registered=self._pairsTable.updateRegistrationColumn)
        self._run = RunController(self.ui, self.logic, parameterNode, changed=self._updateButtons)
        self._pollTimer = self._run.timer

        # Keep the parameter node valid across scene close.
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.addPairButton.connect("clicked(bool)", self.onAddPair)
        self.ui.removePairButton.connect("clicked(bool)", self.onRemovePair)
        self.ui.registerButton.connect("clicked(bool)", self.onRegister)
        self.ui.startButton.connect("clicked(bool)", self.onStart)
        self.ui.stopButton.connect("clicked(bool)", self.onStop)
        self.ui.resumeButton.connect("clicked(bool)", self.onResume)
        self.ui.openInEnhanceButton.connect("clicked(bool)", self.onOpenInEnhance)

        self.initializeParameterNode()
        self._updateButtons()

    def cleanup(self) -> None:
        """Called when the application closes: stop training (its state is saved; resume it next time)."""
        if self._pollTimer is not None:
            self._pollTimer.stop()
        if self._registrationStep is not None:
            self._registrationStep.cancel()
        if self.logic is not None:
            self.logic.cleanup()
        self.removeObservers()

    def enter(self) -> None:
        """Called each time the user opens this module."""
        self.initializeParameterNode()

    def exit(self) -> None:
        """Called each time the user opens a different module; training and its polling go on."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        """Called just before the scene is closed: a registration for the closing scene is cancelled."""
        if self._registrationStep is not None and self._registrationStep.running:
            self._registrationStep.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        """Called just after the scene is closed."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Forget the imported library too, so that "Reload" picks up edits to ``MRISuperResLib``."""
        if self.logic is not None and self.logic.isTraining():
            slicer.util.errorDisplay(_("Stop training before reloading the module."))
            return
        for name in [name for name in sys.modules if name == LIBRARY_PACKAGE or name.startswith(LIBRARY_PACKAGE + ".")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def initializeParameterNode(self) -> None:
        """Ensure the parameter node exists and is observed; give the output folder a default."""
        from MRISuperResLib.gui.training_settings import isSet

        self.setParameterNode(self.logic.getParameterNode())
        if not isSet(self._parameterNode.outputFolder):
            self._parameterNode.outputFolder = pathlib.Path.home() / "MRISuperRes" / "models"

    def setParameterNode(self, inputParameterNode) -> None:
        """Set and observe the parameter node, and bind it to the widgets named by their SlicerParameterName."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        self._settingsFields.bind(inputParameterNode)
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        self._settingsFields.refresh(self._parameterNode)
        self._pairsTable.update()
        self._updateButtons()

    # ------------------------------------------------------------- buttons: the parts in MRISuperResLib.gui work
    def onAddPair(self) -> None:
        """Add a row, preselecting a volume not used yet as high-resolution."""
        self._pairsTable.addPair()

    def onRemovePair(self) -> None:
        """Remove the selected row (the last one when none is selected); the volumes stay in the scene."""
        self._pairsTable.removePair()

    def onRegister(self) -> None:
        """Register the selected real pair and show the aligned low-res over the high-res."""
        self._registrationStep.register()

    def onStart(self) -> None:
        """Write the pairs and the config, start training in the background, show the curves."""
        self._run.start()

    def onStop(self) -> None:
        """Ask the trainer to stop after the current step; it saves its state and keeps the best checkpoint."""
        self._run.stop()

    def onResume(self) -> None:
        """Continue the run of this model name from its saved state."""
        self._run.resume()

    def onPoll(self) -> None:
        """Read the run's progress and show it."""
        self._run.poll()

    def onOpenInEnhance(self) -> None:
        """Open MRI Super-Resolution with the trained model selected."""
        self._run.openInEnhance()

    def _updateButtons(self) -> None:
        training = self.logic.isTraining() if self.logic else False
        status = self.logic.lastStatus() if self.logic else None
        hasPairs = bool(self._parameterNode and (len(self._parameterNode.pairs) or self._parameterNode.useDataFolder))
        self.ui.startButton.enabled = hasPairs and not training
        self.ui.startButton.toolTip = _("Train a model on the pairs") if hasPairs else _("Add pairs first")
        self.ui.stopButton.enabled = training
        self.ui.resumeButton.enabled = not training and bool(self._parameterNode)
        registering = self._registrationStep is not None and self._registrationStep.running
        self.ui.registerButton.enabled = not training and not registering and any(
            low for _h, low, _v in self._pairsTable.rows())
        self.ui.openInEnhanceButton.enabled = bool(status and status.model_path)


#
# MRISuperResTrainingLogic
#


class MRISuperResTrainingLogic(ScriptedLoadableModuleLogic):
    """Entry point for scripts and the widget: works without a GUI.

    The work is done by ``MRISuperResLib.slicer.training.TrainingLogic`` on ``slicer.mrmlScene``; this class turns
    the parameter node into its pairs and settings. From the Python console::

        logic = slicer.util.getModuleLogic("MRISuperResTraining")
        job = logic.training().prepare(pairs, settings)   # see MRISuperResLib.slicer.training
        logic.training().start(job); logic.training().wait()
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._training = None

    def getParameterNode(self) -> MRISuperResTrainingParameterNode:
        return MRISuperResTrainingParameterNode(super().getParameterNode())

    def training(self):
        """The ``TrainingLogic`` of the current scene (created on first use; imports the engine)."""
        from MRISuperResLib.gui.training_registration import runBrainsFit
        from MRISuperResLib.slicer.training import TrainingLogic

        if self._training is None or self._training.scene is not slicer.mrmlScene:
            brainsfit = runBrainsFit if hasattr(slicer.modules, "brainsfit") else None
            self._training = TrainingLogic(slicer.mrmlScene, brainsfit=brainsfit)
        return self._training

    def isTraining(self) -> bool:
        return self._training is not None and self._training.running

    def lastStatus(self):
        """What the last poll of the training run found (``None`` before any run)."""
        return self._training.status if self._training is not None else None

    @staticmethod
    def preset(name):
        """The engine's preset of that name; ``None`` for an unknown name or before the dependencies are installed."""
        try:
            from MRISuperResLib.slicer.training import PRESETS
        except ImportError:
            return None
        return PRESETS.get(name)

    def cleanup(self) -> None:
        if self._training is not None:
            self._training.cleanup()

    @staticmethod
    def ensureDependencies() -> bool:
        """Install PyTorch and the engine's packages as the MRI Super-Resolution module does (asks first; see
        ``MRISuperResLib.slicer.dependencies.ensure_dependencies``)."""
        from MRISuperResLib.slicer import dependencies as dependencies

        dialogs = dependencies.InstallDialogs(
            error=lambda text: slicer.util.errorDisplay(text),
            confirm=lambda text, title: slicer.util.confirmOkCancelDisplay(text, windowTitle=title),
            confirm_restart=lambda text, title: slicer.util.confirmYesNoDisplay(text, windowTitle=title),
            restart=lambda: slicer.util.restart(), tr=_)
        return dependencies.ensure_dependencies(dialogs, title=_("MRI Super-Resolution"))

    def registrationText(self, highNode, lowNode) -> str:
        """The registration column of a row: simulated, not registered yet, or the metric."""
        if lowNode is None:
            return _("simulated")
        if self._training is None or highNode is None:
            return _("not registered")
        outcome = self._training.registrations.get((highNode.GetID(), lowNode.GetID()))
        return _("MI {metric:.3f}").format(metric=outcome.metric) if outcome else _("not registered")

    def registerPair(self, highNode, lowNode, scale, method="simpleitk"):
        """Register a real pair now (blocking; BRAINSFit, or scripts)."""
        from MRISuperResLib.slicer.training import TrainingPair

        return self.training().register_pair(TrainingPair(highNode, lowNode), scale=scale, method=method)

    def startRegistration(self, highNode, lowNode, scale):
        """Register a real pair with SimpleITK in a background process; poll the returned run."""
        from MRISuperResLib.slicer.training import RegistrationRun, TrainingPair

        return RegistrationRun(self.training(), TrainingPair(highNode, lowNode), scale,
                               temp_root=slicer.app.temporaryPath).start()

    def pairs(self, parameterNode) -> list:
        """The table's pairs, then the data folder's volumes when used."""
        from MRISuperResLib.slicer.training.parameters import pairs_from_parameters

        return pairs_from_parameters(parameterNode)

    def settings(self, parameterNode):
        """The run's ``TrainingSettings`` from the parameter node."""
        from MRISuperResLib.slicer.training.parameters import settings_from_parameters

        return settings_from_parameters(parameterNode)

    def startTraining(self, parameterNode):
        """Prepare the run (files, config) and start it in the background; returns the job."""
        training = self.training()
        job = training.prepare(self.pairs(parameterNode), self.settings(parameterNode))
        training.start(job)
        return job

    def resumeTraining(self, parameterNode):
        """Resume the current run, or the run of the parameter node's model name from an earlier session."""
        from MRISuperResLib.slicer.training import RUNS_FOLDER

        training = self.training()
        name = parameterNode.modelName.strip()
        if training.job is None or training.job.name != name:
            training.open_run(pathlib.Path(parameterNode.outputFolder) / RUNS_FOLDER / name)
        return training.resume()


#
# MRISuperResTrainingTest
#


class MRISuperResTrainingTest(ScriptedLoadableModuleTest):
    """Self-test, run from the module's "Reload and Test" button and by ctest: the whole flow in real Slicer.

    Its steps are in ``MRISuperResLib.gui.training_selftest``.
    """

    def setUp(self):
        """Start every test from an empty scene, with model folders registered in a temporary settings folder."""
        from MRISuperResLib.gui.training_selftest import SelfTestEnvironment

        self.environment = SelfTestEnvironment()
        self.tempFolder = self.environment.folder

    def tearDown(self):
        self.environment.restore()

    def runTest(self):
        """Run all tests of this module."""
        for test in (self.test_LogicInstantiates, self.test_WidgetEditsPairs, self.test_RegisterAndTrain):
            self.setUp()
            try:
                test()
            finally:
                self.tearDown()

    def test_LogicInstantiates(self):
        """The logic builds without a GUI and gives default parameters in a fresh scene."""
        parameterNode = MRISuperResTrainingLogic().getParameterNode()
        self.assertEqual(len(parameterNode.pairs), 0)
        self.assertEqual(parameterNode.preset, "edsr3d-small")
        self.assertEqual(parameterNode.scale, "2")
        from MRISuperResLib.slicer.training import PRESETS

        self.assertEqual(list(PRESETS), PRESET_NAMES)

    def test_WidgetEditsPairs(self):
        """Add pair / remove pair edit the parameter node's pairs through the table."""
        from MRISuperResLib.gui.training_selftest import checkWidgetEditsPairs

        checkWidgetEditsPairs(self, slicer.modules.mrisuperrestraining.widgetRepresentation().self())

    def test_RegisterAndTrain(self):
        """Register a real pair, train a tiny model in the background, enhance with it by name."""
        from MRISuperResLib.gui.training_selftest import checkRegisterAndTrain

        checkRegisterAndTrain(self, self.tempFolder)
