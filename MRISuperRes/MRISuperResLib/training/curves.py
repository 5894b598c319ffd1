"""Loss and validation-PSNR curves of a training run as a PNG (matplotlib, optional)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Two panels: training loss per logged step; validation PSNR of the model and of B-spline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in history if "loss" in row]
    losses = [row["loss"] for row in history if "loss" in row]
    validated = [row for row in history if "val_psnr" in row]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(steps, losses, lw=1)
    left.set_xlabel("step")
    left.set_ylabel("training loss")
    left.set_yscale("log")
    if validated:
        right.plot([r["step"] for r in validated], [r["val_psnr"] for r in validated], "o-", label="model")
        right.plot([r["step"] for r in validated], [r["baseline_psnr"] for r in validated], "--", label="B-spline")
        right.legend()
    right.set_xlabel("step")
    right.set_ylabel("validation PSNR (dB)")
    figure.tight_layout()
    temporary = path.with_name(f".{path.name}.partial.png")
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    os.replace(temporary, path)
