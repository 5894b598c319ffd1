"""The settings fields of the Training panel that the parameter node's GUI binding does not cover: a newly picked
preset fills in its patch size, batch size and learning rate; the preset's description; unset path fields.
"""

from __future__ import annotations

from typing import Any

import slicer


def isSet(path: Any) -> bool:
    """An unset path parameter reads back as Path("") == Path(".")."""
    return str(path) not in ("", ".")


class SettingsFields:
    """Keeps ``ui.presetDescriptionLabel`` and the path fields in step with the parameter node, and applies a
    preset once when the user picks it (its values stay editable after)."""

    def __init__(self, ui, logic) -> None:
        self.ui = ui
        self.logic = logic
        self._appliedPreset: str | None = None

    def bind(self, parameterNode) -> None:
        """A new parameter node: its preset counts as applied (its saved values are kept)."""
        self._appliedPreset = parameterNode.preset if parameterNode else None

    def refresh(self, parameterNode) -> None:
        """Apply a newly picked preset, clear the path fields of unset paths, show the preset's description."""
        if parameterNode and parameterNode.preset != self._appliedPreset:
            self._appliedPreset = parameterNode.preset
            self._applyPreset(parameterNode, self._appliedPreset)
        if parameterNode:
            # An unset path parameter reads back as Path("") == Path("."): show an empty field, not ".".
            for widget, value in ((self.ui.dataFolderPathLineEdit, parameterNode.dataFolder),
                                  (self.ui.perceptualWeightsPathLineEdit, parameterNode.perceptualWeightsFile)):
                if not isSet(value) and widget.currentPath:
                    widget.currentPath = ""
        preset = self.logic.preset(parameterNode.preset) if parameterNode else None
        self.ui.presetDescriptionLabel.text = preset.description() if preset else ""

    def _applyPreset(self, parameterNode, name: str) -> None:
        """The user picked another preset: take its patch size, batch size and learning rate (editable after)."""
        preset = self.logic.preset(name)
        if preset is None:
            return
        with slicer.util.NodeModify(parameterNode):
            parameterNode.patchSize = ",".join(str(p) for p in preset.patch_size)
            parameterNode.batchSize = preset.batch_size
            parameterNode.learningRate = preset.learning_rate
