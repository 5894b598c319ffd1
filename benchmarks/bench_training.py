"""Training throughput and peak memory per model family (not a test): prints a table.

For each config in ``configs/`` (or those given), one process per config and device: the config's model, batch and
patch size, random patches, L1 loss, Adam, under the autocast training uses with ``run.amp`` (bfloat16 on CUDA and
on CPUs with bfloat16 instructions, float16 on older GPUs; ``--no-amp``: float32); after two warm-up steps,
``--steps`` timed steps. Reports the precision, patches/s, the FLOPs of one training step (forward + backward,
``torch.utils.flop_counter.FlopCounterMode``), achieved GFLOP/s, and peak resident memory (and peak CUDA memory).

Usage: python benchmarks/bench_training.py [--configs configs/a.yaml ...] [--devices cpu cuda] [--steps 5] [--no-amp]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MRISuperRes"))


def measure(config_path: str, device: str, steps: int, amp: bool = True) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from MRISuperResLib import models
    from MRISuperResLib.engine.device import precision_name, select_device
    from MRISuperResLib.training.config import load_config
    from MRISuperResLib.training.data import integer_scale
    from MRISuperResLib.engine.mixed_precision import autocast, training_dtype

    config = load_config(config_path)
    choice = select_device(device)
    torch.manual_seed(0)
    network = models.create(config.model.family, **config.model.config).to(choice.device)
    scale = integer_scale(config.data.scale or config.model.config.get("scale", [2, 2, 2]))
    patch = config.data.patch_size
    batch = config.data.batch_size
    low = torch.rand(batch, 1, *patch, device=choice.device)
    high_shape = tuple(p * s for p, s in zip(patch, scale))
    target = torch.rand(batch, 1, *high_shape, device=choice.device)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)
    arbitrary = bool(getattr(network, "arbitrary_scale", False))

    dtype = training_dtype(choice, amp)

    def step() -> None:
        with autocast(choice.device, dtype):
            out = network(low, high_shape) if arbitrary else network(low)
        loss = torch.nn.functional.l1_loss(out.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    step()
    if choice.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if choice.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = (time.perf_counter() - start) / steps
    return {
        "config": Path(config_path).name,
        "family": config.model.family,
        "parameters": models.parameter_count(network),
        "device": choice.describe(),
        "precision": precision_name(dtype),
        "patch": "x".join(map(str, patch)),
        "batch": batch,
        "step_s": elapsed,
        "patches_per_s": batch / elapsed,
        "gflop_per_step": counter.get_total_flops() / 1e9,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 1e9 if choice.device.type == "cuda" else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=None)
    parser.add_argument("--devices", nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--no-amp", action="store_true", help="float32 steps (run.amp false)")
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], args.steps, not args.no_amp)))
        return
    import torch

    configs = args.configs or sorted(str(p) for p in (ROOT / "configs").glob("*.yaml"))
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.steps} timed steps\n")
    print("| config | family | params | device | precision | batch x patch | s/step | patches/s | GFLOP/step "
          "| GFLOP/s | peak RSS GB | peak GPU GB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for device in devices:
        for config in configs:
            command = [sys.executable, __file__, "--steps", str(args.steps), "--child", config, device]
            command += ["--no-amp"] if args.no_amp else []
            completed = subprocess.run(command, capture_output=True, text=True)
            if completed.returncode != 0:
                print(f"| {Path(config).name} | failed: {completed.stderr.strip().splitlines()[-1][:80]} |")
                continue
            row = json.loads(completed.stdout.strip().splitlines()[-1])
            print(f"| {row['config']} | {row['family']} | {row['parameters']:,} | {row['device']} | "
                  f"{row['precision']} | {row['batch']} x {row['patch']} | {row['step_s']:.2f} | "
                  f"{row['patches_per_s']:.1f} | "
                  f"{row['gflop_per_step']:.1f} | {row['gflop_per_step'] / row['step_s']:.0f} | "
                  f"{row['peak_rss_gb']:.2f} | {row['peak_gpu_gb']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
