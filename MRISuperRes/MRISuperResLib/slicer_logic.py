"""Former home of the Enhance panel's logic; it lives in :mod:`MRISuperResLib.slicer.panel` and
:mod:`MRISuperResLib.slicer.outputs` now. Kept so that scripts written against the documented path still run."""

from .slicer.outputs import EnhanceLogic, EnhanceNodes  # noqa: F401
from .slicer.panel import *  # noqa: F401,F403
