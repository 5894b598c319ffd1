"""``mrisuperres enhance``: its options, the single-input run and the progress display (cohorts: :mod:`.cohort`).

The output-map options (``--baseline`` ...) and ``--companions`` come from :data:`..engine.outputs.OUTPUT_MAPS`,
the run options (``--device``, ``--tile`` ...) from :class:`..engine.options.EnhanceOptions`; neither is listed
here.

``--progress-lines`` is for programs that run the CLI in a background process (the Slicer module): instead of a
progress bar it prints one line per update on stdout, ``MRISUPERRES_PROGRESS <fraction> <stage>`` with the
fraction of the whole run in ``[0, 1]`` to four decimals (see :func:`..engine.progress.format_progress_line`);
every other stdout line (the ``--json`` summary) is unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from . import adapt as cli_adapt
from ..errors import InputError
from ..imaging.geometry import Scale
from ..engine.options import EnhanceOptions, add_arguments as add_option_arguments
from ..engine.outputs import COMPANION_KEYS, OUTPUT_MAPS, companions_help
from ..engine.progress import PROGRESS_PREFIX, format_progress_line


def add_parser(commands: Any, examples: str) -> argparse.ArgumentParser:
    """Add the ``enhance`` subcommand to ``commands`` (the top-level parser's subparsers)."""
    enhance = commands.add_parser(
        "enhance",
        help="super-resolve one or more volumes",
        description="Super-resolve INPUT into OUTPUT. With several inputs or a folder of volumes, OUTPUT is a "
        "folder and each result is named <input>_sr<ext>. Inputs: .nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd or "
        "a DICOM series folder. Outputs are float32 unless --keep-dtype.",
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    enhance.add_argument("paths", nargs="+", metavar="PATH", help="INPUT [INPUT ...] OUTPUT")
    enhance.add_argument("--model", default="default",
                         help="shipped model name (see 'mrisuperres models'), a .safetensors path, or 'default' "
                         "(chosen by scale) [default]")
    enhance.add_argument("--scale", default=None,
                         help="factor, or three in image index order i,j,k (e.g. 1,1,4 restores 4x thicker "
                         "slices along k), or 'iso': restore the thickest axis to the finest spacing [from the "
                         "input's voxels: iso for clearly anisotropic ones (a thickest edge 1.5x the finest or "
                         "more), else 2; a cohort: 2]")
    for output in OUTPUT_MAPS:
        if output.option is not None:
            enhance.add_argument(output.option, dest=output.key, metavar="FILE", help=output.help)
    enhance.add_argument("--companions", action="store_true", help=companions_help())
    add_option_arguments(enhance)
    enhance.add_argument("--context", metavar="NAME=VALUE,...",
                         help="the subject's conditioning values for a model conditioned on a context (seed 002), "
                         "e.g. age=63,sex=F,diagnosis=stroke; the slice position is filled in automatically "
                         "(a model's card lists its variables)")
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
    return enhance


def progress_bar(enabled: bool, label: str):  # type: ignore[no-untyped-def]
    """A tqdm bar on stderr and its ``(fraction, text)`` callback; ``(None, no-op)`` when not ``enabled``."""
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
    """The one input of a single run and its outputs by map key (and ``figure``), checked before any work."""
    from ..errors import InputError
    from ..imaging.output_paths import check_output_plan, companion_paths

    *inputs, target = [Path(p) for p in args.paths]
    if len(inputs) != 1:
        raise InputError("enhance needs an INPUT and an OUTPUT; see 'mrisuperres enhance --help'")
    companions = companion_paths(target, COMPANION_KEYS) if args.companions else {}
    for output in OUTPUT_MAPS:
        if output.option is not None and getattr(args, output.key):
            companions[output.key] = Path(getattr(args, output.key))
    if args.figure:
        companions["figure"] = Path(args.figure)
    plans = [(inputs[0], {"sr": target, **companions})]
    # Every name, folder, existing file and collision before any work.
    check_output_plan(plans, overwrite=args.overwrite, sidecar=not args.no_sidecar, compress=not args.no_compress)
    return plans


def run(args: argparse.Namespace) -> int:
    """Run ``mrisuperres enhance`` (one input, or a cohort through :mod:`.cohort`); returns the exit status."""
    if args.progress_lines:
        # Importing torch takes seconds: say so before it starts, so a watching program sees the run is alive.
        print(format_progress_line(0.0, "loading the engine"), flush=True)
    from . import cohort as cohort_cli
    from ..imaging.geometry import DEFAULT_SCALE, parse_scale
    from ..engine.model_zoo import check_scale, resolve_model
    from ..engine.prepared_input import (
        import_in_background,
        prepare_input,
        wanted_mask,
        wants_dicom_source,
    )

    # A scale from the input's voxels (no --scale, or --scale iso) is known once the input is read.
    if isinstance(args.scale, str) and args.scale.strip().lower() == "iso":
        args.scale = "iso"
    scale = parse_scale(args.scale) if args.scale not in (None, "iso") else None
    options = EnhanceOptions.from_namespace(args).check()
    cohort = cohort_cli.plan(args) if cohort_cli.wants_cohort(args) else None
    if cohort is None:
        cohort_cli.check_single_run(args)
    elif scale is None:
        if args.scale == "iso":
            raise InputError("--scale iso picks the factors from one scan's voxels, but a cohort runs one scale for "
                             "all its scans: give the factors (e.g. --scale 1,1,4)")
        scale = DEFAULT_SCALE
    plans = _plan_outputs(args) if cohort is None else []

    def settle(scale: Scale) -> Any:
        """The model entry for ``scale``, once the adaptation options and the model's scales are checked."""
        cli_adapt.check(args, plans, scale, cohort=cohort is not None)
        entry = resolve_model(args.model, scale)
        check_scale(entry, scale)
        return entry

    entry = settle(scale) if scale is not None else None
    # Torch (and the FFTs of the consistency map) load on a thread while this one reads the input and computes
    # its head mask, neither of which needs them.
    if cohort is None and str(plans[0][0]).lower().endswith((".nii", ".nii.gz")):
        import nibabel  # noqa: F401 - the input's header reader: importing it beside torch would slow both down
    torch_import = import_in_background("torch", "scipy.fft")
    prepared = None
    if cohort is None:
        input_path, targets = plans[0]
        # An input refused here (or Ctrl-C) while torch still loads ends the command without waiting for the
        # import (see :func:`MRISuperResLib.cli.exit_without_waiting`).
        prepared = prepare_input(
            input_path, resample_uneven_slices=args.resample_uneven_slices,
            dicom_source=wants_dicom_source(targets.values()),
            # Without the model yet (its scale waits for the input), the mask is made unless refused.
            foreground=(wanted_mask(args.mask_background, entry.metadata) if entry is not None
                        else args.mask_background is not False))
        if scale is None:
            scale = _scale_from_voxels(args, prepared.volume.spacing)
            entry = settle(scale)
            if not wanted_mask(args.mask_background, entry.metadata):
                prepared.foreground = None
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
        bar, update = progress_bar(not (args.quiet or args.json), input_path.name)
    try:
        result = enhance_file(
            input_path,
            targets["sr"],
            model,
            scale,
            outputs={key: path for key, path in targets.items() if key not in ("sr", "figure")},
            figure_path=targets.get("figure"),
            overwrite=args.overwrite,
            sidecar=not args.no_sidecar,
            compress=not args.no_compress,
            resample_uneven_slices=args.resample_uneven_slices,
            progress=update,
            adapt=cli_adapt.settings_for(args, input_path),
            prepared=prepared,
            context=args.context,
            **options.engine_kwargs(),
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
        adapted = "" if result.adaptation is None else (
            f", adapted {result.adaptation.steps} steps in {result.adaptation.arithmetic}")
        print(f"{input_path} -> {result.paths.get('sr', targets['sr'])}  (x{summary['scale']}, {result.device}, "
              f"{result.timings['total']:.1f} s{adapted}, consistency NRMSE {score})")
    return 0


def _scale_from_voxels(args: argparse.Namespace, spacing: tuple[float, float, float]) -> Scale:
    """The scale of a run without ``--scale`` (or with ``--scale iso``), from the input's voxel size (mm, ``i, j,
    k``), said in one line unless it is x2 on near-isotropic voxels.

    Raises:
        InputError: ``--scale iso`` on near-isotropic voxels (nothing to restore).
    """
    from ..engine.model_zoo import resolve_model
    from ..imaging.geometry import (
        DEFAULT_SCALE,
        ISOTROPIC_RATIO,
        anisotropy,
        default_scale,
        format_millimetres,
        format_scale,
        isotropic_scale,
    )

    voxels = format_millimetres(spacing)
    if args.scale == "iso":
        scale = isotropic_scale(spacing)
        if scale is None:
            raise InputError(f"--scale iso: the input's {voxels} mm voxels are already near-isotropic; give a "
                             "factor (e.g. --scale 2)")
    else:
        scale = default_scale(spacing)
        if args.model != "default":
            scale = default_scale(spacing, resolve_model(args.model, scale).metadata.scales)
    if scale != DEFAULT_SCALE or anisotropy(spacing) >= ISOTROPIC_RATIO:
        print(f"mrisuperres: {voxels} mm voxels: enhancing at --scale {format_scale(scale)} (give --scale to choose "
              "another)", file=sys.stderr)
    return scale
