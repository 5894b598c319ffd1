"""The options of an enhance run, declared once (no torch): the command line's flags, the Slicer panel's values
and the keyword arguments of :func:`.enhance.enhance_volume` all come from :class:`EnhanceOptions`.

* ``mrisuperres enhance`` adds the flags with :func:`add_arguments` and reads them back with
  :meth:`EnhanceOptions.from_namespace`;
* the Slicer module reads its parameter node with :meth:`EnhanceOptions.from_parameters`, and its background run
  passes them to the child with :meth:`EnhanceOptions.to_argv`;
* both hand :meth:`EnhanceOptions.engine_kwargs` to the engine.

Each field's metadata holds its flag, help, metavar and, when the panel offers it under another name, the name of
its parameter-node field (by default the field's name in camelCase: ``mask_background`` -> ``maskBackground``).
A new option is one field here (plus its widget and parameter-node field for the panel).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from typing import Any

from ..errors import MRISuperResError

#: The ``precision`` values of inference: ``auto`` (half precision on CUDA GPUs, float32 elsewhere), ``float32``
#: (no autocast anywhere), ``bfloat16`` (also on CPUs with bfloat16 instructions).
PRECISIONS = ("auto", "float32", "bfloat16")


def _option(default: Any, flag: str, help: str, *, kind: type | None = None, metavar: str | None = None,
            parameter: str | None = None, from_parameter: Callable[[Any], Any] | None = None,
            negative: tuple[str, str] | None = None, always: bool = False, recorded: bool = False) -> Any:
    """A field with its command-line and panel description.

    ``flag``: the option (``--tile``); a ``bool`` field is a switch, another takes a value of type ``kind``.
    ``negative``: ``(flag, help)`` of the switch that sets a tri-state (``None``: as the model says) field false.
    ``parameter``: the panel's parameter-node field when it is not the camelCase name; ``from_parameter``
    converts its value. ``always``: :meth:`EnhanceOptions.to_argv` writes the flag even at its default (so the
    child's command line says it). ``recorded``: the option changes the result's voxels (see
    :meth:`EnhanceOptions.recorded`).
    """
    return field(default=default, metadata={"flag": flag, "help": help, "kind": kind, "metavar": metavar,
                                            "parameter": parameter, "from_parameter": from_parameter,
                                            "negative": negative, "always": always, "recorded": recorded})


@dataclass(frozen=True)
class EnhanceOptions:
    """How to run an enhance: the engine options that do not change which model or scale runs.

    Attributes:
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: the network's arithmetic: ``auto`` (half precision on CUDA GPUs, float32 elsewhere),
            ``float32``, or ``bfloat16`` (also on CPUs with bfloat16 instructions, about twice as fast there; see
            :func:`.device.select_device`).
        flip_ensemble: average the network over the 8 flips of the input (8 passes).
        mask_background: keep the B-spline baseline outside the head; ``None`` follows the model's card.
        projection: the data-consistency projection of the network's output; ``None`` (default): on.
        tile: tile edge in input voxels; ``None`` chooses from free memory.
        overlap: tile overlap fraction in ``[0, 1)``.
        threads: CPU threads for torch; ``None`` keeps torch's default.
        keep_dtype: write the SR in the input's data type (rounded, clipped) instead of float32.
    """

    device: str = _option("auto", "--device", "auto, cpu, cuda, cuda:N or mps [auto]", always=True)
    precision: str = _option(
        "auto", "--precision", "the network's arithmetic: auto (bfloat16/float16 on CUDA GPUs, float32 elsewhere), "
        "float32, or bfloat16 (also on CPUs with AVX512-BF16 or AMX: about 2x faster there, PSNR within 0.01 dB on "
        "the evaluation volumes); --adapt fine-tunes as training does (bfloat16 where the CPU has it) unless float32 "
        "[auto]", metavar="P", recorded=True)
    flip_ensemble: bool = _option(
        False, "--flip-ensemble", "average the network over the 8 flips of the input (test-time ensemble: about "
        "+0.1 dB, 8 passes); --uncertainty implies it", recorded=True)
    mask_background: bool | None = _option(
        None, "--mask-background", "keep the B-spline baseline outside the head, so the network adds nothing there "
        "[default: as the model's card says; on for the shipped models]",
        negative=("--no-mask-background", "let the network change the background too"), recorded=True)
    projection: bool | None = _option(
        None, "--projection", "correct the network's output towards the measured input under the model's forward "
        "model, weighted against the input's noise (data-consistency projection) [default: on]",
        negative=("--no-projection", "write the network's output as it is"), recorded=True)
    tile: int | None = _option(None, "--tile", "tile edge in input voxels [auto from free memory]", kind=int,
                               metavar="N", parameter="tileSize", from_parameter=lambda value: int(value) or None)
    overlap: float = _option(
        0.0, "--overlap", "tile overlap fraction, blended with Gaussian weights [0: tiles carry a halo of real "
        "context as wide as the network sees, so they already join exactly]", kind=float, metavar="F", always=True,
        recorded=True)
    threads: int | None = _option(None, "--threads", "CPU threads [torch default]", kind=int, metavar="N")
    keep_dtype: bool = _option(False, "--keep-dtype", "write the SR volume in the input's data type (rounded, "
                               "clipped)", recorded=True)

    def check(self) -> EnhanceOptions:
        """Return the options after checking them (``precision`` in lower case).

        Raises:
            MRISuperResError: a tile under 4 voxels, an overlap outside ``[0, 1)`` or an unknown precision.
        """
        if self.tile is not None and self.tile < 4:
            raise MRISuperResError(f"--tile {self.tile} is too small; use at least 4 (or leave it out for auto)")
        if not 0.0 <= self.overlap < 1.0:
            raise MRISuperResError(f"--overlap {self.overlap} is outside [0, 1); try 0.25")
        precision = self.precision.strip().lower()
        if precision not in PRECISIONS:
            raise MRISuperResError(f"--precision {self.precision!r} is not understood; use {', '.join(PRECISIONS)}")
        return self if precision == self.precision else replace(self, precision=precision)

    def recorded(self) -> dict[str, Any]:
        """The options that change the result's voxels, by name (a cohort records them in each sidecar and compares
        them on resume); ``device``, ``tile`` and ``threads`` change only the speed (tiles join exactly)."""
        return {spec.name: getattr(self, spec.name) for spec in fields(self) if spec.metadata["recorded"]}

    def engine_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`.enhance.enhance_volume` (and ``enhance_file``)."""
        return asdict(self)

    def to_argv(self) -> list[str]:
        """The ``mrisuperres enhance`` flags that give these options (defaults left out unless the field says
        ``always``), e.g. ``["--device", "cpu", "--overlap", "0.25", "--tile", "32"]``."""
        argv: list[str] = []
        for spec in fields(self):
            value, meta = getattr(self, spec.name), spec.metadata
            if value == spec.default and not meta["always"]:
                continue
            if isinstance(value, bool):
                argv.append(meta["flag"] if value else meta["negative"][0])
            else:
                argv += [meta["flag"], repr(float(value)) if isinstance(value, float) else str(value)]
        return argv

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> EnhanceOptions:
        """The options parsed by a parser that :func:`add_arguments` prepared (unchecked; see :meth:`check`)."""
        return cls(**{spec.name: getattr(args, spec.name) for spec in fields(cls)})

    @classmethod
    def from_parameters(cls, parameters: Any) -> EnhanceOptions:
        """The options an object of panel values holds (the Slicer module's parameter node): each field from the
        attribute named in its metadata or its camelCase name; fields the object lacks keep their defaults."""
        values = {}
        for spec in fields(cls):
            name = spec.metadata["parameter"] or _camel_case(spec.name)
            if hasattr(parameters, name):
                convert = spec.metadata["from_parameter"] or (lambda value: value)
                values[spec.name] = convert(getattr(parameters, name))
        return cls(**values)

    @classmethod
    def split(cls, values: Mapping[str, Any]) -> tuple[EnhanceOptions, dict[str, Any]]:
        """``values`` as options (the keys that are fields) and the rest."""
        names = {spec.name for spec in fields(cls)}
        chosen = {key: value for key, value in values.items() if key in names}
        return cls(**chosen), {key: value for key, value in values.items() if key not in names}


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add every option's flag to ``parser`` (``dest`` = the field name)."""
    for spec in fields(EnhanceOptions):
        meta = spec.metadata
        if meta["negative"] is not None:
            group = parser.add_mutually_exclusive_group()
            group.add_argument(meta["flag"], dest=spec.name, action="store_true", default=None, help=meta["help"])
            group.add_argument(meta["negative"][0], dest=spec.name, action="store_false", help=meta["negative"][1])
        elif _default(spec) is False:
            parser.add_argument(meta["flag"], dest=spec.name, action="store_true", help=meta["help"])
        else:
            parser.add_argument(meta["flag"], dest=spec.name, default=_default(spec), help=meta["help"],
                                metavar=meta["metavar"], **({"type": meta["kind"]} if meta["kind"] else {}))


def _default(spec: Field) -> Any:
    return None if spec.default is MISSING else spec.default


def _camel_case(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)
