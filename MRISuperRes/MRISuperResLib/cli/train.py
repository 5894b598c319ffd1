"""``mrisuperres train``, ``simulate`` and ``evaluate`` subcommands (wired into :mod:`MRISuperResLib.cli`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .evaluate import add_evaluate_parser, run_evaluate

__all__ = ["add_evaluate_parser", "add_simulate_parser", "add_train_parser", "run_evaluate", "run_simulate", "run_train"]


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train a model from a YAML config (see configs/ for one per family). The run writes its state, "
        "best model, CSV log and curves into output_dir (a relative output_dir is taken from the working "
        "directory, not from the config's folder); --resume continues a stopped or killed run exactly. The "
        "finished model's folder is registered as a user model folder, so the model is then called by its name "
        "(--model NAME). Multi-GPU / multi-node: launch with torchrun (see README).",
    )
    parser.add_argument("--config", required=True, help="YAML training config")
    parser.add_argument("--resume", action="store_true", help="continue the run in output_dir")
    parser.add_argument("--steps", type=int, help="override run.steps")
    parser.add_argument("--device", help="override run.device (auto, cpu, cuda, cuda:N, mps)")
    parser.add_argument("--max-minutes", type=float,
                        help="override run.max_minutes: end the run inside this many minutes, data loading included "
                        "(steps lowered to what the measured pace fits, schedule refitted, best model written)")
    parser.add_argument("--output-dir", help="override output_dir (relative to the working directory)")
    parser.add_argument("--threads", type=int, metavar="N", help="override run.threads: CPU threads for torch")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--no-register", action="store_true",
                        help="do not register the output folder as a user model folder")


def run_train(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..training.config import check_config, load_config
    from ..training.loop import Trainer

    config = load_config(args.config)
    if args.steps:
        config.run.steps = args.steps
    if args.device:
        config.run.device = args.device
    if args.max_minutes is not None:
        config.run.max_minutes = args.max_minutes
    if args.output_dir:
        config.output_dir = str(Path(args.output_dir).resolve())
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be a positive number of CPU threads, got {args.threads}")
        config.run.threads = args.threads
    check_config(config)  # the overrides too
    trainer = Trainer(config, show_progress=not args.quiet)
    if trainer.context.is_main:
        print(f"output folder: {trainer.output_dir}")
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
        if not args.no_register:
            _register(result.model_path, config.name)
    return 0


def _register(model_path: Path, name: str) -> None:
    """Register the model's folder so that the model is called by name; say when the name is taken."""
    from ..engine import model_zoo

    folder = model_zoo.register_model_folder(model_path.parent)
    entry = next((e for e in model_zoo.list_models() if e.name == name), None)
    if entry is not None and entry.path.resolve() == model_path.resolve():
        print(f"registered {folder} as a user model folder: use --model {name}")
    else:
        taken = f"{entry.path}" if entry is not None else "another model"
        print(f"registered {folder} as a user model folder, but the name {name} is taken by {taken}: use --model "
              f"{model_path} (or train with another name)")


def add_simulate_parser(commands: argparse._SubParsersAction) -> None:
    from ..processing.degradation import DEFAULT_KIND, KINDS

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
    parser.add_argument("--kind", default=DEFAULT_KIND,
                        help=f"forward model: {', '.join(KINDS)}, or three comma-separated for i,j,k [{DEFAULT_KIND}]")
    parser.add_argument("--fwhm", type=float, default=1.0, help="Gaussian profile FWHM in coarse voxels [1]")
    parser.add_argument("--gap", type=float, default=0.0, help="slice gap, fraction of the coarse spacing [0]")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="k-space noise std as a fraction of the 99th percentile [0]")
    parser.add_argument("--bias", type=float, default=0.0, help="bias-field amplitude (0.2 = +-20%%) [0]")
    parser.add_argument("--seed", type=int, default=0, help="random seed [0]")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def run_simulate(args: argparse.Namespace) -> int:
    from ..processing.degradation import DegradationSpec, parse_kind
    from ..errors import MRISuperResError
    from ..evaluation.evaluate import simulated_pair
    from ..imaging.geometry import parse_scale
    from ..training.data import integer_scale
    from ..imaging.volume import Volume
    from ..imaging.volume_io import read_volume, write_volume

    scale = integer_scale(parse_scale(args.scale))
    try:
        spec = DegradationSpec(parse_kind(args.kind), fwhm=args.fwhm, gap=args.gap,  # type: ignore[arg-type]
                               noise=(args.noise, args.noise), bias=args.bias)
    except ValueError as error:
        raise MRISuperResError(str(error)) from None
    from ..imaging.output_paths import check_output_plan

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
