"""The enhance engine: model files in, super-resolved volumes with their baselines and trust maps out.

:mod:`.enhance` (``enhance_volume`` / ``enhance_file``), :mod:`.inference` (tiled network runs), :mod:`.model_zoo`
(shipped and user models), :mod:`.model_manifest` (the shipped catalogue and its defaults, ``weights/models.json``),
:mod:`.checkpoint` (the ``.safetensors`` model format), :mod:`.model_metadata` (its typed metadata), :mod:`.adapt`
(per-scan fine-tuning), :mod:`.output_writer` (all-or-nothing outputs). The engine never imports
:mod:`MRISuperResLib.training`, :mod:`MRISuperResLib.cli` or :mod:`MRISuperResLib.slicer`.
"""
