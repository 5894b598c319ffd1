"""The Enhance panel's compare-views controls: input | super-resolved | difference over SR, linked.

The views themselves are MRML work (``MRISuperResLib.slicer.layout.CompareViews``); this class reads the panel's
orientation and opacity controls and remembers whether the comparison is on screen.
"""

import slicer
from slicer.i18n import tr as _


class EnhanceViews:
    """Shows, re-orients and restores the linked views of the last run of the parameter node of ``widget``."""

    def __init__(self, widget) -> None:
        self._widget = widget
        self._comparison = None
        self.shown = False

    def connectControls(self) -> None:
        """Connect Show comparison, Restore layout, the orientation selector and the difference opacity slider."""
        ui = self._widget.ui
        ui.showComparisonButton.connect("clicked(bool)", self._widget.onShowComparison)
        ui.restoreLayoutButton.connect("clicked(bool)", self.restore)
        ui.orientationComboBox.connect("currentIndexChanged(int)",
                                       lambda index=None: self.setOrientation(ui.orientationComboBox.currentData))
        ui.differenceOpacitySlider.connect("valueChanged(double)", self.setDifferenceOpacity)

    def forget(self) -> None:
        """Drop the views of a closing scene."""
        self._comparison = None
        self.shown = False

    def show(self) -> None:
        """Input | SR | difference over SR, linked, in the chosen orientation (an error dialog without outputs)."""
        parameterNode = self._widget.parameterNode
        if not (parameterNode and parameterNode.inputVolume and parameterNode.srVolume):
            slicer.util.errorDisplay(_("Enhance a volume first: the views compare its input and outputs."))
            return
        if not parameterNode.differenceVolume:
            slicer.util.errorDisplay(_("The difference volume of the last run was removed from the scene: enhance "
                                       "again to compare the views."))
            return
        from MRISuperResLib.slicer.layout import CompareViews

        if self._comparison is None:
            # The application's slice logics fit the real views (and add no extra slice-model nodes).
            self._comparison = CompareViews(slicer.mrmlScene, application_logic=slicer.app.applicationLogic())
        self._comparison.show(parameterNode.inputVolume, parameterNode.srVolume, parameterNode.differenceVolume,
                              orientation=self._widget.ui.orientationComboBox.currentData,
                              opacity=parameterNode.differenceOpacity)
        # Fit again once the new views have their final sizes (as CompareVolumes does).
        slicer.app.processEvents()
        self._comparison.fit()
        self.shown = True

    def restore(self) -> None:
        """Back to the layout shown before the comparison."""
        if self._comparison is not None:
            self._comparison.restore()
        self.shown = False

    def setOrientation(self, orientation: str) -> None:
        """"Axial", "Coronal" or "Sagittal" in the three views (while they are shown)."""
        if self._comparison is not None and self.shown:
            self._comparison.set_orientation(orientation)

    def setDifferenceOpacity(self, value: float) -> None:
        """Opacity (0..1) of the difference map over the SR in the third view (while it is shown)."""
        if self._comparison is not None and self.shown:
            self._comparison.set_difference_opacity(value)
