"""MRI Super-Resolution Training: the Slicer module that trains a super-resolution model on the user's scans.

This file stays thin: Qt lives here, the work lives in ``MRISuperResLib.slicer.training`` (``TrainingLogic``:
pairs to files, registration, the background training process, log tables and plots, publishing the model),
which ships with the MRISuperRes module in the same scripted-modules folder. It is imported inside functions,
never at module level, so that Slicer can load this module before PyTorch and the other dependencies are installed.
"""

import importlib.util
import os
import pathlib
import sys
from typing import Annotated

import qt
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

#: How often the widget polls the training process (milliseconds), as MONAI Label's plugin polls its training.
POLL_INTERVAL_MS = 1000

#: How often the widget polls a background registration (milliseconds).
REGISTRATION_POLL_INTERVAL_MS = 300

#: Columns of the pairs table.
HIGH_COLUMN, LOW_COLUMN, VALIDATION_COLUMN, REGISTRATION_COLUMN = range(4)


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


def _isSet(path) -> bool:
    """An unset path parameter reads back as Path("") == Path(".")."""
    return str(path) not in ("", ".")


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
        self._updatingPairs = False
        self._appliedPreset = None
        self._pollTimer = None
        self._registrationTimer = None
        self._registration = None

    def setup(self) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MRISuperResTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = MRISuperResTrainingLogic()

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

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self.onPoll)
        self._registrationTimer = qt.QTimer()
        self._registrationTimer.setInterval(REGISTRATION_POLL_INTERVAL_MS)
        self._registrationTimer.connect("timeout()", self._onRegistrationPoll)

        self.initializeParameterNode()
        self._updateButtons()

    def cleanup(self) -> None:
        """Called when the application closes: stop training (its state is saved; resume it next time)."""
        if self._pollTimer is not None:
            self._pollTimer.stop()
        if self._registrationTimer is not None:
            self._registrationTimer.stop()
        if self._registration is not None:
            self._registration.cancel()
            self._registration = None
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
        if self._registration is not None:
            self._registrationTimer.stop()
            self._registration.cancel()
            self._registration = None
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
        self.setParameterNode(self.logic.getParameterNode())
        if not _isSet(self._parameterNode.outputFolder):
            self._parameterNode.outputFolder = pathlib.Path.home() / "MRISuperRes" / "models"

    def setParameterNode(self, inputParameterNode) -> None:
        """Set and observe the parameter node, and bind it to the widgets named by their SlicerParameterName."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        self._appliedPreset = inputParameterNode.preset if inputParameterNode else None
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        if self._parameterNode and self._parameterNode.preset != self._appliedPreset:
            self._appliedPreset = self._parameterNode.preset
            self._applyPreset(self._appliedPreset)
        if self._parameterNode:
            # An unset path parameter reads back as Path("") == Path("."): show an empty field, not ".".
            for widget, value in ((self.ui.dataFolderPathLineEdit, self._parameterNode.dataFolder),
                                  (self.ui.perceptualWeightsPathLineEdit, self._parameterNode.perceptualWeightsFile)):
                if not _isSet(value) and widget.currentPath:
                    widget.currentPath = ""
        self._updatePresetDescription()
        self._updatePairsTable()
        self._updateButtons()

    # ------------------------------------------------------------------------------------------ pairs table
    def _pairRows(self) -> list:
        """(high node, low node, validation) of each table row."""
        table = self.ui.pairsTableWidget
        return [(table.cellWidget(row, HIGH_COLUMN).currentNode(), table.cellWidget(row, LOW_COLUMN).currentNode(),
                 table.cellWidget(row, VALIDATION_COLUMN).checked) for row in range(table.rowCount)]

    def _updatePairsTable(self) -> None:
        """Rebuild the table when the parameter node's pairs differ from it."""
        if self._updatingPairs:
            return
        pairs = list(self._parameterNode.pairs) if self._parameterNode else []
        wanted = [(p.highResVolume, p.lowResVolume, p.validation) for p in pairs]
        if wanted == self._pairRows():
            self._updateRegistrationColumn()
            return
        self._updatingPairs = True
        try:
            table = self.ui.pairsTableWidget
            table.setRowCount(len(wanted))
            for row, (high, low, validation) in enumerate(wanted):
                table.setCellWidget(row, HIGH_COLUMN, self._volumeSelector(high, noneText=_("Select a volume")))
                table.setCellWidget(row, LOW_COLUMN, self._volumeSelector(low, noneText=_("Simulate from high-res")))
                checkBox = qt.QCheckBox()
                checkBox.checked = validation
                checkBox.toolTip = _("Hold this subject out for validation")
                checkBox.connect("toggled(bool)", self._onPairsTableEdited)
                table.setCellWidget(row, VALIDATION_COLUMN, checkBox)
                item = qt.QTableWidgetItem()
                item.setFlags(qt.Qt.ItemIsSelectable | qt.Qt.ItemIsEnabled)
                table.setItem(row, REGISTRATION_COLUMN, item)
        finally:
            self._updatingPairs = False
        self._updateRegistrationColumn()

    def _volumeSelector(self, node, noneText):
        selector = slicer.qMRMLNodeComboBox()
        selector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        selector.showChildNodeTypes = False  # no label maps
        selector.addEnabled = False
        selector.removeEnabled = False
        selector.renameEnabled = False
        selector.noneEnabled = True
        selector.noneDisplay = noneText
        selector.setMRMLScene(slicer.mrmlScene)
        selector.setCurrentNode(node)
        selector.connect("currentNodeChanged(vtkMRMLNode*)", self._onPairsTableEdited)
        return selector

    def _onPairsTableEdited(self, *args) -> None:
        if self._updatingPairs or not self._parameterNode:
            return
        self._updatingPairs = True
        try:
            self._parameterNode.pairs = [
                MRISuperResTrainingPair(highResVolume=high, lowResVolume=low, validation=validation)
                for high, low, validation in self._pairRows()]
        finally:
            self._updatingPairs = False
        self._updateRegistrationColumn()
        self._updateButtons()

    def _updateRegistrationColumn(self) -> None:
        table = self.ui.pairsTableWidget
        for row, (high, low, _validation) in enumerate(self._pairRows()):
            item = table.item(row, REGISTRATION_COLUMN)
            if item is not None:
                item.setText(self.logic.registrationText(high, low))

    def onAddPair(self) -> None:
        """Add a row, preselecting a volume not used yet as high-resolution."""
        used = {p.highResVolume.GetID() for p in self._parameterNode.pairs if p.highResVolume}
        volumes = [node for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                   if not node.IsA("vtkMRMLLabelMapVolumeNode") and node.GetID() not in used]
        self._parameterNode.pairs.append(
            MRISuperResTrainingPair(highResVolume=volumes[0] if volumes else None, lowResVolume=None))

    def onRemovePair(self) -> None:
        """Remove the selected row (the last one when none is selected); the volumes stay in the scene."""
        pairs = list(self._parameterNode.pairs)
        if not pairs:
            return
        row = self.ui.pairsTableWidget.currentRow()
        del pairs[row if 0 <= row < len(pairs) else -1]
        self._parameterNode.pairs = pairs

    def onRegister(self) -> None:
        """Register the selected real pair and show the aligned low-res over the high-res."""
        rows = self._pairRows()
        row = self.ui.pairsTableWidget.currentRow()
        candidates = [r for r in range(len(rows)) if rows[r][1] is not None]
        if row not in candidates:
            if len(candidates) != 1:
                slicer.util.errorDisplay(_("Select a row with a low-resolution volume to register."))
                return
            row = candidates[0]
        if not self.logic.ensureDependencies():
            return
        high, low, _validation = rows[row]
        if self._parameterNode.registrationMethod == "BRAINSFit":
            # BRAINSFit is Slicer's own CLI module (it shows its progress); it runs as Slicer runs it.
            with slicer.util.tryWithErrorDisplay(_("Registration refused."), waitCursor=True):
                self._showRegistration(self.logic.registerPair(high, low, self._parameterNode.scale, "brainsfit"))
            return
        # SimpleITK: in a background process, so that Slicer stays responsive (seconds to a minute).
        with slicer.util.tryWithErrorDisplay(_("Registration could not start.")):
            self._registration = self.logic.startRegistration(high, low, self._parameterNode.scale)
            self.ui.registrationResultLabel.text = _("Registering {low} onto {high}...").format(
                low=low.GetName(), high=high.GetName())
            self._registrationTimer.start()
        self._updateButtons()

    def _onRegistrationPoll(self) -> None:
        run = self._registration
        if run is None:
            self._registrationTimer.stop()
            return
        try:
            outcome = run.poll()
        except Exception as error:
            self._registrationTimer.stop()
            self._registration = None
            self.ui.registrationResultLabel.text = str(error)
            slicer.util.errorDisplay(_("Registration refused: {error}").format(error=error))
            self._updateButtons()
            return
        if outcome is None:
            return
        self._registrationTimer.stop()
        self._registration = None
        self._showRegistration(outcome)
        self._updateButtons()

    def _showRegistration(self, outcome) -> None:
        slicer.util.resetSliceViews()
        text = _("{low} on {high}: Mattes mutual information {metric:.3f} (same anatomy below -0.1).").format(
            low=outcome.node.GetAttribute("MRISuperRes.moving"), high=outcome.node.GetAttribute("MRISuperRes.fixed"),
            metric=outcome.metric)
        self.ui.registrationResultLabel.text = " ".join([text, *outcome.warnings])
        self._updateRegistrationColumn()

    def _applyPreset(self, name) -> None:
        """The user picked another preset: take its patch size, batch size and learning rate (editable after)."""
        preset = self.logic.preset(name)
        if preset is None:
            return
        with slicer.util.NodeModify(self._parameterNode):
            self._parameterNode.patchSize = ",".join(str(p) for p in preset.patch_size)
            self._parameterNode.batchSize = preset.batch_size
            self._parameterNode.learningRate = preset.learning_rate

    def _updatePresetDescription(self) -> None:
        preset = self.logic.preset(self._parameterNode.preset) if self._parameterNode else None
        self.ui.presetDescriptionLabel.text = preset.description() if preset else ""

    # ----------------------------------------------------------------------------------------------- training
    def onStart(self) -> None:
        """Write the pairs and the config, start training in the background, show the curves."""
        if not self.logic.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Training could not start."), waitCursor=True):
            job = self.logic.startTraining(self._parameterNode)
            self._showCurves()
            self.ui.statusLabel.text = _("Starting: {train} training, {validation} validation subjects.").format(
                train=len(job.train_subjects), validation=len(job.validation_subjects))
            for warning in job.warnings:
                slicer.util.warningDisplay(warning, windowTitle=_("MRI Super-Resolution Training"))
            self._pollTimer.start()
        self._updateButtons()

    def onStop(self) -> None:
        """Ask the trainer to stop after the current step; it saves its state and keeps the best checkpoint."""
        self.logic.training().stop()
        self.ui.statusLabel.text = _("Stopping after the current step...")
        self._updateButtons()

    def onResume(self) -> None:
        """Continue the run of this model name from its saved state."""
        if not self.logic.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Training could not resume."), waitCursor=True):
            self.logic.resumeTraining(self._parameterNode)
            self._showCurves()
            self._pollTimer.start()
        self._updateButtons()

    def _showCurves(self) -> None:
        from MRISuperResLib.slicer.training import show_training_layout

        nodes = self.logic.training().ensure_nodes()
        show_training_layout(slicer.mrmlScene, nodes)
        # The layout manager creates the plot views as it switches layout; give them the charts once they exist.
        qt.QTimer.singleShot(100, lambda: show_training_layout(slicer.mrmlScene, nodes))

    def onPoll(self) -> None:
        """Read the run's progress (MONAI Label's plugin polls its training the same way)."""
        from MRISuperResLib.slicer.training import format_duration

        status = self.logic.training().poll()
        self.ui.progressBar.value = int(round(100 * status.progress))
        parts = [_("{state}: step {step} of {total}").format(state=status.state, step=status.step,
                                                                total=status.total_steps)]
        if status.running and status.eta_s is not None:
            parts.append(_("ETA {eta}").format(eta=format_duration(status.eta_s)))
        if status.loss is not None:
            parts.append(_("loss {loss:.4g}").format(loss=status.loss))
        if status.best_psnr is not None:
            parts.append(_("best validation PSNR {psnr:.2f} dB (B-spline {baseline:.2f}) at step {step}").format(
                psnr=status.best_psnr, baseline=status.best_baseline_psnr or float("nan"), step=status.best_step))
        if not status.running and status.message:
            parts.append(status.message)
        self.ui.statusLabel.text = "; ".join(parts)
        if status.model_updated and status.model_path is not None:
            self._showModelCard(status.model_path)
        if not status.running:
            self._pollTimer.stop()
            if status.state == "failed":
                slicer.util.errorDisplay(status.message, windowTitle=_("MRI Super-Resolution Training"))
        self._updateButtons()

    def _showModelCard(self, modelPath) -> None:
        from MRISuperResLib.engine.model_zoo import resolve_model

        entry = resolve_model(str(modelPath), (1.0, 1.0, 1.0))
        self.ui.modelCardTextBrowser.setMarkdown(entry.card())

    def onOpenInEnhance(self) -> None:
        """Open MRI Super-Resolution with the trained model selected."""
        job = self.logic.training().job
        if job is None or not job.model_path.is_file():
            return
        slicer.util.selectModule("MRISuperRes")
        # By file path: the Enhance list remembers it like a file picked with its Browse... button.
        slicer.modules.mrisuperres.widgetRepresentation().self().selectModel(str(job.model_path))

    def _updateButtons(self) -> None:
        training = self.logic.isTraining() if self.logic else False
        status = self.logic.lastStatus() if self.logic else None
        hasPairs = bool(self._parameterNode and (len(self._parameterNode.pairs) or self._parameterNode.useDataFolder))
        self.ui.startButton.enabled = hasPairs and not training
        self.ui.startButton.toolTip = _("Train a model on the pairs") if hasPairs else _("Add pairs first")
        self.ui.stopButton.enabled = training
        self.ui.resumeButton.enabled = not training and bool(self._parameterNode)
        self.ui.registerButton.enabled = not training and self._registration is None and any(
            low for _h, low, _v in self._pairRows())
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
        from MRISuperResLib.slicer.training import TrainingPair, subjects_from_folder

        pairs = [TrainingPair(p.highResVolume, p.lowResVolume, p.validation) for p in parameterNode.pairs]
        if parameterNode.useDataFolder and _isSet(parameterNode.dataFolder):
            pairs += subjects_from_folder(parameterNode.dataFolder)
        return pairs

    def settings(self, parameterNode):
        """The run's ``TrainingSettings`` from the parameter node."""
        from MRISuperResLib.slicer.training import TrainingSettings, parse_patch_size

        return TrainingSettings(
            name=parameterNode.modelName.strip(),
            output_folder=pathlib.Path(parameterNode.outputFolder),
            preset=parameterNode.preset,
            scale=parameterNode.scale,
            degradation=parameterNode.degradation,
            noise=parameterNode.noise,
            patch_size=parse_patch_size(parameterNode.patchSize),
            batch_size=parameterNode.batchSize,
            steps=parameterNode.steps,
            validate_every=parameterNode.validateEvery,
            l1=parameterNode.l1Weight,
            perceptual=parameterNode.perceptualWeight,
            perceptual_weights=parameterNode.perceptualWeightsFile if _isSet(parameterNode.perceptualWeightsFile)
            else None,
            adversarial=parameterNode.adversarialWeight,
            learning_rate=parameterNode.learningRate,
            validation_fraction=parameterNode.validationFraction,
            device=parameterNode.device,
        )

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


def runBrainsFit(fixedNode, movingNode, transformNode) -> None:
    """Rigid then affine BRAINSFit (Mattes mutual information) of ``movingNode`` onto ``fixedNode``, into the
    linear ``transformNode`` (it aligns the moving volume with the fixed one)."""
    parameters = {
        "fixedVolume": fixedNode.GetID(),
        "movingVolume": movingNode.GetID(),
        "linearTransform": transformNode.GetID(),
        "transformType": "Rigid,Affine",
        "initializeTransformMode": "useMomentsAlign",
        "costMetric": "MMI",
        "samplingPercentage": 0.02,
    }
    cliNode = slicer.cli.runSync(slicer.modules.brainsfit, None, parameters, update_display=False)
    try:
        if cliNode.GetStatus() & cliNode.ErrorsMask:
            raise RuntimeError(cliNode.GetErrorText().strip() or "BRAINSFit failed")
    finally:
        slicer.mrmlScene.RemoveNode(cliNode)


#
# MRISuperResTrainingTest
#


class MRISuperResTrainingTest(ScriptedLoadableModuleTest):
    """Self-test, run from the module's "Reload and Test" button and by ctest: the whole flow in real Slicer."""

    def setUp(self):
        """Start every test from an empty scene, with model folders registered in a temporary settings folder."""
        import tempfile

        slicer.mrmlScene.Clear()
        self.tempFolder = pathlib.Path(tempfile.mkdtemp(prefix="MRISuperResTrainingTest"))
        self._savedConfigDir = os.environ.get("MRISUPERRES_CONFIG_DIR")
        layoutManager = slicer.app.layoutManager()
        self._savedLayout = layoutManager.layout if layoutManager is not None else None
        os.environ["MRISUPERRES_CONFIG_DIR"] = str(self.tempFolder / "settings")

    def tearDown(self):
        import shutil

        if self._savedConfigDir is None:
            os.environ.pop("MRISUPERRES_CONFIG_DIR", None)
        else:
            os.environ["MRISUPERRES_CONFIG_DIR"] = self._savedConfigDir
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None and self._savedLayout is not None:
            layoutManager.setLayout(self._savedLayout)
        shutil.rmtree(self.tempFolder, ignore_errors=True)

    def runTest(self):
        """Run all tests of this module."""
        for test in (self.test_LogicInstantiates, self.test_WidgetEditsPairs, self.test_RegisterAndTrain):
            self.setUp()
            try:
                test()
            finally:
                self.tearDown()

    def _subject(self, name, seed):
        """A smooth synthetic head-like volume (no data is downloaded): blobs of different intensities."""
        import numpy as np

        rng = np.random.default_rng(seed)
        k, j, i = np.mgrid[0:36, 0:40, 0:36].astype(np.float32)
        array = np.zeros(k.shape, np.float32)
        for _blob in range(12):
            centre = rng.uniform([8, 8, 8], [28, 32, 28])
            radius = rng.uniform(3, 8)
            array += rng.uniform(50, 200) * np.exp(-((k - centre[0]) ** 2 + (j - centre[1]) ** 2 +
                                                     (i - centre[2]) ** 2) / (2 * radius ** 2))
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        node.CreateDefaultDisplayNodes()
        slicer.util.updateVolumeFromArray(node, array)
        node.SetSpacing(2.0, 2.0, 2.0)
        return node

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
        self._subject("subject0", 0)
        widget = slicer.modules.mrisuperrestraining.widgetRepresentation().self()
        widget.initializeParameterNode()
        parameterNode = widget.logic.getParameterNode()
        parameterNode.pairs = []
        widget.onAddPair()
        self.assertEqual(len(parameterNode.pairs), 1)
        self.assertEqual(widget.ui.pairsTableWidget.rowCount, 1)
        self.assertEqual(parameterNode.pairs[0].highResVolume.GetName(), "subject0")
        widget.ui.pairsTableWidget.cellWidget(0, VALIDATION_COLUMN).checked = True
        self.assertTrue(parameterNode.pairs[0].validation)
        widget.onRemovePair()
        self.assertEqual(len(parameterNode.pairs), 0)

    def test_RegisterAndTrain(self):
        """Register a real pair, train a tiny model in the background, enhance with it by name."""
        import time

        missing = [name for name in ("torch", "monai") if importlib.util.find_spec(name) is None]
        if missing:  # extension build machines have no PyTorch: nothing to train with
            self.skipTest(f"needs {', '.join(missing)} (installed on first use of the module)")

        import numpy as np
        from MRISuperResLib.engine import model_zoo
        from MRISuperResLib.slicer.outputs import EnhanceLogic
        from MRISuperResLib.slicer.training import TrainingLogic, TrainingPair, TrainingSettings, show_training_layout

        subjects = [self._subject(f"subject{index}", index) for index in range(3)]
        # A real pair's low-resolution partner: every other voxel of subject0, shifted by a few millimetres.
        low = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "subject0_thick")
        low.CreateDefaultDisplayNodes()
        slicer.util.updateVolumeFromArray(low, slicer.util.arrayFromVolume(subjects[0])[::2, ::2, ::2].copy())
        low.SetSpacing(4.0, 4.0, 4.0)
        low.SetOrigin(3.0, -2.0, 1.5)
        before = slicer.util.arrayFromVolume(subjects[0]).copy()

        training = TrainingLogic(slicer.mrmlScene)
        outcome = training.register_pair(TrainingPair(subjects[0], low))
        self.assertLess(outcome.metric, -0.1)
        self.delayDisplay(f"Registered: Mattes mutual information {outcome.metric:.3f}")

        settings = TrainingSettings(
            name="selftest-tiny", output_folder=self.tempFolder / "models",
            model_config={"channels": 8, "blocks": 1, "upsample_features": 2, "global_skip": "baseline"},
            patch_size=(8, 8, 8), batch_size=2, steps=8, validate_every=4, log_every=1, checkpoint_every=1,
            threads=1, device="cpu", validation_crop=(12, 12, 12))
        pairs = [TrainingPair(subjects[0], low), TrainingPair(subjects[1]), TrainingPair(subjects[2])]
        job = training.prepare(pairs, settings)
        training.start(job)
        show_training_layout(slicer.mrmlScene, training.ensure_nodes())
        deadline = time.monotonic() + 600
        status = training.poll()
        while status.running and time.monotonic() < deadline:
            slicer.app.processEvents()
            time.sleep(0.5)
            status = training.poll()
        self.assertEqual(status.state, "finished", status.message)
        self.assertIn("selftest-tiny", [entry.name for entry in model_zoo.list_models()])
        self.assertEqual(slicer.util.arrayFromTableColumn(training.nodes.loss_table, "step")[-1], 8)

        nodes = EnhanceLogic(slicer.mrmlScene).enhance(subjects[1], model="selftest-tiny", scale=2, device="cpu")
        self.assertEqual(nodes.sr.GetImageData().GetDimensions(), (72, 80, 72))
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(subjects[0]), before))
        self.delayDisplay("Training test passed")
