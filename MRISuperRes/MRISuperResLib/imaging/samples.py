"""Real sample volumes that ship inside registry packages (nothing is downloaded at run time)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import MRISuperResError

_MNI_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def mni152_t1_path() -> Path:
    """Path of the MNI152 2009 T1 template at 1 mm (197x233x189, uint8) shipped inside nilearn.

    The file is located without importing nilearn (which is slow to import).

    Raises:
        MRISuperResError: nilearn is not installed.
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise MRISuperResError("the MNI152 sample ships with nilearn; install it: pip install 'mrisuperres[demo]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / _MNI_T1
    if not path.is_file():
        raise MRISuperResError(f"nilearn is installed but its MNI152 template {path} is missing; reinstall nilearn")
    return path
