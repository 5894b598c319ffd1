"""The steps of the MRISuperResTraining module's self-test (``MRISuperResTrainingTest``, run by Slicer's
"Reload and Test" and by ctest): a temporary settings folder, synthetic subjects, and the checks of the pairs
table and of the register-train-enhance flow in real Slicer.

Engine imports stay inside the functions: a build machine without PyTorch still loads this module.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import tempfile
import time
import unittest

import slicer

from .training_pairs import VALIDATION_COLUMN


class SelfTestEnvironment:
    """An empty scene, model folders registered in a temporary settings folder, and the view layout restored
    afterwards (``MRISUPERRES_CONFIG_DIR`` points at ``<folder>/settings`` meanwhile)."""

    def __init__(self) -> None:
        slicer.mrmlScene.Clear()
        self.folder = pathlib.Path(tempfile.mkdtemp(prefix="MRISuperResTrainingTest"))
        self._savedConfigDir = os.environ.get("MRISUPERRES_CONFIG_DIR")
        layoutManager = slicer.app.layoutManager()
        self._savedLayout = layoutManager.layout if layoutManager is not None else None
        os.environ["MRISUPERRES_CONFIG_DIR"] = str(self.folder / "settings")

    def restore(self) -> None:
        """Put the settings folder and the layout back; delete the temporary folder."""
        if self._savedConfigDir is None:
            os.environ.pop("MRISUPERRES_CONFIG_DIR", None)
        else:
            os.environ["MRISUPERRES_CONFIG_DIR"] = self._savedConfigDir
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None and self._savedLayout is not None:
            layoutManager.setLayout(self._savedLayout)
        shutil.rmtree(self.folder, ignore_errors=True)


def addSubject(name: str, seed: int):
    """A smooth synthetic head-like volume node (no data is downloaded): 12 Gaussian blobs of different
    intensities on a 36 x 40 x 36 (k, j, i) grid of 2 mm voxels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    k, j, i = np.mgrid[0:36, 0:40, 0:36].astype(np.float32)
    array = np.zeros(k.shape, np.float32)
    for _blob in range(12):
        centre = rng.uniform([8, 8, 8], [28, 32, 28])
        radius = rng.uniform(3, 8)
        array += rng.uniform(50, 200) * np.exp(-((k - centre[0]) ** 2 + (j - centre[1]) ** 2 +
                                                 (i - centre[2]) ** 2) / (2 * radius ** 2))
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.CreateDefaultDisplayNodes()
    slicer.util.updateVolumeFromArray(node, array)
    node.SetSpacing(2.0, 2.0, 2.0)
    return node


def checkWidgetEditsPairs(test: unittest.TestCase, widget) -> None:
    """Add pair / remove pair edit the parameter node's pairs through the module widget's table."""
    addSubject("subject0", 0)
    widget.initializeParameterNode()
    parameterNode = widget.logic.getParameterNode()
    parameterNode.pairs = []
    widget.onAddPair()
    test.assertEqual(len(parameterNode.pairs), 1)
    test.assertEqual(widget.ui.pairsTableWidget.rowCount, 1)
    test.assertEqual(parameterNode.pairs[0].highResVolume.GetName(), "subject0")
    widget.ui.pairsTableWidget.cellWidget(0, VALIDATION_COLUMN).checked = True
    test.assertTrue(parameterNode.pairs[0].validation)
    widget.onRemovePair()
    test.assertEqual(len(parameterNode.pairs), 0)


def checkRegisterAndTrain(test, folder: pathlib.Path) -> None:
    """Register a real pair, train a tiny model in the background, enhance with it by name (``test`` is the
    ``ScriptedLoadableModuleTest``: its ``delayDisplay`` shows progress). Skips without PyTorch and MONAI."""
    missing = [name for name in ("torch", "monai") if importlib.util.find_spec(name) is None]
    if missing:  # extension build machines have no PyTorch: nothing to train with
        test.skipTest(f"needs {', '.join(missing)} (installed on first use of the module)")

    import numpy as np

    from MRISuperResLib.engine import model_zoo
    from MRISuperResLib.slicer.outputs import EnhanceLogic
    from MRISuperResLib.slicer.training import TrainingLogic, TrainingPair, TrainingSettings, show_training_layout

    subjects = [addSubject(f"subject{index}", index) for index in range(3)]
    # A real pair's low-resolution partner: every other voxel of subject0, shifted by a few millimetres.
    low = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "subject0_thick")
    low.CreateDefaultDisplayNodes()
    slicer.util.updateVolumeFromArray(low, slicer.util.arrayFromVolume(subjects[0])[::2, ::2, ::2].copy())
    low.SetSpacing(4.0, 4.0, 4.0)
    low.SetOrigin(3.0, -2.0, 1.5)
    before = slicer.util.arrayFromVolume(subjects[0]).copy()

    training = TrainingLogic(slicer.mrmlScene)
    outcome = training.register_pair(TrainingPair(subjects[0], low))
    test.assertLess(outcome.metric, -0.1)
    test.delayDisplay(f"Registered: Mattes mutual information {outcome.metric:.3f}")

    settings = TrainingSettings(
        name="selftest-tiny", output_folder=folder / "models",
        model_config={"channels": 8, "blocks": 1, "upsample_features": 2, "global_skip": "baseline"},
        patch_size=(8, 8, 8), batch_size=2, steps=8, validate_every=4, log_every=1, checkpoint_every=1,
        threads=1, device="cpu", validation_crop=(12, 12, 12))
    pairs = [TrainingPair(subjects[0], low), TrainingPair(subjects[1]), TrainingPair(subjects[2])]
    job = training.prepare(pairs, settings)
    training.start(job)
    show_training_layout(slicer.mrmlScene, training.ensure_nodes())
    deadline = time.monotonic() + 600
    status = training.poll()
    while status.running and time.monotonic() < deadline:
        slicer.app.processEvents()
        time.sleep(0.5)
        status = training.poll()
    test.assertEqual(status.state, "finished", status.message)
    test.assertIn("selftest-tiny", [entry.name for entry in model_zoo.list_models()])
    test.assertEqual(slicer.util.arrayFromTableColumn(training.nodes.loss_table, "step")[-1], 8)

    nodes = EnhanceLogic(slicer.mrmlScene).enhance(subjects[1], model="selftest-tiny", scale=2, device="cpu")
    test.assertEqual(nodes.sr.GetImageData().GetDimensions(), (72, 80, 72))
    test.assertTrue(np.array_equal(slicer.util.arrayFromVolume(subjects[0]), before))
    test.delayDisplay("Training test passed")
