"""The pairs table of the Training panel: one row per subject (high-res volume, low-res partner, validation flag,
registration outcome), kept in step with the parameter node's ``pairs`` list in both directions.

Qt and MRML widgets only; the registration column's text comes from the module logic (``registrationText``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import qt

import slicer
from slicer.i18n import tr as _

#: Columns of the pairs table.
HIGH_COLUMN, LOW_COLUMN, VALIDATION_COLUMN, REGISTRATION_COLUMN = range(4)

#: (high-res node, low-res node or None, validation) of one table row.
PairRow = tuple[Any, Any, bool]


class PairsTable:
    """Edits the parameter node's pairs through ``ui.pairsTableWidget``.

    ``parameterNode`` returns the panel's current parameter node (``None`` between scenes); ``makePair`` builds one
    pair parameter pack from ``highResVolume``, ``lowResVolume`` and ``validation`` keywords; ``edited`` is called
    after the user changed the table (the panel refreshes its buttons).
    """

    def __init__(self, ui, logic, parameterNode: Callable[[], Any], makePair: Callable[..., Any],
                 edited: Callable[[], None]) -> None:
        self.ui = ui
        self.logic = logic
        self._parameterNode = parameterNode
        self._makePair = makePair
        self._edited = edited
        self._updating = False

    def rows(self) -> list[PairRow]:
        """(high node, low node, validation) of each table row."""
        table = self.ui.pairsTableWidget
        return [(table.cellWidget(row, HIGH_COLUMN).currentNode(), table.cellWidget(row, LOW_COLUMN).currentNode(),
                 table.cellWidget(row, VALIDATION_COLUMN).checked) for row in range(table.rowCount)]

    def update(self) -> None:
        """Rebuild the table when the parameter node's pairs differ from it."""
        if self._updating:
            return
        parameterNode = self._parameterNode()
        pairs = list(parameterNode.pairs) if parameterNode else []
        wanted = [(p.highResVolume, p.lowResVolume, p.validation) for p in pairs]
        if wanted == self.rows():
            self.updateRegistrationColumn()
            return
        self._updating = True
        try:
            table = self.ui.pairsTableWidget
            table.setRowCount(len(wanted))
            for row, (high, low, validation) in enumerate(wanted):
                table.setCellWidget(row, HIGH_COLUMN, self._volumeSelector(high, noneText=_("Select a volume")))
                table.setCellWidget(row, LOW_COLUMN, self._volumeSelector(low, noneText=_("Simulate from high-res")))
                checkBox = qt.QCheckBox()
                checkBox.checked = validation
                checkBox.toolTip = _("Hold this subject out for validation")
                checkBox.connect("toggled(bool)", self._onEdited)
                table.setCellWidget(row, VALIDATION_COLUMN, checkBox)
                item = qt.QTableWidgetItem()
                item.setFlags(qt.Qt.ItemIsSelectable | qt.Qt.ItemIsEnabled)
                table.setItem(row, REGISTRATION_COLUMN, item)
        finally:
            self._updating = False
        self.updateRegistrationColumn()

    def _volumeSelector(self, node, noneText: str):
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
        selector.connect("currentNodeChanged(vtkMRMLNode*)", self._onEdited)
        return selector

    def _onEdited(self, *args) -> None:
        parameterNode = self._parameterNode()
        if self._updating or not parameterNode:
            return
        self._updating = True
        try:
            parameterNode.pairs = [self._makePair(highResVolume=high, lowResVolume=low, validation=validation)
                                   for high, low, validation in self.rows()]
        finally:
            self._updating = False
        self.updateRegistrationColumn()
        self._edited()

    def updateRegistrationColumn(self) -> None:
        """Show each row's registration state: simulated, not registered yet, or the metric."""
        table = self.ui.pairsTableWidget
        for row, (high, low, _validation) in enumerate(self.rows()):
            item = table.item(row, REGISTRATION_COLUMN)
            if item is not None:
                item.setText(self.logic.registrationText(high, low))

    def addPair(self) -> None:
        """Add a row, preselecting a volume not used yet as high-resolution."""
        parameterNode = self._parameterNode()
        used = {p.highResVolume.GetID() for p in parameterNode.pairs if p.highResVolume}
        volumes = [node for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                   if not node.IsA("vtkMRMLLabelMapVolumeNode") and node.GetID() not in used]
        parameterNode.pairs.append(self._makePair(highResVolume=volumes[0] if volumes else None, lowResVolume=None))

    def removePair(self) -> None:
        """Remove the selected row (the last one when none is selected); the volumes stay in the scene."""
        parameterNode = self._parameterNode()
        pairs = list(parameterNode.pairs)
        if not pairs:
            return
        row = self.ui.pairsTableWidget.currentRow()
        del pairs[row if 0 <= row < len(pairs) else -1]
        parameterNode.pairs = pairs

    def selectedRealPair(self) -> PairRow | None:
        """The row to register: the selected row with a low-res volume, else the only such row; ``None`` (after
        telling the user) when that is ambiguous."""
        rows = self.rows()
        row = self.ui.pairsTableWidget.currentRow()
        candidates = [r for r in range(len(rows)) if rows[r][1] is not None]
        if row not in candidates:
            if len(candidates) != 1:
                slicer.util.errorDisplay(_("Select a row with a low-resolution volume to register."))
                return None
            row = candidates[0]
        return rows[row]
