"""Where an adaptation step spends its time, per memory layout and arithmetic (not a test): prints a table.

A training step of :func:`MRISuperResLib.engine.adapt.adapt_model` on real pairs: the MNI152 T1 (1 mm, shipped
with nilearn) box-averaged to 4 mm slices along k, bootstrapped with the starting model, cut by
:class:`~MRISuperResLib.engine.adapt_pairs.PairSampler` with the default settings (a batch of four 24 x 24 x 8 ->
24 x 24 x 32 patches) and the thick x4 model. For each layout, after two warm-up steps, ``--steps`` timed steps
split into their stages (drawing the batch, forward, backward, Adam and the weight average) and one held-back
evaluation (8 patches) one patch at a time and a training batch (4) at a time. The FLOPs of a step are counted with
``torch.utils.flop_counter.FlopCounterMode``; the machine's peak is the best GFLOP/s of one 64-channel 3x3x3
convolution (``bench_enhance.conv3d_peak_gflops``). ``--arithmetic`` runs the forward and backward passes in
float32 or under bfloat16 autocast (weights, Adam and loss float32), as :func:`~MRISuperResLib.engine.adapt.adapt_model`
does (:func:`~MRISuperResLib.engine.adapt.fine_tuning_dtype`); the held-back evaluation is float32 in both, as there.

Usage: python benchmarks/bench_adapt_step.py [--threads 2] [--steps 20] [--layouts channels-last]
[--arithmetic float32 bfloat16]
"""

from __future__ import annotations

import argparse
import copy
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MRISuperRes"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np
import torch
from bench_enhance import conv3d_peak_gflops
from MRISuperResLib.engine.adapt import AdaptSettings, in_plane_spec, thick_ratio, warmed_up_ema
from MRISuperResLib.engine.adapt_pairs import PairSampler
from MRISuperResLib.engine.model_zoo import load_model
from MRISuperResLib.processing.bspline import bspline_upsample
from MRISuperResLib.processing.degradation import box_downsample
from MRISuperResLib.imaging.samples import mni152_t1_path
from MRISuperResLib.imaging.volume_io import read_volume
from MRISuperResLib.engine.mixed_precision import autocast
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel
from torch.utils.flop_counter import FlopCounterMode

SCALE = (1.0, 1.0, 4.0)
LAYOUTS = {"contiguous": torch.contiguous_format, "channels-last": torch.channels_last_3d}
ARITHMETIC = {"float32": None, "bfloat16": torch.bfloat16}


def pairs() -> tuple[PairSampler, object]:
    """The default sampler on the bootstrapped MNI152 (network axis order, thick axis last) and the model."""
    model = load_model("edsr3d-thick-x4-brain", SCALE)
    settings = AdaptSettings()
    order, ratio = thick_ratio(model, SCALE)
    fine = read_volume(mni152_t1_path()).array.astype(np.float32)
    fine = fine[:, :, : fine.shape[2] // ratio * ratio] / np.percentile(fine, 99)
    centre = [n // 2 for n in fine.shape[:2]]
    fine = fine[centre[0] - 48:centre[0] + 48, centre[1] - 48:centre[1] + 48]
    thick = box_downsample(fine, (fine.shape[0], fine.shape[1], fine.shape[2] // ratio))
    low = torch.from_numpy(np.ascontiguousarray(thick))[None, None]
    with torch.inference_mode():
        pool = (model.network.eval()(low.clamp(0, 1)) + bspline_upsample(low, (1, 1, ratio)))[0, 0].numpy()
    spec = in_plane_spec(model, float(ratio), settings)
    return PairSampler(pool, pool > 0.1, ratio, spec, settings, ratio, True), model


def timed(function, *args):
    start = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - start


def measure(sampler: PairSampler, model, layout: torch.memory_format, steps: int,
            dtype: torch.dtype | None = None) -> dict:
    settings = AdaptSettings()
    network = copy.deepcopy(model.network).train().to(memory_format=layout)
    optimizer = torch.optim.Adam(network.parameters(), lr=settings.learning_rate)
    averaged = AveragedModel(network, multi_avg_fn=warmed_up_ema(settings.ema))
    rng = np.random.default_rng(0)

    def forward(low, baseline, target):
        with autocast(torch.device("cpu"), dtype):
            residual = network(low.contiguous(memory_format=layout))
        return F.l1_loss(residual.float() + baseline, target)

    def update(loss):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()

    def average():
        optimizer.step()
        averaged.update_parameters(network)

    counter = FlopCounterMode(display=False)
    with counter:
        update(forward(*sampler.draw(rng, settings.batch_size, held_back=False, augment=True)))
    average()
    update(forward(*sampler.draw(rng, settings.batch_size, held_back=False, augment=True)))
    average()
    stages = {"draw batch": 0.0, "forward": 0.0, "backward": 0.0, "Adam + average": 0.0}
    for _ in range(steps):
        batch, seconds = timed(sampler.draw, rng, settings.batch_size, False, True)
        stages["draw batch"] += seconds
        loss, seconds = timed(forward, *batch)
        stages["forward"] += seconds
        stages["backward"] += timed(update, loss)[1]
        stages["Adam + average"] += timed(average)[1]
    validation_rng = np.random.default_rng(1)
    held = sampler.draw_batches(validation_rng, settings.validation_patches, 1, held_back=True, augment=False)
    batched = sampler.draw_batches(np.random.default_rng(1), settings.validation_patches, settings.batch_size,
                                   held_back=True, augment=False)
    network.eval()

    def evaluate(batches):
        with torch.inference_mode():
            for low, baseline, target in batches:
                F.l1_loss(network(low.contiguous(memory_format=layout)) + baseline, target)

    evaluate(held)
    one_by_one = min(timed(evaluate, held)[1] for _ in range(2))
    per_batch = min(timed(evaluate, batched)[1] for _ in range(2))
    step = sum(stages.values()) / steps
    return {"step": step, "shares": {k: v / steps / step for k, v in stages.items()},
            "gflop": counter.get_total_flops() / 1e9, "one_by_one": one_by_one, "per_batch": per_batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--layouts", nargs="*", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--arithmetic", nargs="*", default=["float32"], choices=list(ARITHMETIC),
                        help="float32 and/or bfloat16 autocast of the forward and backward passes [float32]")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sampler, model = pairs()
    peak = conv3d_peak_gflops("cpu")
    print(f"torch {torch.__version__}, {args.threads} threads; measured conv3d peak {peak:.0f} GFLOP/s; "
          f"{args.steps} timed steps per layout, batch of four 24x24x8 -> 24x24x32 pairs (thick x4 model)\n")
    print("| layout | arithmetic | s / step | steps in 180 s | draw batch | forward | backward | Adam + average | GFLOP / step | "
          "GFLOP/s (% of peak) | held-back, 8 patches one at a time | held-back, batches of 4 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.layouts:
        for arithmetic in args.arithmetic:
            row = measure(sampler, model, LAYOUTS[name], args.steps, ARITHMETIC[arithmetic])
            shares = " | ".join(f"{100 * v:.0f} %" for v in row["shares"].values())
            rate = row["gflop"] / row["step"]
            print(f"| {name} | {arithmetic} | {row['step']:.3f} | {180 / row['step']:.0f} | {shares} | {row['gflop']:.1f} | "
              f"{rate:.0f} ({100 * rate / peak:.0f} %) | {row['one_by_one']:.2f} s | {row['per_batch']:.2f} s |",
              flush=True)
    print(f"\npeak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
