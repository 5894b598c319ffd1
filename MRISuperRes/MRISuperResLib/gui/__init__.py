"""The Qt side of the two Slicer modules' panels: pieces of their widgets that the module files compose.

The only folder that imports Qt (``qt``, ``ctk``); only ``MRISuperRes.py`` and ``MRISuperResTraining.py`` import it,
so importing the engine or the MRML bridge never needs a GUI. Checked in real Slicer by the harness
(``../shared/tools/slicer-harness``), statically by ``tests/slicer/test_module_ui.py``.
"""
