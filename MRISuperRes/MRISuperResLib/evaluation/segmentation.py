"""Segment super-resolved and baseline volumes and score them with DICE against the reference's segmentation.

Seed 002 judges super-resolution by segmenting its output: a result that keeps the anatomy gives the same tissue
labels as the high-resolution reference. The segmentation here must run anywhere the engine runs, with nothing
downloaded, and be the same for every method compared, so it is an intensity model fitted once on the reference
and then applied unchanged to the reference and to each output (SR, B-spline, zero-filling):

* ``"labels"`` (a label map of the reference is given, e.g. CSF / grey / white matter from FSL FAST or
  SynthSeg): a Gaussian class-conditional intensity model, one normal distribution per label with the label's mean,
  standard deviation and voxel fraction in the reference (maximum a-posteriori class per voxel, the classifier of
  a Gaussian mixture whose components are known). Voxels are classified inside the label map's foreground
  (label > 0) within the head mask, so the label map's own brain mask is shared by every method. Suits labels that
  differ in intensity (tissue classes); labels of one tissue (e.g. left and right structures) cannot be told apart
  by intensity and score low for every method alike: the ``reference`` row (the model applied to the reference
  itself) shows this ceiling.
* ``"tissue3"`` (no label map): three intensity classes inside the head mask from Otsu's multiple thresholds
  (SimpleITK ``OtsuMultipleThresholdsImageFilter``, 2 thresholds, 128 bins) of the reference; the reference's own
  classes are the truth. In a skull-stripped T1w brain these are CSF, grey and white matter; in a raw head they mix
  non-brain tissue in.

Why not a learned segmenter (SynthSeg, FastSurfer): they need downloaded weights. Why not per-volume k-means or
mixture fits: a model refitted on each output adapts its classes to that output's intensities (blur moves the
class means) and hides part of the differences DICE should show; a single model fitted on the reference does not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .metrics import dice
from ..imaging.volume import Volume

#: Segmentation methods of :func:`segmentation_dice`.
SEGMENT_METHODS = ("labels", "tissue3")
#: Most labels a label map may have (beyond that it is not a label map of tissue classes).
MAX_LABELS = 255


@dataclass(frozen=True)
class GaussianLabelModel:
    """One normal intensity distribution per label; a voxel gets the label of highest posterior probability.

    Attributes:
        labels: the labels, ascending (non-zero integers).
        means, sds: per label, the intensity mean and standard deviation in the reference (input units).
        log_priors: per label, the log of its voxel fraction in the reference.
    """

    labels: np.ndarray
    means: np.ndarray
    sds: np.ndarray
    log_priors: np.ndarray

    @classmethod
    def fit(cls, reference: np.ndarray, label_map: np.ndarray, region: np.ndarray) -> GaussianLabelModel:
        """Fit on the reference intensities of each label inside ``region`` (boolean, same shape).

        Raises:
            InputError: no labelled voxel inside ``region``.
        """
        values, classes = reference[region].astype(np.float64), label_map[region]
        labels = np.array([v for v in np.unique(classes) if v != 0], dtype=np.int64)
        if labels.size == 0:
            raise InputError("the label map has no labelled voxel inside the head; check that it belongs to the "
                             "reference")
        spread = max(float(np.std(values)), 1e-6)
        means, sds, counts = [], [], []
        for label in labels:
            chosen = values[classes == label]
            means.append(float(chosen.mean()))
            # A floor keeps a single-valued label (a synthetic phantom) from a zero width.
            sds.append(max(float(chosen.std()), 1e-3 * spread))
            counts.append(chosen.size)
        return cls(labels, np.array(means), np.array(sds), np.log(np.array(counts, dtype=np.float64) / sum(counts)))

    def segment(self, array: np.ndarray, region: np.ndarray) -> np.ndarray:
        """Label map of ``array`` (int32, same shape): the MAP label inside ``region``, 0 outside."""
        values = array[region].astype(np.float64)
        best = np.full(values.shape, -np.inf)
        chosen = np.zeros(values.shape, dtype=np.int32)
        for label, mean, sd, log_prior in zip(self.labels, self.means, self.sds, self.log_priors):
            score = log_prior - np.log(sd) - 0.5 * np.square((values - mean) / sd)
            better = score > best
            best[better], chosen[better] = score[better], label
        out = np.zeros(array.shape, dtype=np.int32)
        out[region] = chosen
        return out


@dataclass(frozen=True)
class ThresholdModel:
    """Intensity classes ``1 .. len(thresholds) + 1`` between ascending thresholds (input units)."""

    thresholds: tuple[float, ...]

    @classmethod
    def fit_otsu(cls, reference: np.ndarray, region: np.ndarray, classes: int = 3, bins: int = 128) -> ThresholdModel:
        """Otsu's multiple thresholds (SimpleITK) of the reference intensities inside ``region``.

        Raises:
            InputError: ``region`` is empty.
        """
        import SimpleITK as sitk

        values = reference[region].astype(np.float32)
        if values.size == 0:
            raise InputError("the head mask is empty; the reference has no foreground to segment")
        otsu = sitk.OtsuMultipleThresholdsImageFilter()
        otsu.SetNumberOfThresholds(classes - 1)
        otsu.SetNumberOfHistogramBins(bins)
        otsu.Execute(sitk.GetImageFromArray(values.reshape(1, 1, -1)))
        return cls(tuple(sorted(float(t) for t in otsu.GetThresholds())))

    def segment(self, array: np.ndarray, region: np.ndarray) -> np.ndarray:
        """Label map of ``array`` (int32, same shape): class index inside ``region``, 0 outside."""
        out = np.zeros(array.shape, dtype=np.int32)
        out[region] = np.digitize(array[region], self.thresholds) + 1
        return out


def segmentation_dice(
    estimates: dict[str, np.ndarray],
    reference: np.ndarray,
    region: np.ndarray,
    method: str,
    label_map: np.ndarray | None = None,
) -> dict[str, dict[int, float]]:
    """Per-label DICE of each estimate's segmentation against the reference's.

    Args:
        estimates: name -> array on the reference grid (e.g. ``{"sr": ..., "baseline": ..., "zerofill": ...}``).
        reference: the high-resolution reference on the same grid.
        region: boolean voxels to segment (the head mask, where the estimates cover the reference).
        method: ``"labels"`` (needs ``label_map``) or ``"tissue3"``; see the module docstring.
        label_map: the reference's labels (integer array, same shape) for ``"labels"``.

    Returns:
        ``{name: {label: DICE}}`` for each estimate; with ``"labels"`` also ``"reference"``: the intensity model
        applied to the reference itself (the best any method can score with this model).

    Raises:
        InputError: an unknown method, or ``"labels"`` without a label map.
    """
    if method == "labels":
        if label_map is None:
            raise InputError("segmentation 'labels' needs a label map of the reference (--labels)")
        region = region & (label_map > 0)
        model: GaussianLabelModel | ThresholdModel = GaussianLabelModel.fit(reference, label_map, region)
        truth = np.where(region, label_map, 0)
        estimates = {**estimates, "reference": reference}
    elif method == "tissue3":
        model = ThresholdModel.fit_otsu(reference, region)
        truth = model.segment(reference, region)
    else:
        raise InputError(f"unknown segmentation {method!r}; choose one of {', '.join(SEGMENT_METHODS)}")
    labels = [int(v) for v in np.unique(truth) if v != 0]
    return {name: dice(model.segment(array, region), truth, labels) for name, array in estimates.items()}


def read_label_map(path: str | os.PathLike, reference: Volume, name: str) -> np.ndarray:
    """Read a label map of ``reference`` (same grid) as an int32 array.

    Raises:
        InputError: the file is on another grid, has non-integer values or too many labels.
    """
    from ..imaging.volume_io import read_volume

    volume = read_volume(path)
    if not volume.grid.same_geometry(reference.grid, tolerance=1e-3 * float(min(reference.spacing))):
        raise InputError(f"label map {path} is not on the grid of reference {name} ({volume.shape} voxels of "
                         f"{'x'.join(f'{s:.3g}' for s in volume.spacing)} mm, reference {reference.shape} of "
                         f"{'x'.join(f'{s:.3g}' for s in reference.spacing)} mm); resample it onto the reference "
                         "with nearest-neighbour interpolation first")
    array = np.asarray(volume.array)
    if not np.all(np.isfinite(array)) or not np.array_equal(array, np.rint(array)):
        raise InputError(f"{path} has non-integer values: it is not a label map")
    labels = np.unique(array)
    if labels.size - 1 > MAX_LABELS:
        raise InputError(f"{path} has {labels.size - 1} labels (at most {MAX_LABELS}): it is not a label map")
    return array.astype(np.int32)
