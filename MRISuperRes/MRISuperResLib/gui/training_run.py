"""The run controller of the Training panel: start, stop and resume the background training, poll its progress,
show the loss curves and the trained model's card, and hand the model to the MRI Super-Resolution module.

The work is ``MRISuperResLib.slicer.training.TrainingLogic``'s (through the module logic); engine imports stay
inside the methods, so this module imports without PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import qt

import slicer
from slicer.i18n import tr as _

#: How often the panel polls the training process (milliseconds), as MONAI Label's plugin polls its training.
POLL_INTERVAL_MS = 1000


class RunController:
    """Drives one training run from the panel's Start / Stop / Resume / Open in Enhance buttons.

    ``parameterNode`` returns the panel's parameter node; ``changed`` is called whenever the run's state may have
    changed (the panel refreshes its buttons).
    """

    def __init__(self, ui, logic, parameterNode: Callable[[], Any], changed: Callable[[], None]) -> None:
        self.ui = ui
        self.logic = logic
        self._parameterNode = parameterNode
        self._changed = changed
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.poll)

    def start(self) -> None:
        """Write the pairs and the config, start training in the background, show the curves."""
        if not self.logic.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Training could not start."), waitCursor=True):
            job = self.logic.startTraining(self._parameterNode())
            self._showCurves()
            self.ui.statusLabel.text = _("Starting: {train} training, {validation} validation subjects.").format(
                train=len(job.train_subjects), validation=len(job.validation_subjects))
            for warning in job.warnings:
                slicer.util.warningDisplay(warning, windowTitle=_("MRI Super-Resolution Training"))
            self.timer.start()
        self._changed()

    def stop(self) -> None:
        """Ask the trainer to stop after the current step; it saves its state and keeps the best checkpoint."""
        self.logic.training().stop()
        self.ui.statusLabel.text = _("Stopping after the current step...")
        self._changed()

    def resume(self) -> None:
        """Continue the run of this model name from its saved state."""
        if not self.logic.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Training could not resume."), waitCursor=True):
            self.logic.resumeTraining(self._parameterNode())
            self._showCurves()
            self.timer.start()
        self._changed()

    def _showCurves(self) -> None:
        from MRISuperResLib.slicer.training import show_training_layout

        nodes = self.logic.training().ensure_nodes()
        show_training_layout(slicer.mrmlScene, nodes)
        # The layout manager creates the plot views as it switches layout; give them the charts once they exist.
        qt.QTimer.singleShot(100, lambda: show_training_layout(slicer.mrmlScene, nodes))

    def poll(self) -> None:
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
            self.timer.stop()
            if status.state == "failed":
                slicer.util.errorDisplay(status.message, windowTitle=_("MRI Super-Resolution Training"))
        self._changed()

    def _showModelCard(self, modelPath) -> None:
        from MRISuperResLib.engine.model_zoo import resolve_model

        entry = resolve_model(str(modelPath), (1.0, 1.0, 1.0))
        self.ui.modelCardTextBrowser.setMarkdown(entry.card())

    def openInEnhance(self) -> None:
        """Open MRI Super-Resolution with the trained model selected."""
        job = self.logic.training().job
        if job is None or not job.model_path.is_file():
            return
        slicer.util.selectModule("MRISuperRes")
        # By file path: the Enhance list remembers it like a file picked with its Browse... button.
        slicer.modules.mrisuperres.widgetRepresentation().self().selectModel(str(job.model_path))
