"""What a training run writes to its output folder, besides the model files: the resumable state, the log table,
the curves, the TensorBoard events; and the run's progress bar.

Every file is written to a hidden ``.<name>.partial`` beside it and then renamed, so a run stopped mid-write
leaves the previous complete file.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from .config import ConfigError

STATE_FILE = "state.pt"
BEST_FILE = "best.safetensors"
LOG_FILE = "log.csv"
CURVES_FILE = "curves.png"


def code_revision() -> str:
    """The git commit of the engine's checkout (``"unknown"`` outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_state(state: dict[str, Any], output_dir: Path) -> None:
    """Write the resumable state (tensors, numbers, strings, lists and dicts only) to ``state.pt`` atomically."""
    path = output_dir / STATE_FILE
    temporary = path.with_name(f".{path.name}.partial")
    torch.save(state, temporary)
    os.replace(temporary, path)


def read_state(output_dir: Path, device: torch.device) -> dict[str, Any]:
    """The resumable state of the run in ``output_dir``, read with ``weights_only=True`` (no code runs).

    Raises:
        InputError: there is no ``state.pt`` to resume from.
    """
    path = output_dir / STATE_FILE
    if not path.is_file():
        raise InputError(f"nothing to resume: {path} does not exist; start without --resume")
    return torch.load(path, map_location=device, weights_only=True)


def write_log(history: list[dict[str, Any]], output_dir: Path) -> None:
    """Write ``log.csv`` (one row per logged step; columns in order of first appearance) and ``curves.png``
    (skipped without matplotlib)."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    temporary = output_dir / f".{LOG_FILE}.partial"
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    os.replace(temporary, output_dir / LOG_FILE)
    try:
        from .curves import plot_curves

        plot_curves(history, output_dir / CURVES_FILE)
    except ImportError:
        pass


def tensorboard_writer(output_dir: Path):  # type: ignore[no-untyped-def]
    """A TensorBoard ``SummaryWriter`` logging to ``output_dir/tensorboard``.

    Raises:
        ConfigError: the tensorboard package is not installed.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("run.tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(output_dir / "tensorboard"))


def progress_bar(total: int, initial: int):  # type: ignore[no-untyped-def]
    """A tqdm bar over the run's steps with ETA, on stderr (hidden when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="training", unit="step", file=sys.stderr, disable=None,
                dynamic_ncols=True)


def postfix(values: dict[str, float]) -> str:
    """The progress bar's text: the generator's and the critic's loss of the last step."""
    return " ".join(f"{k} {v:.4f}" for k, v in values.items() if k in ("loss", "critic"))
