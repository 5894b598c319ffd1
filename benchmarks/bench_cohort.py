"""Cohort throughput (not a test): scans per hour, and the share of the time the network is busy.

Makes a folder of mixed real volumes (crops of the development volumes in ``../shared/data/train`` when present,
else of the MNI152 T1 template from nilearn; box-averaged to a 2 mm acquisition; edges of 40 to 56 voxels;
NIfTI float32, NRRD int16 and MetaImage float32), then runs the whole cohort with one loaded model twice: the
three stages of each scan one after the other (``sequential``), and with the next scan read and the previous
one written on threads while the network runs (``overlapped``, what ``mrisuperres enhance`` does). Prints wall
time, scans per hour, the network's busy share (``timings["inference"]`` summed over the scans / wall time) and
the whole enhance's (network + B-spline baseline + consistency).

Usage: python benchmarks/bench_cohort.py [--scans 8] [--threads 1] [--device cpu] [--model default]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MRISuperRes"))
SHARED_TRAIN = ROOT.parent / "shared" / "data" / "train"
FORMATS = ((".nii.gz", "float32"), (".nrrd", "int16"), (".mha", "float32"))
EDGES = (40, 48, 56)


def make_cohort(folder: Path, count: int) -> list[str]:
    """Write ``count`` coarse real volumes into ``folder``; return their descriptions."""
    import numpy as np

    from MRISuperResLib.processing.degradation import box_downsample
    from MRISuperResLib.imaging.geometry import resampled_grid
    from MRISuperResLib.imaging.samples import mni152_t1_path
    from MRISuperResLib.imaging.volume import Grid, Volume
    from MRISuperResLib.imaging.volume_io import read_volume, write_volume

    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(SHARED_TRAIN.glob("*.nii.gz")) if SHARED_TRAIN.is_dir() else []
    sources = sources or [Path(mni152_t1_path())]
    described = []
    for number in range(count):
        source = sources[number % len(sources)]
        volume = read_volume(source)
        edge = EDGES[number % len(EDGES)]
        fine = tuple(min(2 * edge, n - n % 2) for n in volume.shape)
        # a crop around the centre, shifted per scan so that scans of one source differ
        shift = (number // len(sources)) * 6
        start = [max(0, min(n - f, (n - f) // 2 + shift)) for n, f in zip(volume.shape, fine)]
        crop = volume.array[tuple(slice(s, s + f) for s, f in zip(start, fine))].astype(np.float32)
        origin = volume.grid.origin + volume.grid.direction @ (np.array(start) * np.array(volume.spacing))
        crop_grid = Grid(fine, volume.spacing, tuple(origin), volume.grid.direction)
        coarse_shape = tuple(f // 2 for f in fine)
        coarse = box_downsample(crop, coarse_shape)
        extension, dtype = FORMATS[number % len(FORMATS)]
        array = np.clip(np.rint(coarse), -32768, 32767).astype(dtype) if dtype == "int16" else coarse.astype(dtype)
        name = f"scan{number:02d}_{source.name.split('.')[0]}{extension}"
        write_volume(Volume(array, resampled_grid(crop_grid, coarse_shape)), folder / name)
        described.append(f"{name} {'x'.join(map(str, coarse_shape))} {dtype}")
    return described


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="default")
    args = parser.parse_args()

    import torch

    from MRISuperResLib.cohort.plan import plan_cohort
    from MRISuperResLib.cohort.run import run_cohort
    from MRISuperResLib.engine.model_zoo import load_model

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-cohort-") as temporary:
        root = Path(temporary)
        described = make_cohort(root / "scans", args.scans)
        print(f"cohort: {len(described)} volumes from {'shared/data/train' if SHARED_TRAIN.is_dir() else 'MNI152'}")
        for line in described:
            print(f"  {line}")
        model = load_model(args.model, (2, 2, 2))
        options = {"device": args.device, "threads": args.threads}
        # one scan first, so that both runs start with the same warm caches and allocator
        run_cohort(plan_cohort([root / "scans"], root / "warm")[:1], model, (2, 2, 2), options=options)
        rows = []
        for mode, overlap_io in (("sequential", False), ("overlapped", True)):
            items = plan_cohort([root / "scans"], root / f"out-{mode}")
            start = time.perf_counter()
            run = run_cohort(items, model, (2, 2, 2), options=options, overlap_io=overlap_io)
            wall = time.perf_counter() - start
            assert run.count("done") == len(items), [o.error for o in run.outcomes if o.status != "done"]
            io_seconds = sum(o.seconds - o.enhance_seconds for o in run.outcomes) / len(items)
            rows.append((mode, len(items), wall, 3600 * len(items) / wall, run.network_busy, run.enhance_busy,
                         io_seconds))
    print(f"\nmodel {model.name}, x2, device {args.device}, {args.threads} thread(s), torch {torch.__version__}")
    print(f"{'mode':<11} {'scans':>5} {'wall s':>8} {'scans/hour':>11} {'network busy':>13} {'enhance busy':>13} "
          f"{'read+write s/scan':>18}")
    for mode, count, wall, per_hour, network, enhance, io_seconds in rows:
        print(f"{mode:<11} {count:>5} {wall:>8.1f} {per_hour:>11.0f} {100 * network:>12.1f}% {100 * enhance:>12.1f}% "
              f"{io_seconds:>18.2f}")
    print(f"overlapped / sequential throughput: {rows[1][3] / rows[0][3]:.2f}x")


if __name__ == "__main__":
    main()
