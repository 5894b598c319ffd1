"""Speed and memory of ``enhance`` (not a test): prints a table.

For 128^3, 192^3 and 256^3 outputs (``--sizes``, output edge in voxels) at a scale (``--scale``: x2, or 1,1,4 for
4x thick slices; the input is the output divided by it) with a model (``--model``: the default for the scale, a
name or a file), on the CPU (and CUDA when present), each size in a fresh process so peak memory is its own: wall time of the whole enhance, of the B-spline baseline and of the
network part, the network's FLOPs (``torch.utils.flop_counter.FlopCounterMode`` on meta tensors of every window
the tiler runs, halo included), achieved GFLOP/s,
and that as a share of a conv3d peak measured on the same machine in the same run (64->64 channels, 3^3 kernel,
float32), and peak resident memory (and peak CUDA memory). ``--precision`` is enhance's (``bfloat16`` runs the
network in bfloat16 on CPUs with AVX512-BF16 or AMX too; the device column then ends in ``bfloat16``, and the share
of the float32 peak can pass 100 %).

Usage: python benchmarks/bench_enhance.py [--sizes 128 192 256] [--scale 2] [--devices cpu cuda] [--model default]
       [--precision auto|float32|bfloat16]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MRISuperRes"))


def conv3d_peak_gflops(device: str, channels: int = 64, size: int = 48, repeats: int = 5) -> float:
    """Best GFLOP/s of one float32 3x3x3 convolution (the op these networks spend their time in)."""
    import torch

    conv = torch.nn.Conv3d(channels, channels, 3, padding=1).to(device)
    x = torch.randn(1, channels, size, size, size, device=device)
    flops = 2.0 * channels * channels * 27 * size**3
    best = math.inf
    with torch.inference_mode():
        for _ in range(repeats + 1):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            conv(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def measure_one(size: int, device: str, model_name: str, scale: tuple[int, int, int],
                precision: str = "auto") -> dict:
    """Enhance one synthetic brain-like volume to a ``size``^3 output at ``scale`` (runs in its own process)."""
    import copy

    import numpy as np
    import torch
    from monai.data.utils import dense_patch_slices
    from torch.utils.flop_counter import FlopCounterMode

    from MRISuperResLib.processing.degradation import fourier_resample
    from MRISuperResLib.engine.device import select_device
    from MRISuperResLib.engine.enhance import enhance_volume
    from MRISuperResLib.engine.inference import choose_tile, count_tiles, receptive_radius
    from MRISuperResLib.engine.model_zoo import load_model
    from MRISuperResLib.imaging.volume import Grid, Volume

    rng = np.random.default_rng(0)
    shape = tuple(size // s for s in scale)
    array = fourier_resample(rng.normal(size=(24, 24, 24)), shape) * 100 + 500
    volume = Volume(array.astype(np.float32), Grid(shape, tuple(float(s) for s in scale), (0.0,) * 3))
    model = load_model(model_name, tuple(float(s) for s in scale))
    choice = select_device(device)
    tile = choose_tile(model.network.to(choice.device), volume.shape, choice.device)
    tiles = count_tiles(volume.shape, tile, 0.0)
    halo = receptive_radius(model.network)
    meta_network = copy.deepcopy(model.network).to("meta")
    flops = 0
    for window in dense_patch_slices(volume.shape, tile, tile):
        grown = [min(n, w.stop + halo) - max(0, w.start - halo) for w, n in zip(window, volume.shape)]
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            meta_network(torch.zeros(1, 1, *grown, device="meta"))
        flops += counter.get_total_flops()
    if choice.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    enhance_volume(volume, model, scale, device=device, tile=tile, precision=precision)  # warm-up (kernels, allocator)
    result = enhance_volume(volume, model, scale, device=device, tile=tile, precision=precision)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak_gpu = torch.cuda.max_memory_allocated() if choice.device.type == "cuda" else 0
    return {
        "input": "x".join(map(str, shape)),
        "output": "x".join(map(str, result.sr.shape)),
        "device": result.device,
        "model": model.name,
        "tile": "x".join(map(str, tile)),
        "tiles": tiles,
        "total_s": result.timings["total"],
        "baseline_s": result.timings["baseline"],
        "network_s": result.timings["inference"],
        "gflop": flops / 1e9,
        "peak_rss_gb": peak_rss / 1e9,
        "peak_gpu_gb": peak_gpu / 1e9,
    }


def main() -> None:
    from MRISuperResLib.engine.options import PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 192, 256], help="output edge, voxels")
    parser.add_argument("--scale", default="2", help="2, or i,j,k factors such as 1,1,4 [2]")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--model", default="default")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    from MRISuperResLib.errors import MRISuperResError
    from MRISuperResLib.imaging.geometry import is_integer_scale, parse_scale

    try:
        parsed = parse_scale(args.scale)
    except MRISuperResError:
        parsed = (0.0, 0.0, 0.0)
    if not is_integer_scale(parsed) or min(parsed) < 1 or max(parsed) < 2:
        parser.error(f"--scale {args.scale}: give whole factors >= 1, one or three, at least one >= 2 (2 or 1,1,4)")
    scale = tuple(int(f) for f in parsed)
    if args.child:
        print(json.dumps(measure_one(int(args.child[0]), args.child[1], args.model, scale, args.precision)))
        return

    import torch

    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, model {args.model}, scale {args.scale}\n")
    print("| device | input | tile x n | total s | B-spline s | network s | network GFLOP | GFLOP/s "
          "| conv3d peak GFLOP/s | % of peak | peak RSS GB | peak GPU GB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for device in devices:
        peak = conv3d_peak_gflops(device)
        for size in args.sizes:
            output = subprocess.run(
                [sys.executable, __file__, "--model", args.model, "--scale", args.scale, "--precision", args.precision,
                 "--child", str(size), device],
                check=True, capture_output=True, text=True,
            ).stdout
            row = json.loads(output.strip().splitlines()[-1])
            achieved = row["gflop"] / row["network_s"]
            print(f"| {row['device']} | {row['input']} -> {row['output']} | {row['tile']} x {row['tiles']} | "
                  f"{row['total_s']:.2f} | {row['baseline_s']:.2f} | {row['network_s']:.2f} | {row['gflop']:.0f} | {achieved:.0f} | "
                  f"{peak:.0f} | {100 * achieved / peak:.0f} | {row['peak_rss_gb']:.2f} | {row['peak_gpu_gb']:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
