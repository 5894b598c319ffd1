"""The Enhance panel's model and device selectors: filling the combo boxes, the device probe, Browse....

Engine code is imported inside the methods, so the panel opens before PyTorch and MONAI are installed; the model
list then offers only "Default" and the device list Auto and CPU until the dependencies are there.
"""

import os

import qt
import slicer
from slicer.i18n import tr as _

#: Application settings key of the model files the user browsed to (a list of paths).
MODEL_FILES_SETTING = "MRISuperRes/ModelFiles"

#: How often the widget checks whether the device probe (a child process) has answered (milliseconds).
DEVICE_POLL_INTERVAL_MS = 500


def selectData(comboBox, value) -> None:
    """Make the item whose user data is ``value`` current; an unknown value changes nothing."""
    index = comboBox.findData(value)
    if index >= 0 and index != comboBox.currentIndex:
        comboBox.currentIndex = index


class EnhanceChoices:
    """Fills the model and device combo boxes of the Enhance panel (``widget.ui``) without touching the parameter
    node: while refilling, ``widget.updatingGui`` is set, so the combo boxes' signals are ignored."""

    def __init__(self, widget) -> None:
        self._widget = widget
        self.modelChoices = []
        self._deviceProbe = None
        self._deviceTimer = qt.QTimer()
        self._deviceTimer.setInterval(DEVICE_POLL_INTERVAL_MS)
        self._deviceTimer.connect("timeout()", self._onDeviceProbe)

    @property
    def probing(self) -> bool:
        """A device probe was started and has not answered yet."""
        return self._deviceProbe is not None

    def stop(self) -> None:
        """Stop polling the device probe (the module widget is destroyed)."""
        self._deviceTimer.stop()

    def connectControls(self) -> None:
        """Connect Browse... and the model, scale and device combo boxes (their choices go to the parameter node)."""
        ui = self._widget.ui
        ui.browseModelButton.connect("clicked(bool)", self._widget.onBrowseModel)
        for comboBox in (ui.modelComboBox, ui.scaleComboBox, ui.deviceComboBox):
            comboBox.connect("currentIndexChanged(int)", self._onChoiceChanged)

    def _onChoiceChanged(self, index=None) -> None:
        parameterNode = self._widget.parameterNode
        if parameterNode is not None and not self._widget.updatingGui:
            self.readInto(parameterNode)

    def showParameterNode(self, parameterNode) -> None:
        """Select the parameter node's model, scale and device, and enable the fields that apply to its choices
        (the caller sets ``widget.updatingGui``)."""
        ui = self._widget.ui
        selectData(ui.modelComboBox, parameterNode.model)
        selectData(ui.scaleComboBox, parameterNode.scaleChoice)
        selectData(ui.deviceComboBox, parameterNode.device)
        ui.perAxisScaleLineEdit.enabled = parameterNode.scaleChoice == "perAxis"
        ui.adaptSecondsSpinBox.enabled = parameterNode.adaptToScan

    def readInto(self, parameterNode) -> None:
        """Store the selected model, scale and device in the parameter node: the combo boxes with dynamic items are
        synchronised by hand (``connectGui`` binds fixed choices only)."""
        ui = self._widget.ui
        with slicer.util.NodeModify(parameterNode):
            parameterNode.model = ui.modelComboBox.currentData or "default"
            parameterNode.scaleChoice = ui.scaleComboBox.currentData or "2"
            parameterNode.device = ui.deviceComboBox.currentData or "auto"

    # ------------------------------------------------------------------------------------------------ models
    @staticmethod
    def modelFiles() -> list:
        """The model files the user browsed to, as remembered in the application settings."""
        files = slicer.app.settings().value(MODEL_FILES_SETTING) or []
        return [files] if isinstance(files, str) else [str(f) for f in files]

    def populateModels(self) -> None:
        """Fill the model selector; without the dependencies yet, only "Default" (installed on first Enhance)."""
        widget = self._widget
        wasUpdating, widget.updatingGui = widget.updatingGui, True  # refilling must not change the parameter node
        try:
            self._fillModelComboBox()
        finally:
            widget.updatingGui = wasUpdating

    def _fillModelComboBox(self) -> None:
        ui = self._widget.ui
        ui.modelComboBox.clear()
        self.modelChoices = []
        try:
            from MRISuperResLib.slicer.panel import model_choices

            choices = self.modelChoices = model_choices(self.modelFiles())
        except ImportError:
            ui.modelComboBox.addItem(_("Default (chosen by scale)"), "default")
            ui.modelDescriptionLabel.text = _("Models are listed once the dependencies are installed "
                                              "(asked on the first Enhance).")
            return
        for choice in choices:
            ui.modelComboBox.addItem(choice.label, choice.value)
            ui.modelComboBox.setItemData(ui.modelComboBox.count - 1, choice.description, qt.Qt.ToolTipRole)

    def modelValue(self, value: str) -> str:
        """The selector value of a model name, ``"default"`` or model file ``value`` (a file not listed yet is
        remembered like a file picked with Browse...).

        Raises:
            ValueError: unknown name, or a file that is not a MRISuperRes model (the message says why).
        """
        self.populateModels()
        if self._widget.ui.modelComboBox.findData(value) < 0:
            if not os.path.isfile(value):
                raise ValueError(f"unknown model {value!r}")
            value = self._listModelFile(value)
        return value

    def _listModelFile(self, path: str) -> str:
        """The selector value of model file ``path``: its listed entry, else the file remembered in the settings.

        Raises:
            ValueError: ``path`` is not a readable MRISuperRes model file.
        """
        from MRISuperResLib.slicer.panel import find_model_choice, model_file_problem

        choice = find_model_choice(self.modelChoices, path)
        if choice is None:
            problem = model_file_problem(path)
            if problem:
                raise ValueError(problem)
            slicer.app.settings().setValue(MODEL_FILES_SETTING, [f for f in self.modelFiles() if f != path] + [path])
            self.populateModels()
            choice = find_model_choice(self.modelChoices, path)
        if choice is None:
            raise ValueError(f"{path} cannot be listed as a model")
        return choice.value

    def browseModel(self) -> None:
        """Pick a model file and select it: a listed model (shipped or trained) selects its entry, another valid
        model file is remembered in the application settings."""
        widget = self._widget
        path = qt.QFileDialog.getOpenFileName(widget.parent, _("Model file"), "", _("Model files (*.safetensors)"))
        if not path:
            return
        try:
            widget.selectModel(path)
        except ValueError as error:
            slicer.util.errorDisplay(str(error))

    # ----------------------------------------------------------------------------------------------- devices
    def populateDevices(self) -> None:
        """Offer Auto and CPU at once, and ask a child process which GPUs torch sees (this process never imports
        torch nor initialises CUDA); the list grows when the answer comes."""
        self._fillDeviceComboBox([(_("Auto (best available)"), "auto"), (_("CPU"), "cpu")])
        try:
            from MRISuperResLib.slicer.panel import DeviceProbe

            self._deviceProbe = DeviceProbe(self._widget.logic.pythonExecutable()).start()
        except (ImportError, OSError):
            self._deviceProbe = None
            return
        self._deviceTimer.start()

    def _onDeviceProbe(self) -> None:
        choices = self._deviceProbe.poll() if self._deviceProbe is not None else []
        if choices is None:
            return
        self._deviceTimer.stop()
        self._deviceProbe = None
        if choices:
            self._fillDeviceComboBox([(_(label), value) for label, value in choices])

    def _fillDeviceComboBox(self, choices) -> None:
        widget = self._widget
        wasUpdating, widget.updatingGui = widget.updatingGui, True  # refilling must not change the parameter node
        try:
            widget.ui.deviceComboBox.clear()
            for label, value in choices:
                widget.ui.deviceComboBox.addItem(label, value)
        finally:
            widget.updatingGui = wasUpdating
        if widget.parameterNode is not None:
            selectData(widget.ui.deviceComboBox, widget.parameterNode.device)
