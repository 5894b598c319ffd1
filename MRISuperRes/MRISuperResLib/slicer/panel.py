"""The MRISuperRes module's logic without Qt: what the Enhance panel offers and checks, and the enhance itself.

Public entry (documented in the README)::

    from MRISuperResLib.slicer.panel import EnhanceLogic
    result = EnhanceLogic(scene).enhance(inputVolumeNode, model="default", scale=2.0, device="auto")
    result.srVolumeNode, result.baselineVolumeNode, result.differenceVolumeNode, result.consistencyVolumeNode

:class:`EnhanceLogic` (from :mod:`MRISuperResLib.slicer.outputs`) runs in-process and blocks; :mod:`MRISuperResLib.slicer.enhance_process` runs the
same work in a background process for the GUI. The functions here decide what the GUI shows and enables:

* :func:`input_problem` -- why a node cannot be enhanced (``None`` when it can);
* :func:`model_choices` -- the models a user can pick (shipped ones, then any extra model files), with a one-line
  description and the scales each supports; :func:`scale_problem` -- why a model cannot do a scale;
* :func:`thick_slice_scale` -- the per-axis scale (``i, j, k`` order) that restores a volume's thick slices to
  near-isotropic voxels;
* :func:`device_choices` / :class:`DeviceProbe` -- Auto, CPU, each CUDA GPU by name, Apple MPS, asked of a child
  process.

Nothing here uses ``slicer.mrmlScene``, ``slicer.app`` or Qt, and nothing imports torch or MONAI: model lists come
from the model files' headers (:mod:`MRISuperResLib.engine.model_header`), so that opening the module is instant.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..imaging.geometry import Scale, format_scale, isotropic_scale
from ..engine.model_zoo import DEFAULT_MODEL, ModelEntry, check_scale, resolve_model, shipped_models, user_models
from .outputs import EnhanceLogic, EnhanceNodes
from .volumes import NodeProblem, scalar_volume_problem

__all__ = [
    "EnhanceLogic",
    "EnhanceNodes",
    "ModelChoice",
    "device_choices",
    "DeviceProbe",
    "find_model_choice",
    "model_file_problem",
    "input_problem",
    "model_choices",
    "scale_problem",
    "start_enhance_process",
    "thick_slice_scale",
    "SCALE_PRESETS",
    "SCALE_CHOICES",
]

#: Isotropic factors offered as presets in the panel (each also needs a model that supports it).
SCALE_PRESETS: tuple[float, ...] = (2.0, 3.0, 4.0)

#: The panel's scale selector entries, ``(label, value)``: the presets, then "thick" (resolved against the input's
#: spacing by :func:`thick_slice_scale`) and "perAxis" (the factors typed in the line edit).
SCALE_CHOICES: tuple[tuple[str, str], ...] = (
    *((f"x{format_scale((factor,) * 3)}", format_scale((factor,) * 3)) for factor in SCALE_PRESETS),
    ("Restore thick slices to isotropic", "thick"),
    ("Per-axis (i,j,k)", "perAxis"),
)


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model selector.

    Attributes:
        value: what to pass as ``model`` to the logic: ``"default"``, a shipped name or a file path.
        label: the text shown in the selector.
        description: one line: the model's description and the scales it supports.
        entry: the model file and metadata (``None`` for ``"default"``, resolved per scale).
    """

    value: str
    label: str
    description: str
    entry: ModelEntry | None = None

    def supports(self, scale: Scale) -> bool:
        return scale_problem(self, scale) is None


def model_choices(extra_files: Iterable[str | os.PathLike] = ()) -> list[ModelChoice]:
    """``"default"`` first, then every shipped model, the models trained into the user model folders (by name; see
    :func:`~MRISuperResLib.engine.model_zoo.user_models`), then the model files the user browsed to.

    Unreadable extra files are skipped (they are reported when chosen, by :func:`scale_problem`).
    """
    from ..engine.model_header import read_metadata
    from ..engine.model_metadata import ModelMetadata
    from ..errors import MRISuperResError

    shipped = shipped_models()
    choices = [ModelChoice(DEFAULT_MODEL, "Default (chosen by scale)",
                           "the shipped model suited to the scale: "
                           + "; ".join(f"{e.name} ({e.scales_text()})" for e in shipped if e.default_for))]
    choices += [_choice(entry.name, entry) for entry in shipped]
    choices += [_choice(entry.name, entry) for entry in user_models()]
    listed = {choice.entry.path.resolve() for choice in choices if choice.entry is not None}
    for path in extra_files:
        if Path(path).resolve() in listed:
            continue
        try:
            metadata = ModelMetadata.from_header(read_metadata(path))
            entry = ModelEntry(metadata.name or Path(path).stem, Path(path), metadata)
        except (MRISuperResError, OSError, ValueError):
            continue
        choices.append(_choice(os.fspath(path), entry))
    return choices


def find_model_choice(choices: Iterable[ModelChoice], path: str | os.PathLike) -> ModelChoice | None:
    """The choice whose model file is ``path`` (same file after resolving links and ``..``), else ``None``.

    Shipped models and models in registered folders are listed by name; this finds them from their file (what
    Browse... and the Training module's hand-off give).
    """
    target = Path(path).expanduser().resolve()
    return next((choice for choice in choices if choice.entry is not None and choice.entry.path.resolve() == target),
                None)


def model_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a usable MRISuperRes model file (missing, pickled, corrupted, no metadata), else
    ``None``. Reads the file's header only."""
    from ..engine.model_header import read_metadata
    from ..errors import MRISuperResError

    try:
        read_metadata(path)
    except (MRISuperResError, OSError) as error:
        return str(error)
    return None


def _choice(value: str, entry: ModelEntry) -> ModelChoice:
    return ModelChoice(value, entry.name, f"{entry.description} - scales: {entry.scales_text()}", entry)


def scale_problem(choice: ModelChoice | str, scale: Scale) -> str | None:
    """Why the model cannot produce ``scale`` (per-axis, ``i, j, k``), or ``None`` when it can."""
    from ..errors import MRISuperResError

    value = choice.value if isinstance(choice, ModelChoice) else choice
    try:
        check_scale(resolve_model(value, scale), scale)
    except MRISuperResError as error:
        return str(error)
    return None


def adapt_problem(scale: Scale) -> str | None:
    """Why "Adapt to this scan" cannot run at ``scale`` (per-axis, ``i, j, k``), or ``None`` when it can: adapting
    learns the through-plane direction from the scan's own finer in-plane detail, so exactly one axis may be
    upsampled (the same rule as ``mrisuperres enhance --adapt``)."""
    if sum(factor > 1 for factor in scale) == 1:
        return None
    return (f"Adapt to this scan needs thick slices along one axis (a scale such as 1,1,4), not "
            f"{format_scale(scale)}; untick it to enhance at this scale")


def input_problem(node: object) -> str | None:
    """Why ``node`` cannot be enhanced (nothing selected, label map, vector/RGB, 2D, no voxels), else ``None``."""
    problem = scalar_volume_problem(node)
    if problem is NodeProblem.MISSING:
        return "Select an input volume."
    name = node.GetName()  # type: ignore[attr-defined]
    if problem is NodeProblem.LABEL_MAP:
        return f"{name} is a label map (segmentation); select an MRI intensity volume."
    if problem is NodeProblem.NOT_SCALAR:
        return f"{name} is not a scalar volume; select a single-component MRI volume."
    if problem is NodeProblem.NO_VOXELS:
        return f"{name} has no voxels; load the volume's data first."
    image = node.GetImageData()  # type: ignore[attr-defined]
    if image.GetNumberOfScalarComponents() != 1:
        return f"{name} has {image.GetNumberOfScalarComponents()} components per voxel; select a scalar volume."
    dimensions = image.GetDimensions()
    if min(dimensions) < 2:
        return (f"{name} is 2D ({' x '.join(map(str, dimensions))} voxels); super-resolution needs a 3D "
                "volume.")
    return None


def start_enhance_process(scene: object, parameter_node: object, scale: Scale, python: str, temp_root: str):
    """Start enhancing the parameter node's input in a background process and return the running process.

    ``parameter_node`` is the module's ``MRISuperResParameterNode`` (model, options, optional maps, outputs to
    reuse); ``scale`` is per-axis in IJK order. The process (:class:`.enhance_process.EnhanceProcess`) is polled by
    the caller; its ``finish()`` adds the outputs to ``scene``, ``cancel()`` kills the process tree and adds nothing.

    Raises:
        MRISuperResError: the request cannot run (the engine's one-line message); nothing was added to the scene.
        OSError: ``python`` cannot be launched.
    """
    from ..engine.options import EnhanceOptions
    from ..engine.outputs import OUTPUT_MAPS
    from .enhance_process import EnhanceProcess

    # An optional map (uncertainty) is computed, and its node reused, only while its checkbox is on.
    wanted = [output for output in OUTPUT_MAPS if not output.optional or getattr(parameter_node, output.key)]
    reuse = None
    if parameter_node.reuseOutputs and parameter_node.srVolume and \
            parameter_node.outputsInput is parameter_node.inputVolume:
        reuse = EnhanceNodes({output.key: getattr(parameter_node, output.parameter) for output in wanted})
    process = EnhanceProcess(
        EnhanceLogic(scene), parameter_node.inputVolume, model=parameter_node.model, scale=scale,
        options=EnhanceOptions.from_parameters(parameter_node),
        maps=[output.key for output in wanted if output.optional], outputs=reuse,
        adapt_seconds=parameter_node.adaptSeconds if parameter_node.adaptToScan else None,
        python=python, temp_root=temp_root)
    process.start()
    return process


def thick_slice_scale(spacing: Sequence[float], max_factor: int = 5) -> Scale | None:
    """The per-axis scale (``i, j, k`` order) that restores a volume's thick slices: :func:`.geometry.isotropic_scale`
    (spacing ``(1, 1, 4)`` mm gives ``(1, 1, 4)``; ``None`` when the volume is already near-isotropic)."""
    return isotropic_scale(spacing, max_factor)


def scale_label(scale: Scale) -> str:
    """Text for a scale: ``x2`` or ``x1,1,4``."""
    return f"x{format_scale(scale)}"


#: Always offered, before (and whatever) the device probe finds.
BASE_DEVICE_CHOICES: list[tuple[str, str]] = [("Auto (best available)", "auto"), ("CPU", "cpu")]

#: Run by :class:`DeviceProbe` in a child process: prints the accelerators torch sees as JSON ``[[label, value]]``.
_DEVICE_PROBE_CODE = """
import json
choices = []
try:
    import torch
except ImportError:
    torch = None
if torch is not None:
    if torch.cuda.is_available():
        choices += [["GPU %d: %s" % (i, torch.cuda.get_device_name(i)), "cuda:%d" % i]
                    for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        choices.append(["Apple GPU (MPS)", "mps"])
print(json.dumps(choices))
"""


class DeviceProbe:
    """Asks a child process which devices torch sees, so that Slicer's own process never imports torch nor
    initialises CUDA (the work runs in child processes anyway).

    ``probe = DeviceProbe().start()``, then :meth:`poll` (non-blocking) until it returns the choices; or
    :meth:`result` to wait. Without torch, or when the child fails, the choices are Auto and CPU.
    """

    def __init__(self, python: str | os.PathLike | None = None) -> None:
        from .runner import default_python

        self.python = str(python) if python is not None else default_python()
        self._process: subprocess.Popen[str] | None = None
        self._choices: list[tuple[str, str]] | None = None

    def start(self) -> DeviceProbe:
        from .runner import child_environment, new_process_group_options

        self._process = subprocess.Popen([self.python, "-c", _DEVICE_PROBE_CODE], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                         env=child_environment(), **new_process_group_options())
        return self

    def poll(self) -> list[tuple[str, str]] | None:
        """The device choices once the child has answered, else ``None`` (never blocks)."""
        if self._choices is None and self._process is not None and self._process.poll() is not None:
            self._choices = list(BASE_DEVICE_CHOICES)
            try:
                found = json.loads((self._process.stdout.read() if self._process.stdout else "") or "[]")
                self._choices += [(str(label), str(value)) for label, value in found]
            except (ValueError, TypeError):
                pass
        return self._choices

    def result(self, timeout: float = 120.0) -> list[tuple[str, str]]:
        """Wait (up to ``timeout`` seconds) for the choices; Auto and CPU when the child does not answer."""
        if self._process is None:
            self.start()
        assert self._process is not None
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        return self.poll() or list(BASE_DEVICE_CHOICES)


def device_choices(python: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """``(label, value)`` pairs: Auto, CPU, each CUDA GPU by name (``cuda:N``), MPS when present.

    Asked of a child process (:class:`DeviceProbe`, blocking): this process never imports torch. Without torch
    only Auto and CPU are offered.
    """
    return DeviceProbe(python).result()
