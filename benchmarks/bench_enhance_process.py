"""Where the time of a whole ``mrisuperres enhance`` process goes (not a test): prints a table.

A user pays for the process, not only for the network: interpreter and library start-up, reading, the B-spline
baseline, the network, the consistency map and writing compressed outputs. This runs the console script as a
user would, on a synthetic brain-like input (``--size``^3 at 2 mm, float32 NIfTI), with every companion output
(``--companions``: SR, baseline, difference, consistency; all ``.nii.gz``), ``--json`` and ``--threads``, and
splits the process's wall time into:

* start-up: process start until the engine begins (imports, argument parsing, model file read) =
  wall - (load + network + baseline wait + mask + projection + consistency + write);
* inside start-up, ``read`` and ``head mask`` (the input read and checked, its head mask computed and carried onto
  the fine grid): the command line does them while torch loads on another thread, so they are shown but not
  added; ``import wait`` is how long the run still waited for torch after them;
* the stages the run reports in its ``timings_s`` after that (``load``, ``inference`` = the network with its
  tiling, ``baseline_wait`` = how long the run still waited after the network for the B-spline baseline, which is
  made beside the network on an idle-priority thread together with its consistency score and file, ``mask`` =
  keeping the baseline outside the head, ``projection`` = the data-consistency projection with the network's
  consistency map (``consistency`` alone with ``--no-projection``), ``write`` = what was left of writing after
  that).

It also times ``mrisuperres --help`` and ``mrisuperres models`` (start-up only) and the bare imports of torch and
MONAI for reference. Each command runs ``--repeats`` times; the table shows the fastest run.

Usage: python benchmarks/bench_enhance_process.py [--size 128] [--threads 2] [--repeats 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MRISuperRes"))


def console_script() -> list[str]:
    """The ``mrisuperres`` command of this interpreter's environment."""
    found = Path(sys.executable).parent / "mrisuperres"
    return [str(found)] if found.exists() else [sys.executable, "-m", "MRISuperResLib.cli"]


def timed(command: list[str], repeats: int) -> tuple[float, str]:
    """Fastest wall time of ``command`` over ``repeats`` runs and the stdout of that run."""
    best, best_out = float("inf"), ""
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
        if elapsed < best:
            best, best_out = elapsed, done.stdout
    return best, best_out


def write_input(folder: Path, size: int) -> Path:
    """A smooth brain-sized random volume of ``size``^3 at 2 mm (float32 NIfTI)."""
    import numpy as np

    from MRISuperResLib.processing.degradation import fourier_resample
    from MRISuperResLib.imaging.volume import Grid, Volume
    from MRISuperResLib.imaging.volume_io import write_volume

    rng = np.random.default_rng(0)
    array = fourier_resample(rng.normal(size=(24, 24, 24)), (size, size, size)) * 100 + 500
    path = folder / f"input_{size}.nii.gz"
    write_volume(Volume(array.astype(np.float32), Grid((size,) * 3, (2.0,) * 3, (0.0,) * 3)), path)
    return path


def import_seconds(module: str, repeats: int) -> float:
    """Fastest wall time of ``python -c 'import module'`` minus that of a bare interpreter."""
    bare, _ = timed([sys.executable, "-c", "pass"], repeats)
    with_module, _ = timed([sys.executable, "-c", f"import {module}"], repeats)
    return with_module - bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="input edge in voxels (output is twice that)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    cli = console_script()
    print(f"{sys.executable}; input {args.size}^3 -> {2 * args.size}^3, x2 default model, {args.threads} threads, "
          f"device {args.device}, fastest of {args.repeats}\n")
    print("| command | wall s |\n|---|---|")
    for name, command in (("mrisuperres --help", [*cli, "--help"]), ("mrisuperres models", [*cli, "models"])):
        print(f"| `{name}` | {timed(command, args.repeats)[0]:.2f} |", flush=True)
    for module in ("torch", "monai"):
        print(f"| `python -c 'import {module}'` (minus a bare interpreter) | {import_seconds(module, args.repeats):.2f} |",
              flush=True)

    folder = Path(tempfile.mkdtemp(prefix="mrisuperres-bench-"))
    try:
        source = write_input(folder, args.size)
        command = [*cli, "enhance", str(source), str(folder / "out" / "sr.nii.gz"), "--scale", "2", "--companions",
                   "--json", "--overwrite", "--threads", str(args.threads), "--device", args.device]
        (folder / "out").mkdir()
        wall, stdout = timed(command, args.repeats)
        summary = json.loads(stdout)
        timings = summary["timings_s"]
        stages = {key: float(timings.get(key, 0.0)) for key in ("load", "inference", "baseline_wait", "mask",
                                                              "projection", "consistency", "write")}
        overlapped = {key: float(timings.get(key, 0.0)) for key in ("read", "head_mask", "import_wait")}
        during_network = float(timings.get("baseline", 0.0))
        stages = {"start-up": wall - sum(stages.values()), **stages}
        sizes = {path.name: path.stat().st_size for path in (folder / "out").iterdir() if path.suffix == ".gz"}
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print(f"\n`mrisuperres enhance` {args.size}^3 x2 with --companions ({summary['device']}): wall {wall:.2f} s\n")
    print("| stage | s | share of wall |\n|---|---|---|")
    for stage, seconds in stages.items():
        if stage == "consistency" and seconds == 0.0 and stages.get("projection"):
            continue  # measured inside the projection
        label = {"inference": "network", "mask": "background mask", "baseline_wait": "baseline wait",
                 "projection": "data-consistency projection and consistency map"}.get(stage, stage)
        print(f"| {label} | {seconds:.2f} | {100 * seconds / wall:.1f} % |")
        if stage == "start-up":
            for key, inner in overlapped.items():
                print(f"| - of which {key.replace('_', ' ')} (while torch loads) | ({inner:.2f}) | |")
        if stage == "inference":
            print(f"| - B-spline baseline, its consistency and file (beside the network, idle priority) | "
                  f"({during_network:.2f} for the B-spline) | |")
    print(f"| **total (process wall)** | {wall:.2f} | 100 % |")
    print(f"\ncompressed outputs: {', '.join(f'{k} {v / 1e6:.1f} MB' for k, v in sorted(sizes.items()))}")


if __name__ == "__main__":
    main()
