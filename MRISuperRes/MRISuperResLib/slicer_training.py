"""Former home of the Training module's logic; it lives in :mod:`MRISuperResLib.slicer.training` now. Kept so that
scripts written against the documented path still run."""

from .slicer.training import *  # noqa: F401,F403
from .slicer.training import TrainingLogic, TrainingPair, TrainingSettings  # noqa: F401
