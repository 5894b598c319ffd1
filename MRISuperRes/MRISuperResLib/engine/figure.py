"""A one-glance PNG for a radiologist: rows axial / coronal / sagittal, columns input, baseline, SR,
difference, consistency (and uncertainty when it was computed).

Volumes are reoriented to LPS index order for display (SimpleITK ``DICOMOrient``) and shown in radiological
convention: patient right on the image's left, anterior at the top of axial views, superior at the top of
coronal and sagittal views, with physical aspect ratios and the orientation letters at each panel's edges. Every
panel is cropped to the head of the first column (its foreground mask, with a margin; the same physical window in
every column, as all panels cover the same extent), the colour bars of the difference and consistency maps sit in
their own row (so the rows of image panels stay aligned) and say their unit, the input's intensity unit. Needs
matplotlib (``pip install 'mrisuperres[figure]'``).
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
#: Radiological display of an LPS-oriented volume: the letter at the (left, right, top, bottom) edge of each view.
EDGE_LETTERS = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}
#: Columns drawn with a sequential colour map from 0 (by the start of their title) and the map.
SEQUENTIAL = {"consistency": "magma", "uncertainty": "viridis"}
#: Margin around the head's bounding box, as a fraction of the field of view per axis.
CROP_MARGIN = 0.04


def _lps_oriented(volume: Volume) -> Volume:
    return from_sitk(sitk.DICOMOrient(to_sitk(volume), "LPS"))


def _head_window(volume: Volume) -> tuple[tuple[float, float], ...]:
    """Per axis, the head's extent as fractions ``(start, stop)`` of the field of view (LPS-oriented volume), with
    :data:`CROP_MARGIN`; the whole field of view when no foreground is found."""
    from ..processing.cropping import crop_to_foreground
    from ..processing.masks import foreground_mask

    try:
        _, region = crop_to_foreground(volume, foreground_mask(volume), margin_mm=0.0)
    except MRISuperResError:
        return ((0.0, 1.0),) * 3
    return tuple((max(0.0, box.start / size - CROP_MARGIN), min(1.0, box.stop / size + CROP_MARGIN))
                 for box, size in zip(region, volume.shape))


def _cropped(volume: Volume, window: tuple[tuple[float, float], ...]) -> np.ndarray:
    """``volume``'s array cut to ``window`` (fractions of each axis; at least one voxel per axis)."""
    region = []
    for (start, stop), size in zip(window, volume.shape):
        first = min(int(np.floor(start * size)), size - 1)
        region.append(slice(first, max(first + 1, int(np.ceil(stop * size)))))
    return volume.array[tuple(region)]


def _middle_slice(array: np.ndarray, spacing: tuple[float, ...], view: str) -> tuple[np.ndarray, float]:
    """Middle slice of an LPS-oriented array as a displayable 2D array and its pixel aspect (height/width)."""
    si, sj, sk = spacing
    ni, nj, nk = array.shape
    if view == "axial":
        return array[:, :, nk // 2].T, sj / si
    if view == "coronal":
        return array[:, nj // 2, :].T[::-1], sk / si
    return array[ni // 2, :, :].T[::-1], sk / sj


def _letters(axis, view: str, color: str) -> None:
    left, right, top, bottom = EDGE_LETTERS[view]
    style = {"transform": axis.transAxes, "color": color, "fontsize": 7, "fontweight": "bold"}
    axis.text(0.02, 0.5, left, ha="left", va="center", **style)
    axis.text(0.98, 0.5, right, ha="right", va="center", **style)
    axis.text(0.5, 0.98, top, ha="center", va="top", **style)
    axis.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)


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
            diverging colour map centred at 0; ``consistency`` and ``uncertainty`` sequential ones from 0; others
            grey levels with a window shared by all intensity columns (1st-99.5th percentile of the first column).
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
    window = _head_window(next(iter(oriented.values())))
    figure, axes = plt.subplots(len(VIEWS) + 1, len(oriented), figsize=(3.0 * len(oriented), 3.0 * len(VIEWS) + 0.5),
                                squeeze=False, gridspec_kw={"height_ratios": [1.0] * len(VIEWS) + [0.06]})
    for column, (name, volume) in enumerate(oriented.items()):
        cropped = _cropped(volume, window)
        # The colour map and its range, once per column: the percentile is over the whole volume.
        if name.startswith("difference"):
            colours = {"cmap": "RdBu_r", "vmin": -difference_limit, "vmax": difference_limit}
        elif name.startswith(tuple(SEQUENTIAL)):
            colours = {"cmap": SEQUENTIAL[next(k for k in SEQUENTIAL if name.startswith(k))], "vmin": 0,
                       "vmax": max(float(np.percentile(volume.array, 99.5)), 1e-6)}
        else:
            colours = {"cmap": "gray", "vmin": low, "vmax": high}
        for row, view in enumerate(VIEWS):
            image, aspect = _middle_slice(cropped, volume.spacing, view)
            axis = axes[row][column]
            shown = axis.imshow(image, aspect=aspect, **colours)
            _letters(axis, view, "black" if name.startswith("difference") else "yellow")
            if row == 0:
                axis.set_title(name, fontsize=10)
            if column == 0:
                axis.set_ylabel(view, fontsize=10)
            axis.set_xticks([])
            axis.set_yticks([])
        bar = axes[len(VIEWS)][column]
        if name.startswith(("difference", *SEQUENTIAL)):
            colorbar = figure.colorbar(shown, cax=bar, orientation="horizontal")
            colorbar.set_label("input intensity units", fontsize=8)
            colorbar.ax.tick_params(labelsize=7)
        else:
            bar.axis("off")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    try:
        with staging_folder(path.parent) as staging:
            staged = staging / path.name
            try:
                figure.savefig(staged, dpi=130, format="png")
            except OSError as error:
                raise write_failure(path, error.strerror or type(error).__name__) from None
            verify_png(staged, path)  # flushed and decoded: a figure cut short by a full disk is never committed
            os.replace(staged, path)
    finally:
        plt.close(figure)
    return path
