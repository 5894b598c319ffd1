"""What verifying an output costs (not a test): prints a table.

For one output volume (the MNI152 T1 template from nilearn as float32, zero-padded to ``--size`` voxels a side,
so it compresses like a real head), per format: the time of the unverified write (conversion to a SimpleITK image and
``sitk.WriteImage``, what the engine did before), and of ``write_volume`` as the engine writes every output now (staged write, ``fsync``, full read-back compared voxel by
voxel with the result, rename); best of ``--repeats`` runs.

Usage: python benchmarks/bench_verified_write.py [--size 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MRISuperRes"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import SimpleITK as sitk

    from MRISuperResLib.imaging.samples import mni152_t1_path
    from MRISuperResLib.imaging.volume import Grid, Volume
    from MRISuperResLib.imaging.volume_io import read_volume, to_sitk, write_volume

    head = read_volume(mni152_t1_path()).array.astype(np.float32)[: args.size, : args.size, : args.size]
    array = np.zeros((args.size,) * 3, dtype=np.float32)
    array[: head.shape[0], : head.shape[1], : head.shape[2]] = head
    volume = Volume(array, Grid(array.shape, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)))
    print(f"{args.size}^3 float32 output ({array.nbytes / 1e6:.0f} MB in memory), best of {args.repeats}")
    print("| format | file MB | unverified write s | verified write_volume s | extra s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for extension in (".nii.gz", ".nii", ".nrrd", ".mha"):
            bare, verified = [], []
            for repeat in range(args.repeats):
                path = Path(folder) / f"bare{repeat}{extension}"
                start = time.perf_counter()
                sitk.WriteImage(to_sitk(volume), str(path), useCompression=True)
                bare.append(time.perf_counter() - start)
                start = time.perf_counter()
                written = write_volume(volume, Path(folder) / f"verified{repeat}{extension}")
                verified.append(time.perf_counter() - start)
            size = written.stat().st_size / 1e6
            print(f"| {extension} | {size:.1f} | {min(bare):.2f} | {min(verified):.2f} | "
                  f"{min(verified) - min(bare):+.2f} |")


if __name__ == "__main__":
    main()
