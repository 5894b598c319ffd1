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
    "enhance_file": ".enhance",
    "enhance_volume": ".enhance",
    "EnhanceResult": ".enhance",
    "load_model": ".model_zoo",
    "shipped_models": ".model_zoo",
    "read_volume": ".volume_io",
    "write_volume": ".volume_io",
    "Volume": ".volume",
    "Grid": ".volume",
    "parse_scale": ".geometry",
    "MRISuperResError": ".errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
