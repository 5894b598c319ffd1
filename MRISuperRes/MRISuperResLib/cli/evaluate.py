"""``mrisuperres evaluate``: PSNR / SSIM (and DICE) of a model, cubic B-spline and Fourier zero-filling against
high-resolution references (wired into :mod:`MRISuperResLib.cli.app`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_evaluate_parser(commands: argparse._SubParsersAction) -> None:
    from ..engine.options import PRECISIONS
    from ..processing.degradation import KINDS

    parser = commands.add_parser(
        "evaluate",
        help="PSNR/SSIM (and DICE) of a model, B-spline and Fourier zero-filling against high-resolution references",
        description="For each high-resolution REFERENCE (a file, or a folder: every volume file in it), simulate a "
        "low-resolution input (the model's own forward model unless --kind is given; one run per --noise level, "
        "noise from --seed), enhance it and score SR, cubic B-spline and Fourier zero-filling (the scanner's 'ZIP' "
        "interpolation) against the reference: PSNR with the 1-99 percentile range as peak and 3D SSIM, inside the "
        "head mask (whole-volume PSNR in brackets). One table: per acquisition, each volume and the mean. With "
        "--low, score real registered low-resolution inputs instead (one per reference). With --labels or "
        "--segment, also per-label DICE of each method's segmentation.",
    )
    parser.add_argument("references", nargs="+", metavar="REFERENCE",
                        help="high-resolution volumes, or folders of them")
    parser.add_argument("--model", default="default", help="model name or path [default]")
    parser.add_argument("--scale", default="2", help="factor or i,j,k factors [2]")
    parser.add_argument("--low", nargs="+", help="real low-resolution inputs, one per reference, same order")
    parser.add_argument("--kind", help=f"forward model for the simulation: {', '.join(KINDS)} (or i,j,k list)")
    parser.add_argument("--noise", type=float, nargs="+", default=None, metavar="LEVEL",
                        help="k-space noise level(s), fraction of the low-resolution 99th percentile; several give "
                        "one run each, e.g. --noise 0 0.01 0.02 [the model's own range, drawn per volume]")
    parser.add_argument("--gap", type=float, default=0.0, help="slice gap for box/gaussian profiles [0]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated noise [0]")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps [auto]")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, type=str.lower,
                        help="the network's arithmetic, as in enhance: auto (half precision on CUDA GPUs, float32 "
                        "elsewhere), float32, or bfloat16 (also on CPUs with AVX512-BF16 or AMX) [auto]")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch [torch's default]")
    parser.add_argument("--flip-ensemble", action="store_true",
                        help="average the network over the 8 flips of each input (test-time ensemble, 8 passes)")
    parser.add_argument("--no-projection", dest="projection", action="store_false",
                        help="score the network's output without the data-consistency projection (on by default, as "
                        "in enhance)")
    parser.add_argument("--context", metavar="NAME=VALUE,...",
                        help="conditioning values for a model conditioned on a context (the same for every reference)")
    parser.add_argument("--labels", nargs="+", metavar="LABELS",
                        help="label map of each reference (same grid, same order): per-label DICE of SR, B-spline "
                        "and zero-filling, each segmented by a Gaussian intensity model fitted on the reference")
    parser.add_argument("--segment", choices=["tissue3"],
                        help="without --labels: segment reference and outputs alike into 3 intensity classes "
                        "(Otsu thresholds of the reference inside the head mask) and report DICE")
    parser.add_argument("--crop", metavar="I,J,K",
                        help="score only a block of at most I x J x K voxels of each reference, centred on the head "
                        "(a quicker evaluation; the table says so)")
    parser.add_argument("--exclude-slices", nargs="+", metavar="SPEC",
                        help="voxels of the references to leave out of every metric (corrupted slices): AXIS:INDICES "
                             "(0-based, e.g. 2:3,7,10-12) or a mask file (non-zero = excluded); one SPEC for all "
                             "references or one per reference ('none' for a reference without)")
    parser.add_argument("--output", metavar="MD", help="also write the table to this Markdown file")
    parser.add_argument("--csv", metavar="CSV", help="also write the table to this CSV file")
    parser.add_argument("--figure", metavar="FOLDER",
                        help="write one PNG per reference (and noise level) into this existing folder (rows "
                             "axial/coronal/sagittal; columns input, baseline, SR, reference, difference, "
                             "consistency)")
    parser.add_argument("--adapt", nargs="?", type=float, const=180.0, default=None, metavar="SECONDS",
                        help="adapt the thick-slice model to each (simulated or --low) input for SECONDS [180] before "
                             "enhancing it, as enhance --adapt does; compare with a run without --adapt")
    parser.add_argument("--adapt-steps", type=int, metavar="N",
                        help="adaptation step budget (alone: adapt for N steps; with --adapt, whichever ends first; "
                        "reproducible for a seed)")
    parser.add_argument("--adapt-seed", type=int, default=0, metavar="N", help="adaptation seed [0]")
    parser.add_argument("--json", action="store_true", help="print machine-readable results instead of the table")
    parser.add_argument("--quiet", action="store_true", help="no progress line per scored volume (on stderr)")


def _report_progress(done: int, total: int, scores: Any) -> None:
    print(f"evaluate {done}/{total}: {scores.name} ({scores.condition}): PSNR inside the head SR "
          f"{scores.psnr_sr:.2f}, B-spline {scores.psnr_baseline:.2f}, zero-fill {scores.psnr_zerofill:.2f} dB",
          file=sys.stderr, flush=True)


def _check_arguments(args: argparse.Namespace, references: int) -> None:
    """Refuse inconsistent options in one line (:class:`~MRISuperResLib.errors.MRISuperResError`) before any work."""
    from ..errors import MRISuperResError
    from ..imaging.volume_io import check_writable_target

    for option, given in (("--low", args.low), ("--labels", args.labels)):
        if given and len(given) != references:
            raise MRISuperResError(f"{option} has {len(given)} volumes for {references} references; "
                                   "give one per reference")
    if args.labels and args.segment:
        raise MRISuperResError("give either --labels (the reference's label maps) or --segment, not both")
    if args.low and args.noise and len(args.noise) > 1:
        raise MRISuperResError("--noise with several levels simulates inputs; it does not apply with --low")
    if args.noise and any(level < 0 for level in args.noise):
        raise MRISuperResError("--noise levels must be 0 or more")
    if args.adapt is not None or args.adapt_steps is not None:
        from ..imaging.geometry import parse_scale
        from .adapt import check_thick_scale

        check_thick_scale(parse_scale(args.scale), "evaluate")
    for target in (args.output, args.csv):
        if target:
            check_writable_target(target, overwrite=True, volume_format=False)


def _parse_crop(text: str | None) -> tuple[int, int, int] | None:
    from ..errors import MRISuperResError

    if not text:
        return None
    try:
        crop = tuple(int(v) for v in text.split(","))
    except ValueError:
        crop = ()
    if len(crop) != 3 or min(crop) < 8:
        raise MRISuperResError(f"--crop {text} is not three sizes of at least 8 voxels; e.g. --crop 160,160,128")
    return crop  # type: ignore[return-value]


def _evaluation_exclusions(specs: list[str] | None, count: int) -> list[list] | None:
    """Per-reference exclusion rules from ``--exclude-slices`` (one spec for all, or one per reference)."""
    from ..errors import MRISuperResError
    from ..processing.exclusion import parse_exclusion_text

    if not specs:
        return None
    if len(specs) not in (1, count):
        raise MRISuperResError(f"--exclude-slices has {len(specs)} values for {count} references; give one for all "
                               "or one per reference ('none' for a reference without)")
    rules = [[] if spec.lower() == "none" else parse_exclusion_text(spec) for spec in specs]
    return rules * count if len(rules) == 1 else rules


def run_evaluate(args: argparse.Namespace) -> int:
    from ..errors import MRISuperResError
    from ..evaluation.evaluate import evaluate_files, evaluation_spec, expand_references
    from ..evaluation.table import scores_csv, scores_json, scores_table
    from ..imaging.geometry import parse_scale
    from ..engine.device import select_device
    from ..engine.model_zoo import load_model

    ran_on = select_device(args.device, args.precision)
    scale = parse_scale(args.scale)
    references = expand_references(args.references)
    _check_arguments(args, len(references))
    crop = _parse_crop(args.crop)
    exclusions = _evaluation_exclusions(args.exclude_slices, len(references))
    model = load_model(args.model, scale)
    spec = None
    single_noise = args.noise[0] if args.noise and len(args.noise) == 1 else None
    if args.kind or single_noise is not None or args.gap:
        try:
            spec = evaluation_spec(model.metadata.degradation, args.kind, single_noise, args.gap)
        except ValueError as error:
            raise MRISuperResError(str(error)) from None
    noises = args.noise if args.noise and len(args.noise) > 1 else None
    adapt = None
    if args.adapt is not None or args.adapt_steps is not None:
        from ..engine.adapt import AdaptSettings

        adapt = AdaptSettings(seconds=args.adapt, steps=args.adapt_steps, seed=args.adapt_seed, device=args.device,
                              precision=args.precision)
    scores = evaluate_files(references, model, scale, spec, seed=args.seed, low_inputs=args.low,
                            figure_folder=args.figure, noises=noises, labels=args.labels, segment=args.segment,
                            on_scored=None if args.quiet else _report_progress, crop=crop, exclusions=exclusions,
                            device=args.device, precision=args.precision,
                            threads=args.threads, flip_ensemble=args.flip_ensemble, context=args.context,
                            adapt=adapt, projection=args.projection)
    table = scores_table(scores, model.name, scale)
    tuned_in = None
    if adapt is not None:
        from ..engine.adapt import fine_tuning_dtype
        from ..engine.device import precision_name

        tuned_in = precision_name(fine_tuning_dtype(ran_on))
        budget = " and ".join(part for part in (f"{adapt.seconds:g} s" if adapt.seconds is not None else "",
                                                f"{adapt.steps} steps" if adapt.steps is not None else "") if part)
        table += (f"\n\nSR: the model adapted to each input before enhancing it ({budget}, whichever ended first; "
                  f"seed {adapt.seed}; " + ("every layer" if adapt.trainable == "all" else "the upsampler and output "
                                           "layer") + f" trained in {tuned_in}).")
    if not args.projection:
        table += "\n\nSR: the network's output without the data-consistency projection (--no-projection)."
    if args.precision != "auto":
        table += f"\n\nSR: the network ran with --precision {args.precision} (on {ran_on.describe()})."
    if args.segment == "tissue3":
        table += ("\n\nDICE labels of --segment tissue3: intensity classes 1 to 3 of the reference inside the head "
                  "mask, darkest first (in a T1w brain: CSF, grey matter, white matter).")
    if crop:
        table += (f"\n\nEach reference was cropped to a block of at most {'x'.join(map(str, crop))} voxels centred on "
                  "the head.")
    from ..imaging.verified_write import replace_text_file

    if args.output:
        replace_text_file(args.output, table + "\n")
    if args.csv:
        replace_text_file(args.csv, scores_csv(scores))
    if args.json:
        report = scores_json(scores, model.name, scale)
        report["crop"] = list(crop) if crop else None
        report["adapt"] = None if adapt is None else {"seconds": adapt.seconds, "steps": adapt.steps,
                                                      "seed": adapt.seed, "trainable": adapt.trainable,
                                                      "arithmetic": tuned_in}
        report["segment"] = args.segment or ("labels" if args.labels else None)
        report["precision"] = args.precision
        report["device"] = ran_on.describe()
        print(json.dumps(report, indent=2))
    else:
        print(table)
    return 0
