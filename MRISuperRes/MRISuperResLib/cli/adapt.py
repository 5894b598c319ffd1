"""``mrisuperres enhance --adapt [SECONDS]``: the command-line side of per-scan adaptation (see :mod:`.adapt`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..imaging.geometry import Scale


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the adaptation options to the ``enhance`` parser."""
    parser.add_argument(
        "--adapt", nargs="?", type=float, const=180.0, default=None, metavar="SECONDS",
        help="first fine-tune the thick-slice model on this scan's own in-plane detail for SECONDS [180] "
             "(slower; thick-slice scales such as 1,1,4 only)")
    parser.add_argument("--adapt-steps", type=int, metavar="N",
                        help="adaptation step budget (alone: adapt for N steps; with --adapt, whichever ends first; "
                        "reproducible for a seed)")
    parser.add_argument("--adapt-seed", type=int, default=0, metavar="N", help="adaptation seed [0]")
    parser.add_argument("--slice-thickness", type=float, metavar="MM",
                        help="slice thickness (mm) when below the slice spacing (a gap), for --adapt")
    parser.add_argument("--save-adapted", metavar="FILE",
                        help="also save the adapted model as a .safetensors model file (with --adapt)")


def check(args: argparse.Namespace, plans: list[Any], scale: Scale, cohort: bool = False) -> None:
    """Refuse inconsistent adaptation options before any work starts (one-line :class:`InputError`).

    ``scale``: the run's per-axis scale (``i, j, k``); ``cohort``: the run is a cohort (folders, lists), which loads
    one model for every scan.
    """
    adapting = args.adapt is not None or args.adapt_steps is not None
    if not adapting:
        if args.save_adapted or args.slice_thickness is not None:
            raise InputError("--save-adapted and --slice-thickness need --adapt [SECONDS]")
        return
    if cohort:
        raise InputError("--adapt fine-tunes the model to one scan; give one input file (or series folder) per run")
    check_thick_scale(scale, "enhance")
    if args.save_adapted:
        from ..engine.model_header import MODEL_EXTENSION
        from ..imaging.volume_io import check_writable_target

        if len(plans) != 1:
            raise InputError("--save-adapted saves the model adapted to one input; give a single input")
        target = Path(args.save_adapted)
        if target.suffix != MODEL_EXTENSION:
            raise InputError(f"--save-adapted {target.name}: model files end in {MODEL_EXTENSION}")
        check_writable_target(target, args.overwrite, volume_format=False)


def check_thick_scale(scale: Scale, command: str) -> None:
    """Refuse ``--adapt`` for a scale that is not thick slices along one axis (one-line :class:`InputError`;
    ``command`` is named in the advice)."""
    from ..imaging.geometry import format_scale

    if sum(factor > 1 for factor in scale) != 1:
        raise InputError(
            f"--adapt needs thick slices along one axis (a scale such as 1,1,4), not {format_scale(scale)}: an "
            f"isotropic scan has no finer in-plane data to learn from; {command} without --adapt")


def settings_for(args: argparse.Namespace, input_path: Path) -> Any:
    """The :class:`~.adapt.AdaptSettings` for one input (its file's SHA-256 recorded), or ``None`` without --adapt."""
    if args.adapt is None and args.adapt_steps is None:
        return None
    from ..engine.adapt import AdaptSettings
    from ..engine.checkpoint import file_checksum

    return AdaptSettings(seconds=args.adapt, steps=args.adapt_steps, seed=args.adapt_seed,
                         slice_thickness=args.slice_thickness, device=args.device,
                         source_sha256=file_checksum(input_path) if Path(input_path).is_file() else None)


def save(args: argparse.Namespace, result: Any) -> None:
    """Save the adapted model of ``result`` when ``--save-adapted`` asked for it."""
    if args.save_adapted and result.adaptation is not None:
        from ..engine.adapt import save_adapted_model

        save_adapted_model(result.model, args.save_adapted)
        print(f"adapted model saved to {args.save_adapted}", file=sys.stderr)
