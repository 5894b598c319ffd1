"""Train a model on volume nodes of a scene: the MRML side of the MRISuperResTraining module (no Qt).

Public entry::

    from MRISuperResLib.slicer.training import TrainingLogic, TrainingPair, TrainingSettings

    logic = TrainingLogic(scene)
    pairs = [TrainingPair(t1_node), TrainingPair(t1b_node, low=t2_thick_node), TrainingPair(t1c_node)]
    logic.register_pair(pairs[1])             # optional: shows the aligned low-res over the high-res, metric
    job = logic.prepare(pairs, TrainingSettings(name="my-x2", output_folder=folder, steps=2000))
    logic.start(job)                          # background process; returns at once
    status = logic.poll()                     # call every second or so (the widget's QTimer does)
    logic.stop() / logic.resume()             # the state is saved on stop; resume continues exactly
    status = logic.wait()                     # blocking mode for scripts and tests

What happens, and where it is written:

* **Pairs to files** (:mod:`.prepare`, :mod:`.subjects`, :mod:`.job`). :meth:`TrainingLogic.prepare` writes every
  pair's volumes as uncompressed NRRD through Slicer's C++ writer into ``<output_folder>/runs/<name>/data/`` (the
  user's nodes are only read; a fraction of a second per volume on the GUI thread), and a training config
  ``train.yaml`` beside them: :meth:`TrainingSettings.train_config` builds the trainer's ``TrainConfig``, checked
  by the trainer's own reader before anything is written. A row with a low-resolution node is a *real pair*: the
  low-resolution scan is registered onto the high-resolution one (SimpleITK rigid + affine by Mattes mutual
  information) by the training process, in the background; a pair aligned beforehand (:mod:`.registration`:
  :meth:`TrainingLogic.register_pair` with SimpleITK, or BRAINSFit when the desktop module hands one in, or
  :class:`RegistrationRun` in a background process) is written aligned, on its own voxel grid placed in the
  high-resolution frame. A row without one is *simulated*: the trainer degrades the high-resolution scan itself
  (k-space truncation, box or Gaussian slice profile, with noise). Validation subjects are validated on inputs
  simulated from their high-resolution volume (the trainer's validation), so a real pair held out for validation
  contributes its high-resolution scan only.
* **Training** (:mod:`.logic`). :meth:`TrainingLogic.start` runs ``mrisuperres train --config train.yaml`` through
  the modules' background-process runner (:class:`~..runner.BackgroundProcess`: own process group, no console
  window; its output in ``process.log``); Slicer is never blocked. Stop asks the trainer itself (not Slicer's
  ``PythonSlicer`` launcher in between) to stop: it saves its state after the current step and keeps
  ``best.safetensors``, and the run counts as running until that trainer is gone; resume passes ``--resume``.
* **Progress** (:mod:`.monitor`). :meth:`TrainingLogic.poll` reads the trainer's ``log.csv`` as it grows into two
  table nodes (loss; validation PSNR of the model and of the B-spline baseline) plotted by plot series in two plot
  chart nodes, and reports step, ETA and the best validation PSNR (:class:`TrainingStatus`).
* **Publishing** (:mod:`.publish`). Each time the best checkpoint improves, and when training ends, the model is
  copied to ``<output_folder>/<name>.safetensors`` with a Markdown card, and ``output_folder`` is registered as a
  user model folder (:func:`~...engine.model_zoo.register_model_folder`): the model is then listed by
  :func:`~...engine.model_zoo.list_models` and enhances by name (``EnhanceLogic(scene).enhance(node, model=name)``).
* **Presets** (:mod:`.presets`): the model families and sizes the module offers; loading that module imports
  nothing else, so the Qt module file reads the names while Slicer loads it.

Problems are refused before anything is written, each with an :class:`~...errors.MRISuperResError` that says what
to do: fewer than two subjects (one to train on, one to validate), a removed node, too little free disk space.
A training process that dies is noticed by :meth:`TrainingLogic.poll` (state ``"failed"`` with its last error
line, e.g. a real pair whose registration metric says the scans do not show the same anatomy) and can be
resumed.

Nothing here uses ``slicer.mrmlScene``, ``slicer.app`` or Qt. The names below load their module on first use, so
that importing :mod:`.presets` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    ".presets": ("DEFAULT_PRESET", "PRESETS", "PRESET_NAMES", "Preset"),
    ".job": ("CONFIG_FILE", "DEGRADATIONS", "NAME_PATTERN", "PROCESS_LOG", "RUNS_FOLDER", "DataLists", "TrainingJob",
             "TrainingPair", "TrainingSettings", "parse_patch_size", "parse_training_scale"),
    ".subjects": ("WEIGHT_COPIES", "subjects_from_folder"),
    ".prepare": ("FREE_SPACE_MARGIN", "disk_free_bytes"),
    ".registration": ("BrainsFitRunner", "RegistrationOutcome", "RegistrationRun", "mutual_information",
                      "show_overlay", "transform_from_node_matrix"),
    ".monitor": ("LOSS_VIEW_TAG", "PSNR_VIEW_TAG", "TRAINING_LAYOUT_ID", "TRAINING_LAYOUT_XML", "TrainingNodes",
                 "TrainingStatus", "format_duration", "read_log", "show_training_layout"),
    ".logic": ("TrainingLogic",),
    "..runner": ("EXIT_INTERRUPTED", "LIBRARY_PARENT", "BackgroundProcess", "default_python", "last_error_line"),
}

_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
