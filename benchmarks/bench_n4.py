"""How much of a known, simulated bias field N4 removes (not a test): prints a Markdown table.

Each real volume is multiplied by a smooth known field (``degradation.smooth_bias_field``, amplitude ``--amplitude``,
seeded), then corrected with N4 in several set-ups. Reported inside white matter (the brightest of three Otsu
classes of the brain mask of the clean volume, one voxel in from its border) and inside the brain mask:

* ``CoV WM``: coefficient of variation (std / mean) of the white-matter intensities; a bias field widens it.
* ``corr``: correlation, inside the brain, of the recovered log field with the simulated one. The recovered part
  is N4's field on the biased volume divided by N4's field on the clean volume with the same settings, so the
  scan's own residual bias cancels.
* ``rms``: RMS (in % of intensity) of the difference of the two log fields inside the brain, each with its mean
  removed (N4 fixes the field only up to a constant factor).

Usage: python benchmarks/bench_n4.py [VOLUME ...] [--amplitude 0.3] [--seed 0] [--without-seed002]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MRISuperRes"))

SHARED = ROOT.parent / "shared" / "data"
DEFAULT_VOLUMES = [SHARED / "train" / "colin27_T1.nii.gz", SHARED / "train" / "siemens_prisma_T1w_head.nii.gz"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("volumes", nargs="*", type=Path, default=DEFAULT_VOLUMES)
    parser.add_argument("--amplitude", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--without-seed002", action="store_true", help="leave out the slow seed 002 set-up")
    args = parser.parse_args()

    import dataclasses

    import numpy as np
    from MRISuperResLib.processing.degradation import smooth_bias_field
    from MRISuperResLib.processing.masks import brain_mask, erode, otsu_thresholds
    from MRISuperResLib.processing.n4 import SEED_002, N4Settings, n4_correct
    from MRISuperResLib.imaging.volume_io import read_volume

    setups = {
        "1 pass, no mask": N4Settings(mask="none"),
        "1 pass, Otsu mask": N4Settings(mask="otsu"),
        "2 passes, Otsu then head mask": N4Settings(mask="otsu", two_pass=True, second_mask="head"),
        "2 passes, Otsu then brain mask": N4Settings(mask="otsu", two_pass=True, second_mask="brain"),
        "seed 002 (2 passes, brain, 150x4, 1e-7)": SEED_002,
    }
    if args.without_seed002:
        setups = {label: settings for label, settings in setups.items() if settings is not SEED_002}
    print(f"simulated field: smooth_bias_field, amplitude {args.amplitude}, seed {args.seed}\n")
    print("| volume | correction | CoV WM | corr(log field) | rms log-field error (%) | seconds |")
    print("|---|---|---|---|---|---|")
    for path in args.volumes:
        clean = read_volume(path)
        clean = clean.with_array(np.clip(clean.array.astype(np.float32), 0, None))
        field = smooth_bias_field(clean.shape, args.amplitude, np.random.default_rng(args.seed)).astype(np.float32)
        biased = clean.with_array(clean.array * field)
        brain = brain_mask(clean)
        values = clean.array[brain]
        white = erode(brain & (clean.array > otsu_thresholds(values, 2)[1]), clean.spacing, min(clean.spacing))
        true_log = np.log(field[brain])
        true_log -= true_log.mean()

        def cov(array: np.ndarray, white: np.ndarray = white) -> float:
            inside = array[white]
            return float(inside.std() / inside.mean())

        name = path.name.split(".")[0]
        print(f"| {name} | none (clean volume) | {cov(clean.array):.4f} | | | |")
        print(f"| {name} | none (biased) | {cov(biased.array):.4f} | | | |", flush=True)
        for label, settings in setups.items():
            result = n4_correct(biased, settings)
            reference = n4_correct(clean, dataclasses.replace(settings))
            recovered = np.log(result.field.array[brain]) - np.log(reference.field.array[brain])
            recovered -= recovered.mean()
            corr = float(np.corrcoef(recovered, true_log)[0, 1])
            rms = float(np.sqrt(np.mean((recovered - true_log) ** 2))) * 100
            print(f"| {name} | {label} | {cov(result.corrected.array):.4f} | {corr:.3f} | {rms:.2f} | "
                  f"{sum(result.seconds):.1f} |", flush=True)


if __name__ == "__main__":
    main()
