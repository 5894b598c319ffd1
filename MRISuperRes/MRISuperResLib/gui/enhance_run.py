"""The Enhance panel's run controls: whether Enhance can run, Apply/Cancel, polling the background process, the
progress bar and the end of a run.

The work runs in a child process (``MRISuperResLib.slicer.enhance_process.EnhanceProcess``) that a Qt timer polls,
so Slicer never blocks. Engine code is imported inside the methods (the panel opens before PyTorch is installed).
"""

import qt
import slicer
from slicer.i18n import tr as _

#: How often the widget polls the background run (milliseconds).
POLL_INTERVAL_MS = 200


class EnhanceRun:
    """Drives the Enhance button of ``widget.ui``: checks the request, starts the logic's background process,
    polls it and adds its outputs to the scene (or reports why not). At most one run at a time."""

    def __init__(self, widget) -> None:
        self._widget = widget
        self.process = None
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(POLL_INTERVAL_MS)
        self.pollTimer.connect("timeout()", self.poll)

    # ------------------------------------------------------------------------------------------------ checks
    def requestedScale(self):
        """The per-axis scale (i, j, k) the GUI asks for, or ``(None, reason)`` when it cannot be determined."""
        from MRISuperResLib.errors import MRISuperResError
        from MRISuperResLib.imaging.geometry import parse_scale
        from MRISuperResLib.slicer.panel import thick_slice_scale

        parameterNode = self._widget.parameterNode
        choice = parameterNode.scaleChoice
        if choice == "thick":
            scale = thick_slice_scale(parameterNode.inputVolume.GetSpacing())
            if scale is None:
                return None, _("The input is already near-isotropic: choose x2, x3 or x4.")
            return scale, None
        try:
            return parse_scale(parameterNode.perAxisScale if choice == "perAxis" else choice), None
        except MRISuperResError as error:
            return None, str(error)

    def whyNotApply(self):
        """Why Enhance cannot run now (one line), or None when it can."""
        parameterNode = self._widget.parameterNode
        if parameterNode is None:
            return _("No parameter node.")
        try:
            from MRISuperResLib.slicer.panel import adapt_problem, input_problem, scale_problem
        except ImportError:
            return None if parameterNode.inputVolume else _("Select an input volume.")
        problem = input_problem(parameterNode.inputVolume)
        if problem:
            return problem
        scale, problem = self.requestedScale()
        if problem:
            return problem
        if parameterNode.adaptToScan and (problem := adapt_problem(scale)):
            return problem
        return scale_problem(parameterNode.model, scale)

    def checkCanApply(self) -> None:
        """Enable Enhance only for a valid input, model and scale; the tooltip says why not."""
        if self.process is not None:
            return  # the button is Cancel while running
        ui = self._widget.ui
        reason = self.whyNotApply()
        ui.applyButton.enabled = reason is None
        ui.applyButton.toolTip = reason or _("Super-resolve the input volume (runs in the background).")
        ui.modelDescriptionLabel.text = ui.modelComboBox.itemData(ui.modelComboBox.currentIndex,
                                                                  qt.Qt.ToolTipRole) or ""

    # --------------------------------------------------------------------------------------------------- run
    def apply(self) -> None:
        """Enhance, or Cancel while a run is going on (installs the dependencies first, asking the user)."""
        if self.process is not None:
            self.cancel()
            return
        widget = self._widget
        ui = widget.ui
        devicesKnown = ui.deviceComboBox.count > 2
        if not widget.logic.ensureDependencies():
            return
        widget.choices.populateModels()
        if not devicesKnown and not widget.choices.probing:
            widget.choices.populateDevices()  # torch may have just been installed: list its GPUs
        widget.updateGuiFromParameterNode()
        reason = self.whyNotApply()
        if reason:
            slicer.util.errorDisplay(reason)
            return
        scale, _problem = self.requestedScale()
        try:
            self.process = widget.logic.startEnhance(widget.parameterNode, scale)
        except Exception as error:  # the engine's one-line errors; nothing was added to the scene
            slicer.util.errorDisplay(_("Enhance could not start: {error}").format(error=error))
            self.process = None
            return
        ui.applyButton.text = _("Cancel")
        ui.applyButton.toolTip = _("Stop the run; the scene stays as it was.")
        ui.progressBar.value = 0
        ui.progressBar.visible = True
        ui.statusLabel.text = _("Starting...")
        self.pollTimer.start()

    def poll(self) -> None:
        """Show the run's progress; once it ended, add its outputs and show the linked views (or say why not)."""
        if self.process is None:
            self.pollTimer.stop()
            return
        ui = self._widget.ui
        status = self.process.poll()
        ui.progressBar.value = int(round(100 * status.fraction))
        ui.progressBar.format = f"{status.stage} %p%" if status.stage else "%p%"
        if status.state == "running":
            ui.statusLabel.text = _("{stage} ({seconds:.0f} s)").format(stage=status.stage, seconds=status.elapsed_s)
            return
        self.pollTimer.stop()
        process, self.process = self.process, None
        if status.state == "finished":
            self._finish(process, status)
        else:
            self._end(_("Enhance failed: {error}").format(error=status.error or status.state), failed=True)

    def _finish(self, process, status) -> None:
        widget = self._widget
        try:
            nodes = process.finish()
        except Exception as error:
            self._end(_("Enhance failed: {error}").format(error=error), failed=True)
            return
        widget.logic.rememberOutputs(widget.parameterNode, nodes, process.volume_node)
        self._end(widget.logic.statusText(nodes, status.elapsed_s))
        for warning in nodes.warnings:
            slicer.util.warningDisplay(warning, windowTitle=_("MRI Super-Resolution"))
        widget.onShowComparison()

    def cancel(self) -> None:
        """Stop the running process tree; nothing is added to the scene."""
        self.pollTimer.stop()
        process, self.process = self.process, None
        if process is not None:
            process.cancel()
        self._end(_("Cancelled; nothing was added to the scene."))

    def stop(self) -> None:
        """Cancel a running enhance without touching the panel (the module widget is destroyed)."""
        if self.process is not None:
            self.process.cancel()
            self.process = None
        self.pollTimer.stop()

    def _end(self, message: str, failed: bool = False) -> None:
        ui = self._widget.ui
        ui.applyButton.text = _("Enhance")
        ui.progressBar.visible = False
        ui.statusLabel.text = message
        if failed:
            slicer.util.errorDisplay(message)
        self.checkCanApply()
