"""``mrisuperres n4`` and ``mrisuperres mask``: bias-field correction and head / brain masks of one volume.

Both check every output before any work, never write over their input, write each file completely (staged, flushed
and read back, see :mod:`MRISuperResLib.imaging.verified_write`) or not at all, and stop on bad input with one line. Wired into
:mod:`MRISuperResLib.cli` by :func:`add_parsers` and :data:`HANDLERS`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

N4_EXAMPLES = """examples:
  mrisuperres n4 t1.nii.gz -o t1_n4.nii.gz
  mrisuperres n4 t1_7T.nii.gz -o t1_7T_n4.nii.gz --two-pass --second-mask brain --field t1_7T_bias.nii.gz
  mrisuperres n4 t1_7T.nii.gz -o t1_7T_n4.nii.gz --preset seed002        (the thesis's parameters, two passes)
  mrisuperres n4 t1.nrrd -o t1_n4.nrrd --shrink 2 --iterations 150x4 --convergence 1e-7 --mask brain_mask.nii.gz
"""

MASK_EXAMPLES = """examples:
  mrisuperres mask t1.nii.gz -o t1_brain_mask.nii.gz
  mrisuperres mask t1.nii.gz -o t1_head_mask.nrrd --kind head
  mrisuperres mask t1.nii.gz -o t1_brain.nii.gz --apply        (the skull-stripped image instead of the mask)
"""


def add_parsers(commands: Any) -> None:
    """Add the ``n4`` and ``mask`` subcommands to ``commands`` (the object ``add_subparsers`` returned)."""
    from ..processing.n4 import FIRST_MASKS, SECOND_MASKS, N4Settings

    defaults = N4Settings()
    n4 = commands.add_parser(
        "n4", help="N4 bias-field correction of a volume (one or two passes)",
        description="Remove the smooth intensity bias of INPUT with N4 (SimpleITK), fitted on a shrunk copy and "
        "applied at full resolution, and write the corrected volume (float32) to OUTPUT. With --two-pass, a head "
        "or brain mask is made from the first result and N4 is fitted again inside it (seed 002).",
        epilog=N4_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    n4.add_argument("input", metavar="INPUT", help="volume file or DICOM series folder")
    n4.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="corrected volume")
    n4.add_argument("--field", metavar="FILE", help="also write the multiplicative bias field here")
    n4.add_argument("--preset", choices=("default", "seed002"), default="default",
                    help="start from these settings (seed002: shrink 4, 150x4 iterations, convergence 1e-7, FWHM "
                         "0.18, Wiener noise 0.1, two passes with a brain mask); the options below override them")
    n4.add_argument("--shrink", type=int, help=f"shrink factor of the fit [{defaults.shrink}]")
    n4.add_argument("--iterations", help="iterations per level, e.g. 50,50,30,20 or 150x4 "
                    f"[{','.join(map(str, defaults.iterations))}]")
    n4.add_argument("--convergence", type=float, help=f"convergence threshold [{defaults.convergence:g}]")
    n4.add_argument("--fwhm", type=float, help=f"bias-field FWHM of the histogram sharpening [{defaults.fwhm:g}]")
    n4.add_argument("--wiener-noise", type=float, help=f"Wiener filter noise [{defaults.wiener_noise:g}]")
    n4.add_argument("--mask", help=f"where the first pass is fitted: {', '.join(FIRST_MASKS)}, or a mask file "
                    f"(non-zero inside) [{defaults.mask}]")
    n4.add_argument("--two-pass", action="store_true", default=None, help="fit again inside a mask of the result")
    n4.add_argument("--second-mask", choices=SECOND_MASKS, help=f"mask of the second pass [{defaults.second_mask}]")
    _common(n4)

    mask = commands.add_parser(
        "mask", help="head or brain mask (skull stripping) of a volume",
        description="Write a head or brain mask (uint8, 1 inside) of INPUT, found by thresholds and morphology "
        "(no trained weights); with --apply write INPUT with everything outside the mask set to 0 instead.",
        epilog=MASK_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    mask.add_argument("input", metavar="INPUT", help="volume file or DICOM series folder")
    mask.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="mask (or masked volume) file")
    mask.add_argument("--kind", choices=("brain", "head"), default="brain", help="which mask [brain]")
    mask.add_argument("--apply", action="store_true", help="write the masked volume instead of the mask")
    _common(mask)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--json", action="store_true", help="print machine-readable results on stdout")


def n4_settings(args: argparse.Namespace) -> tuple[Any, Path | None]:
    """The :class:`~MRISuperResLib.processing.n4.N4Settings` of the command line, and the mask file given to ``--mask`` (or ``None``)."""
    import dataclasses

    from ..errors import InputError
    from ..processing.n4 import FIRST_MASKS, SEED_002, N4Settings, parse_iterations

    base = SEED_002 if args.preset == "seed002" else N4Settings()
    changes: dict[str, Any] = {}
    for name in ("shrink", "convergence", "fwhm", "wiener_noise", "two_pass", "second_mask"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    mask_file = None
    if args.mask is not None:
        if args.mask in FIRST_MASKS:
            changes["mask"] = args.mask
        else:
            mask_file = Path(args.mask)
            if not mask_file.exists():
                raise InputError(f"--mask {args.mask} is neither {', '.join(FIRST_MASKS)} nor an existing file")
    try:
        if args.iterations is not None:
            changes["iterations"] = parse_iterations(args.iterations)
        return dataclasses.replace(base, **changes), mask_file
    except ValueError as error:
        raise InputError(str(error)) from None


def run_n4(args: argparse.Namespace) -> int:
    """Run ``mrisuperres n4``; returns the exit status (user errors raise ``MRISuperResError``)."""
    from ..processing.n4 import n4_correct
    from ..processing.masks import mask_on_grid
    from ..imaging.volume_io import read_volume

    settings, mask_file = n4_settings(args)
    targets = {"corrected": Path(args.output)}
    if args.field:
        targets["field"] = Path(args.field)
    written = _check_outputs(args, targets, [p for p in (mask_file,) if p is not None])
    volume = read_volume(args.input)
    mask = mask_on_grid(read_volume(mask_file), volume.grid) if mask_file is not None else None
    if not args.json:
        print(f"N4 on {args.input} ({'two passes' if settings.two_pass else 'one pass'}) ...", file=sys.stderr)
    result = n4_correct(volume, settings, mask)
    provenance = {"role": "n4_corrected", "source": Path(args.input).name, "n4": json.dumps(settings.to_dict())}
    volumes = {"corrected": (result.corrected, provenance, "N4 bias-corrected")}
    if args.field:
        volumes["field"] = (result.field, {**provenance, "role": "n4_bias_field"}, "N4 bias field")
    _write(volumes, written, args)
    summary = {"input": str(args.input), **{role: str(path) for role, path in written.items()},
               **result.summary(settings)}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        low, high = summary["field_p1_p99"]
        seconds = sum(result.seconds)
        print(f"{args.input} -> {written['corrected']}  (bias field {low:.3f} to {high:.3f} in the mask, 1st-99th "
              f"percentile; {len(result.seconds)} pass(es), {seconds:.1f} s)")
    return 0


def run_mask(args: argparse.Namespace) -> int:
    """Run ``mrisuperres mask``; returns the exit status."""
    import numpy as np

    from ..processing.masks import mask_of_kind
    from ..imaging.volume_io import read_volume

    written = _check_outputs(args, {"mask": Path(args.output)}, [])
    volume = read_volume(args.input)
    mask = mask_of_kind(volume, args.kind)
    millilitres = float(mask.sum()) * float(np.prod(volume.spacing)) / 1000.0
    provenance = {"role": f"{args.kind}_mask" + ("ed" if args.apply else ""), "source": Path(args.input).name}
    if args.apply:
        array = np.where(mask, volume.array, np.zeros((), volume.array.dtype))
        output, text = volume.with_array(array), f"{args.kind}-masked"
    else:
        output, text = volume.with_array(mask.astype(np.uint8)), f"{args.kind} mask"
    _write({"mask": (output, provenance, text)}, written, args)
    if args.json:
        print(json.dumps({"input": str(args.input), "output": str(written["mask"]), "kind": args.kind,
                          "applied": bool(args.apply), "volume_ml": round(millilitres, 1)}, indent=2))
    else:
        print(f"{args.input} -> {written['mask']}  ({args.kind} {millilitres:.0f} mL)")
    return 0


def _check_outputs(args: argparse.Namespace, targets: dict[str, Path], other_inputs: list[Path]) -> dict[str, Path]:
    from ..imaging.output_paths import (
        check_no_collisions,
        check_output_plan,
        planned_files,
        written_path,
    )

    check_output_plan([(Path(args.input), targets)], overwrite=args.overwrite, sidecar=False)
    check_no_collisions({role: planned_files(path, sidecar=False) for role, path in targets.items()},
                        inputs=[args.input, *other_inputs])
    return {role: written_path(path) for role, path in targets.items()}


def _write(volumes: dict[str, tuple[Any, dict[str, str], str]], targets: dict[str, Path],
           args: argparse.Namespace) -> None:
    """Every output is staged, verified and renamed into place together, or none is."""
    from ..imaging.provenance import KEY_PREFIX
    from ..version import __version__
    from ..imaging.volume_io import commit_staged, stage_volume, staging_folder

    with contextlib.ExitStack() as stack:
        staged = {folder: stack.enter_context(staging_folder(folder)) for folder in {p.parent for p in targets.values()}}
        for role, (volume, provenance, text) in volumes.items():
            metadata = {f"{KEY_PREFIX}{key}": value for key, value in
                        {"software": "MRISuperRes", "engine_version": __version__, **provenance}.items()}
            target = targets[role]
            stage_volume(volume.with_array(volume.array, metadata=metadata), staged[target.parent], target.name,
                         description=f"MRISuperRes: {text} {Path(args.input).name}")
        commit_staged(staged, args.overwrite)


HANDLERS = {"n4": run_n4, "mask": run_mask}
