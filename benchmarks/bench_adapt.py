"""Benchmark of per-scan adaptation: time and PSNR gain per budget, on thick slices simulated from real volumes.

For each held-out reference (``../shared/data/eval`` brain heads, ``pairs/IXI002_T1`` and ``_T2``, the MNI152 T1
from nilearn, then the out-of-domain prostate of ``eval/``), cropped around the head to keep runs short, a thick-slice input is simulated with the project's evaluation
(:func:`MRISuperResLib.evaluation.evaluate.simulated_pair`: box slice profile along k, no noise unless ``--noise``). The
starting model and the adapted model enhance the same input; PSNR is scored inside the head mask against the
1 mm truth (:func:`MRISuperResLib.evaluation.evaluate.score_volume`). Budgets are given in steps (comparable on a busy
machine) and/or seconds; the table reports both, and the machine's load average.

  python benchmarks/bench_adapt.py --steps 0 30 100 --threads 2
  python benchmarks/bench_adapt.py --seconds 30 60 180 --threads 2

``--precision auto float32`` adapts once per precision (:attr:`AdaptSettings.precision`; on a CPU both run the
bootstrap pass in float32, and ``auto`` fine-tunes under bfloat16 autocast where the CPU has bfloat16 instructions,
see :func:`MRISuperResLib.engine.adapt.fine_tuning_dtype`); the ``fine-tuning`` column says which arithmetic ran and
``s / step`` is the adaptation's seconds after the bootstrap pass per step (held-back evaluations included):

  python benchmarks/bench_adapt.py --steps 100 --threads 2 --precision float32 auto --volumes ...

``--oracle`` adds, per budget, the same fine-tuning (trainable layers, learning rate, batch, patch sizes, budget)
on pairs cut from the simulated input and its 1 mm truth instead of the scan's own in-plane pairs: supervised
fine-tuning on the very volume being scored, which no user has. It bounds what any self-supervised adaptation of
this model can gain in that budget.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MRISuperRes"))

import numpy as np
import torch
from MRISuperResLib.engine.adapt import TRAINABLE, AdaptSettings, adapt_model
from MRISuperResLib.engine.device import PRECISIONS
from MRISuperResLib.engine.enhance import enhance_volume
from MRISuperResLib.errors import InputError
from MRISuperResLib.evaluation.evaluate import evaluation_spec, score_volume, simulated_pair
from MRISuperResLib.imaging.geometry import parse_scale
from MRISuperResLib.engine.model_zoo import load_model
from MRISuperResLib.imaging.samples import mni152_t1_path
from MRISuperResLib.processing.masks import foreground_mask
from MRISuperResLib.imaging.volume import Grid, Volume
from MRISuperResLib.imaging.volume_io import read_volume

SHARED = Path(os.environ.get("MRISUPERRES_SHARED_DATA", ROOT.parent / "shared" / "data"))
BRAIN_EVAL = ["eval/philips_ingenia_T1w_head.nii.gz", "eval/arc_M2304_T1w_head.nii.gz",
              "eval/arc_M2265_T2w_head.nii.gz", "pairs/IXI002_T1.nii.gz", "pairs/IXI002_T2.nii.gz"]
OUT_OF_DOMAIN = ["eval/prostate_T2w.nii.gz"]


def crop_to_head(volume: Volume, edge: tuple[int, int, int]) -> Volume:
    """A window of at most ``edge`` voxels centred on the head's bounding box (same spacing, moved origin)."""
    mask = foreground_mask(volume)
    start = []
    for axis in range(3):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        centre = (present[0] + present[-1] + 1) // 2 if present.size else volume.shape[axis] // 2
        size = min(edge[axis], volume.shape[axis])
        start.append(int(np.clip(centre - size // 2, 0, volume.shape[axis] - size)))
    region = tuple(slice(s, s + min(e, n)) for s, e, n in zip(start, edge, volume.shape))
    origin = volume.grid.physical_points(np.asarray([start], dtype=float))[0]
    grid = Grid(tuple(r.stop - r.start for r in region), volume.spacing, tuple(float(o) for o in origin),
                volume.grid.direction)
    return Volume(np.ascontiguousarray(volume.array[region]).astype(np.float32), grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="*", default=[], help="step budgets")
    parser.add_argument("--seconds", type=float, nargs="*", default=[], help="time budgets (s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ratio", type=int, default=4)
    parser.add_argument("--crop", type=float, nargs=3, default=[128, 128, 96],
                        help="largest extent (mm) of the truth kept around the head, per axis (i, j, k)")
    parser.add_argument("--crop-in-voxels", action="store_true",
                        help="read --crop as voxel counts (the earlier tables of docs/adapt_benchmark.md; the same for 1 mm truths)")
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--sampling", nargs="*", default=["bootstrap"])
    parser.add_argument("--trainable", default=AdaptSettings.trainable, choices=TRAINABLE)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="other AdaptSettings fields, e.g. ema=0.99 batch_size=8 seed=1 (budgets, sampling, "
                             "layers and learning rate have their own options)")
    parser.add_argument("--precision", nargs="*", default=["auto"], choices=PRECISIONS,
                        help="adapt once per precision: the bootstrap pass's and the fine-tuning's arithmetic "
                             "(AdaptSettings.precision) [auto]")
    parser.add_argument("--volumes", nargs="*", help="reference paths (default: the evaluation set, brains first, "
                        "then the prostate)")
    parser.add_argument("--oracle", action="store_true",
                        help="also fine-tune on the truth's own pairs (an upper bound, see the docstring)")
    parser.add_argument("--real-figure", metavar="PNG",
                        help="instead: adapt to the real thick scan thick/T2w_1x1x2 (scale 1,1,2, --seconds or "
                             "--steps budget) and save a before/after figure here")
    args = parser.parse_args()
    try:
        with_overrides(AdaptSettings(), args)
    except (AttributeError, TypeError, ValueError, InputError) as error:
        parser.error(f"--set: {error}")
    if min(args.crop) <= 0:
        parser.error(f"--crop must be positive, got {' '.join(f'{c:g}' for c in args.crop)}")
    torch.set_num_threads(args.threads)
    if args.real_figure:
        real_figure(Path(args.real_figure), args)
        return
    scale = parse_scale(f"1,1,{args.ratio}")
    model = load_model(f"edsr3d-thick-x{args.ratio}-brain", scale)
    spec = evaluation_spec(model.metadata.degradation, kind="box", noise=args.noise)
    paths = args.volumes or ([str(SHARED / p) for p in BRAIN_EVAL if (SHARED / p).is_file()] + [str(mni152_t1_path())]
                             + [str(SHARED / p) for p in OUT_OF_DOMAIN if (SHARED / p).is_file()])
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; torch threads {args.threads}")
    print(f"model {model.name}, scale 1,1,{args.ratio}, box profile, noise {args.noise}, truth cropped to "
          f"<= {'x'.join(f'{c:g}' for c in args.crop)} {'voxels' if args.crop_in_voxels else 'mm'} around the head; "
          "PSNR in dB inside the head mask")
    print()
    print("| volume | sampling | fine-tuning | budget | steps | adapt s | s / step | held-back L1 before -> after | "
          "PSNR B-spline | PSNR start | PSNR adapted | adaptation gain |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for index, path in enumerate(paths):
        truth = read_volume(path)
        edge = tuple(round(c) if args.crop_in_voxels else round(c / s) for c, s in zip(args.crop, truth.spacing))
        reference = crop_to_head(truth, edge)
        high, low = simulated_pair(reference, scale, spec, seed=index)
        mask = foreground_mask(high)
        name = Path(path).name.replace(".nii.gz", "")
        start = score_volume(name, enhance_volume(low, model, scale, consistency=False), high, mask)
        budgets = [("steps", s) for s in args.steps] + [("seconds", s) for s in args.seconds]
        for sampling in args.sampling:
            for kind, value in budgets:
                for precision in args.precision:
                    settings = AdaptSettings(seconds=value if kind == "seconds" else None,
                                             steps=int(value) if kind == "steps" else None, sampling=sampling,
                                             trainable=args.trainable, seed=0, precision=precision)
                    settings = with_overrides(settings, args)
                    adapted, report = adapt_model(low, model, scale, settings)
                    after = score_volume(name, enhance_volume(low, adapted, scale, consistency=False), high, mask)
                    gain = after.psnr_sr - start.psnr_sr
                    rows.append(gain)
                    budget = f"{value:g} {'steps' if kind == 'steps' else 's'}"
                    per_step = (report.seconds - report.bootstrap_seconds) / max(report.steps, 1)
                    print(f"| {name} | {sampling} | {report.arithmetic} ({precision}) | {budget} | {report.steps} | "
                          f"{report.seconds:.0f} | {per_step:.2f} | {report.held_back_before:.5f} -> "
                          f"{report.held_back_after:.5f} (best step {report.best_step}) | "
                          f"{start.psnr_baseline:.2f} | {start.psnr_sr:.2f} | {after.psnr_sr:.2f} | {gain:+.2f} |",
                          flush=True)
        for kind, value in budgets if args.oracle else []:
            settings = AdaptSettings(seconds=value if kind == "seconds" else None,
                                     steps=int(value) if kind == "steps" else None, trainable=args.trainable, seed=0)
            settings = with_overrides(settings, args)
            tuned, steps, seconds = oracle_tuned(model, low, high, scale, settings)
            after = score_volume(name, enhance_volume(low, tuned, scale, consistency=False), high, mask)
            budget = f"{value:g} {'steps' if kind == 'steps' else 's'}"
            print(f"| {name} | oracle (truth pairs) | float32 | {budget} | {steps} | {seconds:.0f} | "
                  f"{seconds / max(steps, 1):.2f} | - | "
                  f"{start.psnr_baseline:.2f} | {start.psnr_sr:.2f} | {after.psnr_sr:.2f} | "
                  f"{after.psnr_sr - start.psnr_sr:+.2f} |", flush=True)
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


def with_overrides(settings: AdaptSettings, args: argparse.Namespace) -> AdaptSettings:
    """``settings`` with ``--lr`` and each ``--set FIELD=VALUE`` applied (the value parsed as the field's type).

    Raises:
        ValueError: no ``=``, a field with its own option (so the table's labels stay true) or a bad value.
        AttributeError: an unknown field.
    """
    changes: dict = {"learning_rate": args.lr} if args.lr else {}
    for item in args.set:
        field, equals, value = item.partition("=")
        if not equals:
            raise ValueError(f"{item!r} is not FIELD=VALUE")
        if field in ("seconds", "steps", "sampling", "trainable", "learning_rate", "precision"):
            raise ValueError(f"{field} has its own option (--seconds, --steps, --sampling, --trainable, --lr, "
                             "--precision)")
        if not hasattr(settings, field):
            raise AttributeError(f"AdaptSettings has no field {field!r}")
        current = getattr(settings, field)
        if isinstance(current, bool):
            if value.lower() not in ("true", "false"):
                raise ValueError(f"{field} takes true or false, not {value!r}")
            changes[field] = value.lower() == "true"
        else:
            changes[field] = value if isinstance(current, str) else type(current)(value) if current is not None \
                else float(value)
    return replace(settings, **changes)


def oracle_tuned(model, low: Volume, high: Volume, scale, settings: AdaptSettings):
    """Fine-tune a copy of ``model`` as :func:`adapt_model` does, but on ``(low, high)`` patches of the simulated
    input and its truth (thick axis k, ratio ``r``): input ``(patch, patch, low_patch)``, target ``r`` times
    longer along k. Its weights are averaged as :func:`adapt_model` averages them (``settings.ema``) and the last
    average is returned (no held-back selection). Returns the tuned model, its steps and seconds."""
    import copy
    import time

    from torch.nn import functional as F

    from torch.optim.swa_utils import AveragedModel

    from MRISuperResLib.engine.adapt import adapted_model, warmed_up_ema
    from MRISuperResLib.engine.adapt_pairs import in_plane_spec
    from MRISuperResLib.processing.bspline import bspline_upsample
    from MRISuperResLib.processing.normalization import PercentileNormalizer

    ratio = int(scale[2])
    norm = model.metadata.normalization or {}
    normalizer = PercentileNormalizer.fit(low.array, float(norm.get("lower_percentile", 1.0)),
                                          float(norm.get("upper_percentile", 99.0)))
    clip = bool(norm.get("clip", True))
    low_n, high_n = normalizer.normalize(low.array, clip=False), normalizer.normalize(high.array, clip=False)
    head = foreground_mask(low)
    network = copy.deepcopy(model.network)
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(settings.trainable == "all" or name.startswith(("upsample.", "tail.")))
    optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=settings.learning_rate)
    averaged = AveragedModel(network, multi_avg_fn=warmed_up_ema(settings.ema)) if settings.ema else None
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    edge, depth = settings.patch, settings.low_patch
    centres = np.argwhere(head)
    start_time, step = time.perf_counter(), 0
    while (settings.steps is None or step < settings.steps) and (
            settings.seconds is None or time.perf_counter() - start_time < settings.seconds):
        lows, highs = [], []
        for _ in range(settings.batch_size):
            c = centres[rng.integers(len(centres))]
            i = int(np.clip(c[0] - edge // 2, 0, low.shape[0] - edge))
            j = int(np.clip(c[1] - edge // 2, 0, low.shape[1] - edge))
            k = int(np.clip(c[2] - depth // 2, 0, low.shape[2] - depth))
            lows.append(low_n[i:i + edge, j:j + edge, k:k + depth])
            highs.append(high_n[i:i + edge, j:j + edge, ratio * k:ratio * (k + depth)])
        x = torch.from_numpy(np.stack(lows).astype(np.float32))[:, None]
        target = torch.from_numpy(np.stack(highs).astype(np.float32))[:, None]
        with torch.no_grad():
            baseline = bspline_upsample(x, (1, 1, ratio))
        network.train()
        loss = F.l1_loss(network(x.clamp(0, 1) if clip else x) + baseline, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if averaged is not None:
            averaged.update_parameters(network)
        step += 1
    if averaged is not None:
        network = averaged.module
    network.requires_grad_(False)
    network.eval()
    from MRISuperResLib.engine.adapt_result import AdaptationReport

    seconds = time.perf_counter() - start_time
    record = AdaptationReport(steps=step, seconds=seconds, bootstrap_seconds=0.0, best_step=step,
                              held_back_before=float("nan"), held_back_after=float("nan"), history=[],
                              settings={}, input_sha256="oracle")
    spec = in_plane_spec(model, float(low.spacing[2]), settings)
    return adapted_model(model, network, record, scale, spec, settings, "oracle"), step, seconds


def real_figure(path: Path, args: argparse.Namespace) -> None:
    """Before/after adaptation on the real thick-slice T2w (no ground truth): input, starting model, adapted model
    and their difference, three orthogonal views."""
    from MRISuperResLib.engine.figure import save_figure

    scale = parse_scale("1,1,2")
    model = load_model("edsr3d-thick-x2-brain", scale)
    low = read_volume(SHARED / "thick" / "T2w_1x1x2.nii.gz")
    start = enhance_volume(low, model, scale)
    settings = AdaptSettings(seconds=args.seconds[0] if args.seconds else None,
                             steps=args.steps[0] if args.steps else None, seed=0)
    adapted, report = adapt_model(low, model, scale, settings, source_name="T2w_1x1x2.nii.gz")
    after = enhance_volume(low, adapted, scale)
    panels = {"input (1x1x2 mm)": low, "starting model": start.sr, "adapted": after.sr,
              "difference adapted - start": start.sr.with_array(after.sr.array - start.sr.array)}
    title = (f"T2w_1x1x2 x1,1,2: adapted {report.steps} steps / {report.seconds:.0f} s, held-back L1 "
             f"{report.held_back_before:.4f} -> {report.held_back_after:.4f} (AI-generated, not acquired)")
    save_figure(path, panels, title=title, overwrite=True)
    print(f"{path}: steps {report.steps}, {report.seconds:.0f} s (bootstrap {report.bootstrap_seconds:.0f} s), "
          f"held-back L1 {report.held_back_before:.5f} -> {report.held_back_after:.5f} (best step "
          f"{report.best_step}); consistency NRMSE start {start.consistency_nrmse:.4f}, "
          f"adapted {after.consistency_nrmse:.4f}; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
