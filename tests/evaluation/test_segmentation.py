"""DICE of segmentations in ``evaluate`` (seed 002 judges super-resolution by segmenting its output).

Requirements under test, on a synthetic three-tissue phantom whose labels are known: the intensity model fitted on
the reference segments the reference itself perfectly (DICE 1 for every label), a blurred estimate scores lower at
the boundaries, Otsu's three classes recover the phantom's tissues without a label map, and ``mrisuperres evaluate
--labels`` / ``--segment tissue3`` print a DICE table for SR, B-spline and zero-filling; a label map on another
grid or with non-integer values is refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import make_tiny_model
from MRISuperResLib.cli.app import main
from MRISuperResLib.errors import InputError
from MRISuperResLib.evaluation.segmentation import (
    GaussianLabelModel,
    ThresholdModel,
    segmentation_dice,
)
from MRISuperResLib.evaluation.metrics import dice
from MRISuperResLib.imaging.volume import Grid, Volume
from MRISuperResLib.imaging.volume_io import write_volume

TISSUE_INTENSITY = {1: 300.0, 2: 600.0, 3: 1000.0}  # CSF-, grey- and white-matter-like (T1w ordering)


def phantom(shape: tuple[int, int, int] = (32, 36, 28)) -> tuple[np.ndarray, np.ndarray]:
    """(image, labels): nested ellipsoids, white matter inside grey matter inside a CSF shell, background 0."""
    axes = [np.linspace(-1, 1, n) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    radius = np.sqrt((x / 0.9) ** 2 + (y / 0.85) ** 2 + (z / 0.9) ** 2)
    wobble = 0.06 * np.sin(5 * np.arctan2(y, x))  # folded boundary between grey and white matter
    labels = np.zeros(shape, dtype=np.int32)
    labels[radius < 0.9] = 1
    labels[radius < 0.75] = 2
    labels[radius < 0.45 + wobble] = 3
    image = np.zeros(shape, dtype=np.float32)
    for label, value in TISSUE_INTENSITY.items():
        image[labels == label] = value
    return image, labels


def test_dice_counts_overlap_per_label() -> None:
    truth = np.array([0, 1, 1, 2, 2, 2])
    assert dice(truth, truth) == {1: 1.0, 2: 1.0}
    scores = dice(np.array([0, 1, 2, 2, 2, 0]), truth)
    assert scores[1] == pytest.approx(2 * 1 / 3) and scores[2] == pytest.approx(2 * 2 / 6)
    assert np.isnan(dice(truth, truth, labels=[7])[7])


def test_the_fitted_intensity_model_segments_the_reference_perfectly_and_blur_lowers_dice() -> None:
    from scipy import ndimage

    image, labels = phantom()
    region = labels > 0
    model = GaussianLabelModel.fit(image, labels, region)
    np.testing.assert_allclose(model.means, [300.0, 600.0, 1000.0])
    np.testing.assert_array_equal(model.segment(image, region), labels)
    blurred = ndimage.gaussian_filter(image, 1.2)
    scores = segmentation_dice({"blurred": blurred, "exact": image}, image, np.ones(image.shape, bool), "labels",
                               labels)
    assert scores["exact"] == {1: 1.0, 2: 1.0, 3: 1.0} and scores["reference"] == scores["exact"]
    assert all(0.5 < scores["blurred"][label] < 0.99 for label in (1, 2, 3))


def test_otsu_three_classes_recover_the_phantoms_tissues() -> None:
    image, labels = phantom()
    noisy = image + np.random.default_rng(0).normal(0, 20, image.shape).astype(np.float32)
    model = ThresholdModel.fit_otsu(noisy, labels > 0)
    assert 300 < model.thresholds[0] < 600 < model.thresholds[1] < 1000
    assert min(dice(model.segment(noisy, labels > 0), labels).values()) > 0.99
    scores = segmentation_dice({"sr": noisy}, noisy, labels > 0, "tissue3")
    assert scores["sr"] == {1: 1.0, 2: 1.0, 3: 1.0} and "reference" not in scores
    with pytest.raises(InputError, match="label map"):
        segmentation_dice({"sr": noisy}, noisy, labels > 0, "labels")


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("phantom")
    image, labels = phantom()
    grid = Grid(image.shape, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    return (write_volume(Volume(image, grid), folder / "phantom.nii.gz"),
            write_volume(Volume(labels.astype(np.int16), grid), folder / "phantom_labels.nii.gz"))


def test_evaluate_with_labels_prints_dice_of_every_method(phantom_files, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture, single_thread) -> None:
    image_path, label_path = phantom_files
    model = str(make_tiny_model(tmp_path / "tiny-x2.safetensors"))
    common = ["evaluate", str(image_path), "--model", model, "--device", "cpu", "--kind", "kspace", "--noise", "0"]
    assert main([*common, "--labels", str(label_path), "--csv", str(tmp_path / "t.csv")]) == 0
    table = capsys.readouterr().out
    assert "| volume | acquisition | label | DICE zero-fill | DICE B-spline | DICE SR | DICE reference (ceiling) |" \
        in table
    rows = {line.split(" | ")[2]: line.split(" | ")[3:] for line in table.splitlines()
            if line.startswith("| phantom.nii.gz | kspace, noise 0 | ") and "DICE" not in line and line.count("|") == 8}
    assert sorted(rows) == ["1", "2", "3", "mean"]
    for label in ("1", "2", "3"):
        zerofill, bspline, sr, ceiling = (float(v.strip(" |")) for v in rows[label])
        assert ceiling == 1.0 and 0.5 < bspline < 1.0 and 0.5 < zerofill < 1.0 and 0.5 < sr < 1.0
    header = (tmp_path / "t.csv").read_text().splitlines()[0]
    assert "dice_sr_1" in header and "dice_reference_3" in header

    assert main([*common, "--segment", "tissue3", "--json"]) == 0
    [volume] = json.loads(capsys.readouterr().out)["volumes"]
    assert sorted(volume["dice"]) == ["baseline", "sr", "zerofill"]
    assert sorted(volume["dice"]["sr"]) == ["1", "2", "3"]


def test_a_label_map_that_does_not_fit_is_refused(phantom_files, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    image_path, _ = phantom_files
    image, labels = phantom()
    other = write_volume(Volume(labels.astype(np.int16), Grid(labels.shape, (2.0, 1.0, 1.0), (0.0, 0.0, 0.0),
                                                                np.eye(3))), tmp_path / "other_grid.nii.gz")
    fractional = write_volume(Volume(image / 7.0, Grid(labels.shape, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))),
                              tmp_path / "fractional.nii.gz")
    model = str(make_tiny_model(tmp_path / "tiny-x2.safetensors"))
    for labels_path, message in [(other, "not on the grid"), (fractional, "not a label map")]:
        assert main(["evaluate", str(image_path), "--model", model, "--device", "cpu", "--labels",
                     str(labels_path)]) == 1
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error
