"""The registration step of the Training panel: align a real pair's low-res volume with its high-res partner.

SimpleITK registrations run in a background process (``MRISuperResLib.slicer.training.RegistrationRun``) that a
Qt timer polls, so that Slicer stays responsive; BRAINSFit is Slicer's own CLI module and runs as Slicer runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import qt

import slicer
from slicer.i18n import tr as _

#: How often the panel polls a background registration (milliseconds).
REGISTRATION_POLL_INTERVAL_MS = 300


class RegistrationStep:
    """Registers the pair the user picked in the pairs table and shows the outcome.

    ``parameterNode`` returns the panel's parameter node (``registrationMethod``, ``scale``); ``pairToRegister``
    returns the (high, low, validation) row to register or ``None``; ``changed`` is called when a registration
    starts or ends (the panel refreshes its buttons); ``registered`` after an outcome is shown (the pairs table
    refreshes its registration column).
    """

    def __init__(self, ui, logic, parameterNode: Callable[[], Any], pairToRegister: Callable[[], tuple | None],
                 changed: Callable[[], None], registered: Callable[[], None]) -> None:
        self.ui = ui
        self.logic = logic
        self._parameterNode = parameterNode
        self._pairToRegister = pairToRegister
        self._changed = changed
        self._registered = registered
        self._run = None
        self.timer = qt.QTimer()
        self.timer.setInterval(REGISTRATION_POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.poll)

    @property
    def running(self) -> bool:
        """A background registration is under way."""
        return self._run is not None

    def register(self) -> None:
        """Register the selected real pair and show the aligned low-res over the high-res."""
        pair = self._pairToRegister()
        if pair is None:
            return
        if not self.logic.ensureDependencies():
            return
        high, low, _validation = pair
        parameterNode = self._parameterNode()
        if parameterNode.registrationMethod == "BRAINSFit":
            # BRAINSFit is Slicer's own CLI module (it shows its progress); it runs as Slicer runs it.
            with slicer.util.tryWithErrorDisplay(_("Registration refused."), waitCursor=True):
                self._show(self.logic.registerPair(high, low, parameterNode.scale, "brainsfit"))
            return
        # SimpleITK: in a background process, so that Slicer stays responsive (seconds to a minute).
        with slicer.util.tryWithErrorDisplay(_("Registration could not start.")):
            self._run = self.logic.startRegistration(high, low, parameterNode.scale)
            self.ui.registrationResultLabel.text = _("Registering {low} onto {high}...").format(
                low=low.GetName(), high=high.GetName())
            self.timer.start()
        self._changed()

    def poll(self) -> None:
        """Check the background registration; show its outcome or its error once it has ended."""
        run = self._run
        if run is None:
            self.timer.stop()
            return
        try:
            outcome = run.poll()
        except Exception as error:
            self.timer.stop()
            self._run = None
            self.ui.registrationResultLabel.text = str(error)
            slicer.util.errorDisplay(_("Registration refused: {error}").format(error=error))
            self._changed()
            return
        if outcome is None:
            return
        self.timer.stop()
        self._run = None
        self._show(outcome)
        self._changed()

    def cancel(self) -> None:
        """Stop polling and cancel a background registration (scene close, application close)."""
        self.timer.stop()
        if self._run is not None:
            self._run.cancel()
            self._run = None

    def _show(self, outcome) -> None:
        slicer.util.resetSliceViews()
        text = _("{low} on {high}: Mattes mutual information {metric:.3f} (same anatomy below -0.1).").format(
            low=outcome.node.GetAttribute("MRISuperRes.moving"), high=outcome.node.GetAttribute("MRISuperRes.fixed"),
            metric=outcome.metric)
        self.ui.registrationResultLabel.text = " ".join([text, *outcome.warnings])
        self._registered()


def runBrainsFit(fixedNode, movingNode, transformNode) -> None:
    """Rigid then affine BRAINSFit (Mattes mutual information) of ``movingNode`` onto ``fixedNode``, into the
    linear ``transformNode`` (it aligns the moving volume with the fixed one).

    Raises RuntimeError with BRAINSFit's error text when the CLI module fails.
    """
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
