"""Command line interface: ``mrisuperres enhance | demo | models | train | simulate | evaluate | register | ...``.

Errors the user can fix print one line (``mrisuperres: error: ...``) and exit with status 1, without a
traceback unless ``--debug``. Ctrl-C or SIGTERM stops at once, exit status 130; outputs are written atomically,
so no partial file is ever left behind.

``enhance`` (its options, the single-input run, ``--progress-lines``) lives in :mod:`.enhance`, cohorts in
:mod:`.cohort`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any

from ..engine.progress import PROGRESS_PREFIX, format_progress_line, parse_progress_line  # noqa: F401
from ..version import __version__
from . import EXIT_INTERRUPTED, INTERRUPTED, on_stop, raise_interrupt

EXIT_ERROR = 1
EXIT_INTERNAL = 3

EXAMPLES = """examples:
  mrisuperres enhance t1_2mm.nii.gz t1_sr.nii.gz
  mrisuperres enhance t1_2mm.nii.gz t1_sr.nii.gz --scale 2 --baseline t1_bspline.nii.gz \\
      --difference t1_diff.nii.gz --consistency t1_dc.nii.gz --json
  mrisuperres enhance t2_thick.nrrd t2_iso.nrrd --scale 1,1,4 --device cuda
  mrisuperres enhance scans/ enhanced/ --companions        (every volume in a folder)
  mrisuperres enhance bids/ enhanced/ --recursive --manifest enhanced/manifest.csv --shard 1/4
  mrisuperres report enhanced/manifest.csv -o review.html   (review page of a cohort)
  mrisuperres enhance dicom_series_folder/ sr.nii.gz
  mrisuperres models
  mrisuperres simulate t1_1mm.nii.gz t1_2mm.nii.gz --scale 2 --kind kspace --noise 0.02
  mrisuperres train --config configs/edsr3d_x2_small.yaml        (add --resume after a stop)
  mrisuperres evaluate t1_1mm.nii.gz --model my_model.safetensors --scale 2
  mrisuperres n4 t1.nii.gz -o t1_n4.nii.gz --two-pass       (bias-field correction)
  mrisuperres mask t1.nii.gz -o t1_brain_mask.nii.gz        (brain mask, no trained weights)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mrisuperres",
        description="Deep-learning super-resolution of MRI volumes, with a B-spline baseline, a difference map "
        "and a data-consistency map. Results are AI-generated, not acquired.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mrisuperres {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    from . import enhance as cli_enhance

    cli_enhance.add_parser(commands, EXAMPLES)

    demo = commands.add_parser(
        "demo",
        help="enhance a real sample brain (MNI152 T1 from nilearn) and compare with its 1 mm truth",
        description="Simulate a 2 mm acquisition of the MNI152 T1 template, enhance it x2 with the default model, "
        "write SR / baseline / difference / consistency and a PNG figure, and print PSNR/SSIM against the 1 mm "
        "truth.",
    )
    demo.add_argument("--output-dir", default="demo_output", help="folder for the outputs [demo_output]")
    demo.add_argument("--model", default="default", help="model name or path [default]")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps [auto]")
    demo.add_argument("--threads", type=int, metavar="N", help="CPU threads [torch default]")
    demo.add_argument("--overwrite", action="store_true", help="replace earlier demo outputs")
    demo.add_argument("--json", action="store_true", help="print machine-readable results")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")

    from . import train as cli_train

    cli_train.add_train_parser(commands)
    cli_train.add_simulate_parser(commands)
    cli_train.add_evaluate_parser(commands)
    try:
        from . import register as cli_register

        cli_register.add_parser(commands)
    except ImportError:  # registration needs SimpleITK only; absent only in a partial checkout
        pass

    from . import preprocess as cli_preprocess
    from ..cohort import report

    report.add_parser(commands)
    cli_preprocess.add_parsers(commands)

    listing = commands.add_parser("models", help="list shipped models",
                                  description="List the shipped models with their scales, size and description.")
    listing.add_argument("--json", action="store_true", help="print machine-readable results")
    listing.add_argument("--families", action="store_true",
                         help="also list the model families in the configuration of the source documents "
                              "(builds each on PyTorch's meta device: a few seconds)")
    # Every subcommand also accepts --debug after its name; SUPPRESS keeps the top-level value otherwise.
    for subparser in commands.choices.values():
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                               help="show tracebacks for errors")
    return parser


def _run_models(args: argparse.Namespace) -> int:
    # Only the model files' headers are read here (no torch, no MONAI), so the listing answers at once; a model
    # saved before FLOP counts were stored in its metadata shows "?".
    from ..engine.model_zoo import list_models

    rows = []
    for entry in list_models():
        flops = entry.metadata.flops_per_output_voxel
        rows.append({
            "name": entry.name,
            "source": entry.source,
            "family": entry.metadata.family,
            "scales": entry.scales_text(),
            "parameters": entry.metadata.parameters or 0,
            "flops_per_output_voxel": float(flops) if flops is not None else None,
            "size_mb": round(entry.path.stat().st_size / 1e6, 2),
            "default_for": list(entry.default_for),
            "voxel_mm": list(voxels) if (voxels := entry.metadata.trained_voxel_mm) else None,
            "description": entry.metadata.description,
            "path": str(entry.path),
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<28} {'family':<10} {'scales':<10} {'params':>11} {'FLOP/vox':>9} {'size':>8}  description")
    for row in rows:
        default = f" [default: {', '.join(row['default_for'])}]" if row["default_for"] else ""
        default += " [trained here]" if row["source"] != "shipped" else ""
        print(f"{row['name']:<28} {row['family']:<10} {row['scales']:<10} {row['parameters']:>11,} "
              f"{_flops_text(row['flops_per_output_voxel']):>9} {row['size_mb']:>6.1f}MB  {row['description']}{default}")
    print("(a per-axis scale runs in any axis order: a 1,1,4 model also restores 4,1,1 and 1,4,1; --json also gives "
          "the voxel sizes each was trained on, voxel_mm)")
    if not args.families:
        print("(mrisuperres models --families lists the model families in the configuration of the source documents)")
        return 0
    import torch

    from .. import models
    from ..imaging.geometry import format_scale

    print("\nfamilies, in the configuration of the source documents (build with MRISuperResLib.models.create):")
    print(f"{'family':<12} {'scale':<8} {'params':>11} {'FLOP/vox':>9}  description")
    for family in models.FAMILIES:
        config = models.seed_config(family)
        with torch.device("meta"):
            parameters = models.parameter_count(models.create(family, **config))
        scales = models.supported_scales(family, config)
        scale = "any" if scales is None else format_scale(scales[0])
        flops = models.config_flops_per_output_voxel(family, config)
        print(f"{family:<12} {scale:<8} {parameters:>11,} {_flops_text(flops):>9}  "
              f"{models.family_spec(family).description}")
    return 0


def _flops_text(flops: float | None) -> str:
    return "?" if flops is None else f"{flops / 1e6:.2f}M"


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    from .enhance import progress_bar

    bar, update = progress_bar(not (args.quiet or args.json), "demo")
    try:
        report = run_demo(args.output_dir, model=args.model, overwrite=args.overwrite, device=args.device,
                          threads=args.threads, progress=update)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print(json.dumps(report.summary(), indent=2))
        return 0
    for warning in report.result.warnings:
        print(f"mrisuperres: warning: {warning}", file=sys.stderr)
    print(f"input (simulated 2 mm): {report.input_path}")
    for role, path in report.result.paths.items():
        print(f"{role:<12} {path}")
    print(f"figure       {report.figure_path}")
    print(f"device {report.result.device}, {report.result.timings['total']:.1f} s")
    print(report.table())
    if report.result.model.metadata.untrained:
        print("note: the default model is an untrained placeholder; its output equals the B-spline baseline")
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from ..cohort import report

    return report.run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mrisuperres`` console script; returns the exit status."""
    on_stop(raise_interrupt, "SIGTERM")
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while the command line itself loads, before any work
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_ERROR
    from ..imaging import native_output
    from ..errors import InputWarning

    native_output.SHOW_RAW = bool(args.debug)
    shown_warning = warnings.showwarning

    def show_warning(message: Any, category: type, *rest: Any, **kwargs: Any) -> None:
        # Every warning is one line, like the errors; the libraries' own (pydicom, torch...) are named as such.
        if args.debug and not issubclass(category, InputWarning):
            shown_warning(message, category, *rest, **kwargs)
            return
        text = " ".join(str(message).split())
        if not issubclass(category, InputWarning):
            text = f"{category.__name__} from a library: {text[:200]}"
        print(f"mrisuperres: warning: {text}", file=sys.stderr)

    warnings.showwarning = show_warning
    try:
        from . import train as cli_train
        from ..errors import MRISuperResError

        from . import enhance as cli_enhance

        handlers = {"enhance": cli_enhance.run, "demo": _run_demo, "models": _run_models,
                    "train": cli_train.run_train, "simulate": cli_train.run_simulate,
                    "evaluate": cli_train.run_evaluate, "report": _run_report}
        from .preprocess import HANDLERS as preprocess_handlers

        handlers.update(preprocess_handlers)
        if args.command == "register":
            from . import register as cli_register

            return cli_register.run(args)
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    except MRISuperResError as error:
        if args.debug:
            traceback.print_exc()
        print(f"mrisuperres: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # The program reading our standard output went away (``| head``); nothing more can be printed there, and
        # the interpreter's own flush at exit must not fail again.
        if args.debug:
            traceback.print_exc()
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("mrisuperres: error: cannot print to the standard output: the program reading it has closed it "
              "(broken pipe)", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        if args.debug:
            traceback.print_exc()
        print("mrisuperres: error: out of memory; try a smaller --tile or --device cpu", file=sys.stderr)
        return EXIT_ERROR
    except Exception as error:  # the last line of defence: one line, not a traceback
        if args.debug:
            traceback.print_exc()
        kind = "out of GPU memory; try a smaller --tile" if "out of memory" in str(error).lower() else \
            f"unexpected {type(error).__name__}: {error}"
        print(f"mrisuperres: error: {kind} (run with --debug for details)", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        warnings.showwarning = shown_warning


if __name__ == "__main__":
    sys.exit(main())
