"""A one-glance PNG for a radiologist: rows axial / coronal / sagittal, columns input, baseline, SR,
difference, consistency.

Volumes are reoriented to LPS index order for display (SimpleITK ``DICOMOrient``) and shown in radiological
convention: patient right on the image's left, anterior at the top of axial views, superior at the top of
coronal and sagittal views, with physical aspect ratios. Needs matplotlib (``pip install 'mrisuperres[figure]'``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import MRISuperResError
from ..imaging.verified_write import verify_png, write_failure
from ..imaging.volume import Volume
from ..imaging.volume_io import from_sitk, staging_folder, to_sitk

VIEWS = ("axial", "coronal", "sagittal")


def _lps_oriented(volume: Volume) -> Volume:
    return from_sitk(sitk.DICOMOrient(to_sitk(volume), "LPS"))


def _middle_slice(volume: Volume, view: str) -> tuple[np.ndarray, float]:
    """Middle slice of an LPS-oriented volume as a displayable 2D array and its pixel aspect (height/width)."""
    array, (si, sj, sk) = volume.array, volume.spacing
    ni, nj, nk = array.shape
    if view == "axial":
        return array[:, :, nk // 2].T, sj / si
    if view == "coronal":
        return array[:, nj // 2, :].T[::-1], sk / si
    return array[ni // 2, :, :].T[::-1], sk / sj


def save_figure(
    path: str | os.PathLike,
    panels: dict[str, Volume],
    title: str = "",
    overwrite: bool = False,
) -> Path:
    """Write the comparison figure.

    Args:
        path: PNG file to write (atomically).
        panels: column title -> volume, in display order. Columns whose title starts with ``difference`` use a
            diverging colour map centred at 0; ``consistency`` a sequential one; others grey levels with a
            window shared by all intensity columns (1st-99.5th percentile of the first column).
        title: figure title.
        overwrite: replace an existing file.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MRISuperResError("figures need matplotlib; install it: pip install 'mrisuperres[figure]'") from None
    path = Path(path)
    if path.exists() and not overwrite:
        raise MRISuperResError(f"figure {path} already exists; choose another name or pass --overwrite")
    oriented = {name: _lps_oriented(volume) for name, volume in panels.items()}
    first = next(iter(oriented.values())).array
    low, high = np.percentile(first, [1.0, 99.5])
    difference_limit = max(
        (float(np.percentile(np.abs(v.array), 99.5)) for n, v in oriented.items() if n.startswith("difference")),
        default=1.0,
    ) or 1.0
    figure, axes = plt.subplots(len(VIEWS), len(oriented), figsize=(2.6 * len(oriented), 2.8 * len(VIEWS)),
                                squeeze=False)
    for column, (name, volume) in enumerate(oriented.items()):
        for row, view in enumerate(VIEWS):
            image, aspect = _middle_slice(volume, view)
            axis = axes[row][column]
            if name.startswith("difference"):
                shown = axis.imshow(image, cmap="RdBu_r", vmin=-difference_limit, vmax=difference_limit, aspect=aspect)
            elif name.startswith("consistency"):
                shown = axis.imshow(image, cmap="magma", vmin=0, vmax=max(float(np.percentile(volume.array, 99.5)), 1e-6),
                                    aspect=aspect)
            else:
                shown = axis.imshow(image, cmap="gray", vmin=low, vmax=high, aspect=aspect)
            if row == 0:
                axis.set_title(name, fontsize=10)
            if column == 0:
                axis.set_ylabel(view, fontsize=10)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == len(VIEWS) - 1 and (name.startswith("difference") or name.startswith("consistency")):
                figure.colorbar(shown, ax=axis, orientation="horizontal", fraction=0.05, pad=0.04)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    try:
        with staging_folder(path.parent) as staging:
            staged = staging / path.name
            try:
                figure.savefig(staged, dpi=110, format="png")
            except OSError as error:
                raise write_failure(path, error.strerror or type(error).__name__) from None
            verify_png(staged, path)  # flushed and decoded: a figure cut short by a full disk is never committed
            os.replace(staged, path)
    finally:
        plt.close(figure)
    return path
