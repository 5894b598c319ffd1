"""Command line interface: ``mrisuperres enhance | models``.

Errors the user can fix print one line (``mrisuperres: error: ...``) and exit with status 1, without a
traceback unless ``--debug``. Ctrl-C or SIGTERM stops at once, exit status 130; outputs are written atomically,
so no partial file is ever left behind.

``enhance --progress-lines`` is for programs that run the CLI in a background process (the Slicer module):
instead of a progress bar it prints one line per update on stdout, ``MRISUPERRES_PROGRESS <fraction> <stage>``
with the fraction of the whole run in ``[0, 1]`` to four decimals (see :func:`format_progress_line` and
:func:`parse_progress_line`); every other stdout line (the ``--json`` summary) is unchanged.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import adapt as cli_adapt
from ..engine.progress import PROGRESS_PREFIX, format_progress_line, parse_progress_line  # noqa: F401
from ..version import __version__

EXIT_ERROR = 1
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

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

    enhance = commands.add_parser(
        "enhance",
        help="super-resolve one or more volumes",
        description="Super-resolve INPUT into OUTPUT. With several inputs or a folder of volumes, OUTPUT is a "
        "folder and each result is named <input>_sr<ext>. Inputs: .nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd or "
        "a DICOM series folder. Outputs are float32 unless --keep-dtype.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    enhance.add_argument("paths", nargs="+", metavar="PATH", help="INPUT [INPUT ...] OUTPUT")
    enhance.add_argument("--model", default="default",
                         help="shipped model name (see 'mrisuperres models'), a .safetensors path, or 'default' "
                         "(chosen by scale) [default]")
    enhance.add_argument("--scale", default="2",
                         help="factor, or three in image index order i,j,k (e.g. 1,1,4 restores 4x thicker "
                         "slices along k) [2]")
    enhance.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps [auto]")
    enhance.add_argument("--baseline", metavar="FILE", help="also write the cubic B-spline upsampling here")
    enhance.add_argument("--difference", metavar="FILE", help="also write SR minus baseline here")
    enhance.add_argument("--consistency", metavar="FILE",
                         help="also write |degrade(SR) - input| on the input grid here")
    enhance.add_argument("--uncertainty", metavar="FILE",
                         help="also write the spread of a test-time flip ensemble here (8 passes; the SR becomes "
                         "their mean)")
    enhance.add_argument("--flip-ensemble", action="store_true",
                         help="average the network over the 8 flips of the input (test-time ensemble: about "
                         "+0.1 dB, 8 passes); --uncertainty implies it")
    background = enhance.add_mutually_exclusive_group()
    background.add_argument("--mask-background", dest="mask_background", action="store_true", default=None,
                            help="keep the B-spline baseline outside the head, so the network adds nothing there "
                                 "[default: as the model's card says; on for the shipped models]")
    background.add_argument("--no-mask-background", dest="mask_background", action="store_false",
                            help="let the network change the background too")
    enhance.add_argument("--companions", action="store_true",
                         help="write baseline, difference and consistency beside each output "
                         "(<name>_baseline, <name>_difference, <name>_consistency)")
    enhance.add_argument("--context", metavar="NAME=VALUE,...",
                         help="the subject's conditioning values for a model conditioned on a context (seed 002), "
                         "e.g. age=63,sex=F,diagnosis=stroke; the slice position is filled in automatically "
                         "(a model's card lists its variables)")
    enhance.add_argument("--tile", type=int, metavar="N", help="tile edge in input voxels [auto from free memory]")
    enhance.add_argument("--overlap", type=float, default=0.0, metavar="F",
                         help="tile overlap fraction, blended with Gaussian weights [0: tiles carry a halo of "
                         "real context as wide as the network sees, so they already join exactly]")
    enhance.add_argument("--threads", type=int, metavar="N", help="CPU threads [torch default]")
    enhance.add_argument("--keep-dtype", action="store_true",
                         help="write the SR volume in the input's data type (rounded, clipped)")
    enhance.add_argument("--overwrite", action="store_true", help="replace existing output files")
    enhance.add_argument("--resample-uneven-slices", action="store_true",
                         help="interpolate a DICOM series with missing or unevenly spaced slices onto a regular "
                         "grid (with a warning) instead of refusing it")
    enhance.add_argument("--no-sidecar", action="store_true", help="do not write JSON provenance sidecars")
    enhance.add_argument("--no-compress", action="store_true",
                         help="write .nrrd, .nhdr, .mha and .mhd outputs uncompressed (faster to write and read, for "
                         "files another program reads at once, like the Slicer module's; .nii.gz is always gzip)")
    enhance.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    enhance.add_argument("--quiet", action="store_true", help="no progress bar")
    enhance.add_argument("--progress-lines", action="store_true",
                         help=f"instead of a progress bar, print '{PROGRESS_PREFIX} <fraction 0..1> <stage>' on "
                         "stdout at every update, for programs running this command in the background")

    cli_adapt.add_arguments(enhance)
    enhance.add_argument("--figure", metavar="PNG",
                         help="also write a PNG: axial/coronal/sagittal x input, baseline, SR, difference, consistency")
    from . import cohort as cohort_cli

    cohort_cli.add_arguments(enhance)

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


def _progress_bar(enabled: bool, label: str):  # type: ignore[no-untyped-def]
    if not enabled:
        return None, (lambda fraction, text: None)
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (logs, pipes), so errors stay single lines there.
    bar = tqdm(total=100, desc=label, unit="%", file=sys.stderr, leave=False, disable=None,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")

    def update(fraction: float, text: str) -> None:
        bar.n = round(100 * fraction, 1)
        bar.set_postfix_str(text, refresh=False)
        bar.refresh()

    return bar, update


def _progress_printer(index: int, count: int, label: str):  # type: ignore[no-untyped-def]
    """A progress callback printing ``--progress-lines`` for input ``index`` of ``count`` (fractions of the
    whole batch, stage prefixed with the input's name when there are several)."""

    def update(fraction: float, text: str) -> None:
        stage = f"{label}: {text}" if count > 1 else text
        print(format_progress_line((index + fraction) / count, stage), flush=True)

    return update


def _plan_outputs(args: argparse.Namespace) -> list[tuple[Path, dict[str, Path]]]:
    """The one input of a single run and its outputs by role, checked before any work."""
    from ..errors import InputError
    from ..imaging.output_paths import check_output_plan
    from ..imaging.volume_io import strip_volume_extension, volume_extension

    *inputs, target = [Path(p) for p in args.paths]
    if len(inputs) != 1:
        raise InputError("enhance needs an INPUT and an OUTPUT; see 'mrisuperres enhance --help'")
    companions: dict[str, Path] = {}
    if args.companions:
        extension = volume_extension(target) or ".nii.gz"
        stem = strip_volume_extension(target)
        for role in ("baseline", "difference", "consistency"):
            companions[role] = target.with_name(f"{stem}_{role}{extension}")
    for role in ("baseline", "difference", "consistency", "figure", "uncertainty"):
        if getattr(args, role):
            companions[role] = Path(getattr(args, role))
    plans = [(inputs[0], {"sr": target, **companions})]
    # Every name, folder, existing file and collision before any work.
    check_output_plan(plans, overwrite=args.overwrite, sidecar=not args.no_sidecar, compress=not args.no_compress)
    return plans


def _run_enhance(args: argparse.Namespace) -> int:
    if args.progress_lines:
        # Importing torch takes seconds: say so before it starts, so a watching program sees the run is alive.
        print(format_progress_line(0.0, "loading the engine"), flush=True)
    from . import cohort as cohort_cli
    from ..errors import MRISuperResError
    from ..imaging.geometry import parse_scale
    from ..engine.model_zoo import check_scale, resolve_model
    from ..engine.prepared_input import (
        import_in_background,
        prepare_input,
        wanted_mask,
        wants_dicom_source,
    )

    scale = parse_scale(args.scale)
    if args.tile is not None and args.tile < 4:
        raise MRISuperResError(f"--tile {args.tile} is too small; use at least 4 (or leave it out for auto)")
    if not 0.0 <= args.overlap < 1.0:
        raise MRISuperResError(f"--overlap {args.overlap} is outside [0, 1); try 0.25")
    cohort = cohort_cli.plan(args) if cohort_cli.wants_cohort(args) else None
    if cohort is None:
        cohort_cli.check_single_run(args)
    plans = _plan_outputs(args) if cohort is None else []
    cli_adapt.check(args, plans, cohort=cohort is not None)
    entry = resolve_model(args.model, scale)
    check_scale(entry, scale)
    # Torch (and the FFTs of the consistency map) load on a thread while this one reads the input and computes
    # its head mask, neither of which needs them.
    if cohort is None and str(plans[0][0]).lower().endswith((".nii", ".nii.gz")):
        import nibabel  # noqa: F401 - the input's header reader: importing it beside torch would slow both down
    torch_import = import_in_background("torch", "scipy.fft")
    prepared = None
    if cohort is None:
        input_path, targets = plans[0]
        try:
            prepared = prepare_input(
                input_path, resample_uneven_slices=args.resample_uneven_slices,
                dicom_source=wants_dicom_source(targets.values()),
                foreground=wanted_mask(args.mask_background, entry.metadata))
        except BaseException:
            torch_import.join()
            raise
    waited = time.perf_counter()
    torch_import.join()
    if prepared is not None:
        # How long the engine still kept the run waiting once the input was read and masked.
        prepared.timings = {**(prepared.timings or {}), "import_wait": time.perf_counter() - waited}
    from ..engine.enhance import enhance_file
    from ..engine.model_zoo import load_model

    if args.progress_lines:
        print(format_progress_line(0.0, "loading the model"), flush=True)
    model = load_model(args.model, scale)
    from ..engine.conditioning import context_for_model

    context_for_model(model.metadata, args.context, f"model {model.name}")  # a wrong context fails before any work
    if cohort is not None:
        return cohort_cli.run(args, scale, model, cohort)
    input_path, targets = plans[0]
    if args.progress_lines:
        bar, update = None, _progress_printer(0, 1, input_path.name)
    else:
        bar, update = _progress_bar(not (args.quiet or args.json), input_path.name)
    try:
        result = enhance_file(
            input_path,
            targets["sr"],
            model,
            scale,
            baseline_path=targets.get("baseline"),
            difference_path=targets.get("difference"),
            consistency_path=targets.get("consistency"),
            figure_path=targets.get("figure"),
            uncertainty_path=targets.get("uncertainty"),
            mask_background=args.mask_background,
            flip_ensemble=args.flip_ensemble,
            overwrite=args.overwrite,
            sidecar=not args.no_sidecar,
            compress=not args.no_compress,
            resample_uneven_slices=args.resample_uneven_slices,
            device=args.device,
            tile=args.tile,
            overlap=args.overlap,
            threads=args.threads,
            keep_dtype=args.keep_dtype,
            progress=update,
            adapt=cli_adapt.settings_for(args, input_path),
            prepared=prepared,
            context=args.context,
        )
        cli_adapt.save(args, result)
    finally:
        if bar is not None:
            bar.close()
    for warning in result.warnings:
        print(f"mrisuperres: warning: {warning}", file=sys.stderr)
    summary = {"input": str(input_path), **result.summary()}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        score = f"{result.consistency_nrmse:.4f}" if result.consistency_nrmse == result.consistency_nrmse else "n/a"
        print(f"{input_path} -> {result.paths.get('sr', targets['sr'])}  (x{summary['scale']}, {result.device}, "
              f"{result.timings['total']:.1f} s, consistency NRMSE {score})")
    return 0


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
    print("(a per-axis scale runs in any axis order: a 1,1,4 model also restores 4,1,1 and 1,4,1)")
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

    bar, update = _progress_bar(not (args.quiet or args.json), "demo")
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


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mrisuperres`` console script; returns the exit status."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while the command line itself loads, before any work
        print("mrisuperres: interrupted; no partial output was written", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_ERROR
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _raise_interrupt)
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

        handlers = {"enhance": _run_enhance, "demo": _run_demo, "models": _run_models,
                    "train": cli_train.run_train, "simulate": cli_train.run_simulate,
                    "evaluate": cli_train.run_evaluate, "report": _run_report}
        from .preprocess import HANDLERS as preprocess_handlers

        handlers.update(preprocess_handlers)
        if args.command == "register":
            from . import register as cli_register

            return cli_register.run(args)
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("mrisuperres: interrupted; no partial output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MRISuperResError as error:
        if args.debug:
            traceback.print_exc()
        print(f"mrisuperres: error: {error}", file=sys.stderr)
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
