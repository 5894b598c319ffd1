"""``mrisuperres train``, ``simulate`` and ``evaluate`` subcommands (wired into :mod:`.cli`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train a model from a YAML config (see configs/ for one per family). The run writes its state, "
        "best model, CSV log and curves into output_dir; --resume continues a stopped or killed run exactly. "
        "Multi-GPU / multi-node: launch with torchrun (see README).",
    )
    parser.add_argument("--config", required=True, help="YAML training config")
    parser.add_argument("--resume", action="store_true", help="continue the run in output_dir")
    parser.add_argument("--steps", type=int, help="override run.steps")
    parser.add_argument("--device", help="override run.device (auto, cpu, cuda, cuda:N, mps)")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_train(args: argparse.Namespace) -> int:
    from .training.config import load_config
    from .training.loop import Trainer

    config = load_config(args.config)
    if args.steps:
        config.run.steps = args.steps
    if args.device:
        config.run.device = args.device
    if args.output_dir:
        config.output_dir = str(Path(args.output_dir).resolve())
    trainer = Trainer(config, show_progress=not args.quiet)
    result = trainer.run(resume=args.resume)
    if not trainer.context.is_main:
        return 0
    if result.interrupted:
        print(f"stopped at step {result.steps_done}; state saved: continue with --resume")
        return 130
    if result.best is not None:
        best = result.best
        print(f"best validation PSNR {best.psnr:.2f} dB (B-spline {best.baseline_psnr:.2f}, "
              f"{best.psnr - best.baseline_psnr:+.2f}) SSIM {best.ssim:.4f} at step {result.best_step}"
              + ("; stopped early" if result.stopped_early else ""))
    if result.model_path is not None:
        print(f"model: {result.model_path}")
    return 0


def add_simulate_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "simulate",
        help="simulate a low-resolution acquisition of a high-resolution volume",
        description="Write a low-resolution version of HIGH on the cell-centred grid SCALE times coarser over the "
        "same extent, with a forward model (k-space truncation, box or Gaussian slice profile), optional slice gap, "
        "k-space noise and bias field.",
    )
    parser.add_argument("high", help="high-resolution volume")
    parser.add_argument("output", help="low-resolution output volume")
    parser.add_argument("--scale", default="2", help="factor or i,j,k factors, whole numbers [2]")
    parser.add_argument("--kind", default="kspace",
                        help="kspace, box or gaussian, or three comma-separated for i,j,k [kspace]")
    parser.add_argument("--fwhm", type=float, default=1.0, help="Gaussian profile FWHM in coarse voxels [1]")
    parser.add_argument("--gap", type=float, default=0.0, help="slice gap, fraction of the coarse spacing [0]")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="k-space noise std as a fraction of the 99th percentile [0]")
    parser.add_argument("--bias", type=float, default=0.0, help="bias-field amplitude (0.2 = +-20%%) [0]")
    parser.add_argument("--seed", type=int, default=0, help="random seed [0]")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def run_simulate(args: argparse.Namespace) -> int:
    from .degradation import DegradationSpec
    from .errors import MRISuperResError
    from .evaluation import simulated_pair
    from .geometry import parse_scale
    from .training.data import integer_scale
    from .volume import Volume
    from .volume_io import read_volume, write_volume

    scale = integer_scale(parse_scale(args.scale))
    kinds = args.kind.split(",")
    try:
        spec = DegradationSpec(kinds[0] if len(kinds) == 1 else tuple(kinds), fwhm=args.fwhm, gap=args.gap,
                               noise=(args.noise, args.noise), bias=args.bias)
    except ValueError as error:
        raise MRISuperResError(str(error)) from None
    from .output_paths import check_output_plan

    # Name, folder, existing file and output-on-input checks before any work; written with a lower-case extension.
    check_output_plan([(Path(args.high), {"simulated": Path(args.output)})], overwrite=args.overwrite, sidecar=False)
    high = read_volume(args.high)
    cropped, low = simulated_pair(high, tuple(float(s) for s in scale), spec, args.seed)  # type: ignore[arg-type]
    usable = cropped.shape
    metadata = {"MRISuperRes.simulated": json.dumps({"source": Path(args.high).name, "scale": list(scale),
                                                      "degradation": spec.to_dict(), "seed": args.seed})}
    written = write_volume(Volume(low.array, low.grid, metadata), args.output, overwrite=args.overwrite,
                           description=f"simulated x{','.join(map(str, scale))} {args.kind} from "
                           f"{Path(args.high).name}")
    if usable != high.shape:
        print(f"note: {args.high} was cropped to {usable} voxels so the scale divides it")
    print(f"{written}: {low.shape} voxels at {', '.join(f'{s:g}' for s in low.spacing)} mm")
    return 0


def add_evaluate_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="PSNR/SSIM of a model and of B-spline against high-resolution references",
        description="For each high-resolution REFERENCE, simulate a low-resolution input (the model's own forward "
        "model unless --kind is given; noise from --seed), enhance it and score SR and B-spline against the "
        "reference: PSNR with the 1-99 percentile range as peak, inside the head and over the whole volume, and 3D "
        "SSIM. With --low, score real registered low-resolution inputs instead (one per reference).",
    )
    parser.add_argument("references", nargs="+", metavar="REFERENCE", help="high-resolution volumes")
    parser.add_argument("--model", default="default", help="model name or path [default]")
    parser.add_argument("--scale", default="2", help="factor or i,j,k factors [2]")
    parser.add_argument("--low", nargs="+", help="real low-resolution inputs, one per reference, same order")
    parser.add_argument("--kind", help="forward model for the simulation: kspace, box, gaussian (or i,j,k list)")
    parser.add_argument("--noise", type=float, default=None, help="k-space noise level (fraction of p99)")
    parser.add_argument("--gap", type=float, default=0.0, help="slice gap for box/gaussian profiles [0]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated noise [0]")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps [auto]")
    parser.add_argument("--flip-ensemble", action="store_true",
                        help="average the network over the 8 flips of each input (test-time ensemble, 8 passes)")
    parser.add_argument("--context", metavar="NAME=VALUE,...",
                        help="conditioning values for a model conditioned on a context (the same for every reference)")
    parser.add_argument("--output", metavar="MD", help="also write the table to this Markdown file")
    parser.add_argument("--figure", metavar="FOLDER",
                        help="write one PNG per reference into this existing folder (rows axial/coronal/sagittal; "
                             "columns input, baseline, SR, reference, difference, consistency)")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")


def run_evaluate(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .errors import MRISuperResError
    from .evaluation import evaluate_files, evaluation_spec, scores_table
    from .geometry import parse_scale
    from .model_zoo import load_model

    scale = parse_scale(args.scale)
    if args.low and len(args.low) != len(args.references):
        raise MRISuperResError(f"--low has {len(args.low)} volumes for {len(args.references)} references; "
                               "give one per reference")
    model = load_model(args.model, scale)
    spec = None
    if args.kind or args.noise is not None or args.gap:
        try:
            spec = evaluation_spec(model.metadata.get("degradation"), args.kind, args.noise, args.gap)
        except ValueError as error:
            raise MRISuperResError(str(error)) from None
    scores = evaluate_files(args.references, model, scale, spec, seed=args.seed, low_inputs=args.low,
                            figure_folder=args.figure, device=args.device,
                            flip_ensemble=args.flip_ensemble, context=args.context)
    table = scores_table(scores, model.name, scale)
    if args.output:
        from .verified_write import replace_text_file

        replace_text_file(args.output, table + "\n")
    if args.json:
        print(json.dumps({"model": model.name, "scale": list(scale),
                          "volumes": [{**asdict(s), "gain": s.gain} for s in scores]}, indent=2))
    else:
        print(table)
    return 0
