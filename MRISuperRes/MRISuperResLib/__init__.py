"""MRISuperRes engine: super-resolution of MRI volumes with exact geometry, baselines and trust maps.

This package never imports ``slicer``. Importing it is cheap: the heavy parts (torch, MONAI, SimpleITK) load
on first use of the API below.

Python API::

    from MRISuperResLib import enhance_file, enhance_volume, load_model, read_volume, write_volume

    result = enhance_file("t1_2mm.nii.gz", "t1_sr.nii.gz", scale=2, baseline_path="t1_bspline.nii.gz")
    print(result.consistency_nrmse, result.device)

    volume = read_volume("t2_thick.nrrd")              # Volume: array [i, j, k] + LPS grid
    result = enhance_volume(volume, model="default", scale=(1, 1, 4), device="auto")
    write_volume(result.sr, "t2_sr.nrrd")
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .version import __version__

_LAZY = {
    "enhance_file": ".engine.enhance",
    "enhance_volume": ".engine.enhance",
    "EnhanceResult": ".engine.enhance",
    "load_model": ".engine.model_zoo",
    "shipped_models": ".engine.model_zoo",
    "read_volume": ".imaging.volume_io",
    "write_volume": ".imaging.volume_io",
    "Volume": ".imaging.volume",
    "Grid": ".imaging.volume",
    "parse_scale": ".imaging.geometry",
    "MRISuperResError": ".errors",
}

__all__ = ["__version__", *_LAZY]


#: Modules that scripts written before the layer folders reach as ``from MRISuperResLib import model_zoo``.
_MOVED_MODULES = {"model_zoo": ".engine.model_zoo"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    if name in _MOVED_MODULES:
        return import_module(_MOVED_MODULES[name], __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
