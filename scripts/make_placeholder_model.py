"""Write the untrained placeholder model shipped until trained default models exist.

Its last layer is zero, so its output equals the cubic B-spline baseline exactly: it exercises the whole
pipeline (tiling, stitching, outputs, provenance) without claiming any quality.

Usage: python scripts/make_placeholder_model.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MRISuperRes"))

from MRISuperResLib import models  # noqa: E402
from MRISuperResLib.checkpoint import save_model  # noqa: E402
from MRISuperResLib.model_zoo import WEIGHTS_FOLDER  # noqa: E402

CONFIG = {"scale": [2, 2, 2], "channels": 32, "blocks": 8, "kernel_size": 3, "res_scale": 1.0,
          "upsample_features": 8, "global_skip": "baseline"}


def main() -> None:
    torch.manual_seed(0)
    network = models.create("edsr3d", **CONFIG)
    path = save_model(
        network,
        WEIGHTS_FOLDER / "edsr3d-x2-untrained.safetensors",
        name="edsr3d-x2-untrained",
        family="edsr3d",
        config=CONFIG,
        version="0.1.0",
        description="UNTRAINED placeholder (x2 isotropic): output equals cubic B-spline; for testing the pipeline",
        training={"data": "none (untrained)", "note": "last layer zero-initialised"},
        extra={"default_for": ["isotropic"], "untrained": True},
    )
    print(path)


if __name__ == "__main__":
    main()
