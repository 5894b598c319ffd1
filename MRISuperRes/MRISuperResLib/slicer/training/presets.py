"""The model presets the Training module offers: a family in one size, with training settings that suit it.

This module imports nothing beyond the standard library when loaded (the model registry only inside methods), so
the Qt module file can read :data:`PRESET_NAMES` while Slicer loads it, before PyTorch is installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    """A model family in one size, with training settings that suit it.

    Attributes:
        family: a registry family (``MRISuperResLib.models.FAMILIES``).
        size: ``"small"`` (fast enough for the CPU) or ``"seed"`` (the configuration of the user's documents,
            for a GPU).
        patch_size: low-resolution patch size ``(i, j, k)`` in voxels.
        batch_size: patches per step.
        learning_rate: Adam's initial learning rate.
    """

    family: str
    size: str
    patch_size: tuple[int, int, int]
    batch_size: int
    learning_rate: float

    def model_config(self, scale: Sequence[int]) -> dict[str, Any]:
        """The family's constructor arguments in this size at ``scale``."""
        from ... import models

        builder = models.small_config if self.size == "small" else models.seed_config
        return builder(self.family, list(scale))

    def description(self) -> str:
        from ... import models

        kind = "small, for the CPU" if self.size == "small" else "the source document's size, for a GPU"
        return f"{models.family_spec(self.family).description} - {kind}"


#: The presets offered in the module, by name; ``edsr3d-small`` is the default.
PRESETS: dict[str, Preset] = {
    "edsr3d-small": Preset("edsr3d", "small", (24, 24, 24), 4, 3e-4),
    "edsr3d-seed": Preset("edsr3d", "seed", (32, 32, 32), 8, 1e-4),
    "srdensenet-small": Preset("srdensenet", "small", (24, 24, 24), 4, 5e-4),
    "srdensenet-seed": Preset("srdensenet", "seed", (32, 32, 32), 8, 1e-4),
    "unet25d-small": Preset("unet25d", "small", (24, 24, 24), 2, 2e-4),
    "unet25d-seed": Preset("unet25d", "seed", (32, 32, 32), 4, 1e-4),
    "arssr-small": Preset("arssr", "small", (16, 16, 16), 2, 1e-4),
    "arssr-seed": Preset("arssr", "seed", (20, 20, 20), 8, 1e-4),
}

#: The preset names in the order the module lists them.
PRESET_NAMES: tuple[str, ...] = tuple(PRESETS)

DEFAULT_PRESET = "edsr3d-small"
