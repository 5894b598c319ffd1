"""The output maps of an enhance run, declared once (no torch: the command line and Slicer read this at once).

Each row of :data:`OUTPUT_MAPS` says everything the front ends need about one map: its key (the one name the code
uses: ``EnhanceResult.maps``, ``enhance_file(outputs=...)``, ``result.paths``, the Slicer nodes by role), the role
written in its provenance, the word in Slicer node names and figure titles, its grid, its colour map, whether it
is computed only on request, its command-line option and the file name a background run gives it.

===========  ===============  ===========  =====  ================  ========  =================
key          provenance role  label        grid   colour map        optional  option
===========  ===============  ===========  =====  ================  ========  =================
sr           super-resolved   SR           fine   (as the input)    no        OUTPUT (position)
baseline     baseline         baseline     fine   (as the input)    no        ``--baseline``
difference   difference       difference   fine   DivergingBlueRed  no        ``--difference``
consistency  consistency      consistency  input  Inferno           no        ``--consistency``
uncertainty  uncertainty      uncertainty  fine   Viridis           yes       ``--uncertainty``
===========  ===============  ===========  =====  ================  ========  =================

``--companions`` writes baseline, difference and consistency beside each output as ``<name>_<key><ext>``.

An optional map is computed only when asked for: its key is also the :func:`.enhance.enhance_volume` flag that asks
for it (``uncertainty=True``), and the Slicer module's parameter node has a boolean of that name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Grids a map lives on: ``fine`` is the upsampled grid of the result, ``input`` the grid of the input volume.
Grid = Literal["fine", "input"]


@dataclass(frozen=True)
class OutputMap:
    """One output map of an enhance run.

    Attributes:
        key: the name used throughout the code and in ``--json`` ``outputs`` (``"difference"``).
        provenance_role: the ``MRISuperRes.role`` written into the map's metadata (``"super-resolved"``).
        label: the word in new Slicer node names (``<input>_<label>_x<scale>``) and figure titles (``"SR"``).
        grid: ``"fine"`` (the result's grid) or ``"input"`` (the input's grid).
        colors: name of the Slicer colour table it is shown with; ``None`` shows it like the input.
        signed: its values have a sign, so its colour window is centred at 0 (``[-p, p]`` instead of ``[0, p]``).
        optional: computed only on request (the :func:`.enhance.enhance_volume` flag named ``key``).
        companion: written beside each output with ``--companions`` as ``<name>_<key><ext>``.
        help: the command-line option's help (``None`` for the SR, the positional OUTPUT).
        process_file: its file in a background run's temporary folder (NRRD keeps the provenance key-values).
    """

    key: str
    provenance_role: str
    label: str
    grid: Grid
    colors: str | None
    signed: bool
    optional: bool
    companion: bool
    help: str | None
    process_file: str

    @property
    def option(self) -> str | None:
        """The command-line option naming its file (``"--baseline"``); ``None`` for the SR (the OUTPUT)."""
        return None if self.help is None else f"--{self.key}"

    @property
    def parameter(self) -> str:
        """The Slicer module's parameter-node field keeping its node (``"differenceVolume"``)."""
        return f"{self.key}Volume"


SR = OutputMap("sr", "super-resolved", "SR", "fine", None, signed=False, optional=False, companion=False,
               help=None, process_file="sr.nrrd")
BASELINE = OutputMap("baseline", "baseline", "baseline", "fine", None, signed=False, optional=False, companion=True,
                     help="also write the cubic B-spline upsampling here", process_file="baseline.nrrd")
DIFFERENCE = OutputMap("difference", "difference", "difference", "fine", "DivergingBlueRed", signed=True,
                       optional=False, companion=True, help="also write SR minus baseline here",
                       process_file="difference.nrrd")
CONSISTENCY = OutputMap("consistency", "consistency", "consistency", "input", "Inferno", signed=False, optional=False,
                        companion=True, help="also write |degrade(network output) - input| on the input grid here (the "
                        "network's disagreement with the measured data, before the data-consistency projection)",
                        process_file="consistency.nrrd")
UNCERTAINTY = OutputMap("uncertainty", "uncertainty", "uncertainty", "fine", "Viridis", signed=False, optional=True,
                        companion=False, help="also write the spread of a test-time flip ensemble here (8 passes; the "
                        "SR becomes their mean)", process_file="uncertainty.nrrd")

#: Every output map, in the order they are listed, planned and written.
OUTPUT_MAPS: tuple[OutputMap, ...] = (SR, BASELINE, DIFFERENCE, CONSISTENCY, UNCERTAINTY)

#: The maps by key.
BY_KEY: dict[str, OutputMap] = {output.key: output for output in OUTPUT_MAPS}

#: Keys of every map, in table order.
OUTPUT_KEYS: tuple[str, ...] = tuple(BY_KEY)

#: Keys of the maps written beside each output with ``--companions``.
COMPANION_KEYS: tuple[str, ...] = tuple(output.key for output in OUTPUT_MAPS if output.companion)

#: Keys of the maps computed only on request.
OPTIONAL_KEYS: tuple[str, ...] = tuple(output.key for output in OUTPUT_MAPS if output.optional)


def output_map(key: str) -> OutputMap:
    """The map called ``key``.

    Raises:
        KeyError: no such map (the message lists the known keys).
    """
    try:
        return BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown output map {key!r}; known: {', '.join(OUTPUT_KEYS)}") from None


def companions_help() -> str:
    """The ``--companions`` help, naming the companion maps and their file names."""
    names = list(COMPANION_KEYS)
    listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
    files = ", ".join(f"<name>_{key}" for key in names)
    return f"write {listed} beside each output ({files})"
