"""Where a fixed-scale training run's time goes, with the inputs drawn in the step or ahead (not a test): a table.

For each config: its training volumes, simulation and batches, and its network or a smaller one (``--network``:
channels and blocks, so that the network's step is as short as on an accelerator and the CPU side shows). One
child process per config and mode:

* ``in-step``: as a run with ``run.prefetch: 0``: every ``data.resimulate_every`` steps all subjects are simulated
  anew (thread pool), each step cuts and augments its batch, then the network's step;
* ``ahead``: ``run.prefetch`` batches ahead (:class:`MRISuperResLib.training.prefetch.BatchPrefetcher`).

Reported: time of one simulation of every subject, of one batch and of one network step (each measured alone),
the in-step run's share of time per stage, seconds per step of both modes, the time the ahead run waited for
inputs, and each process's peak resident memory (the ahead run holds two simulations).

Usage: python benchmarks/bench_training_loop.py [--configs configs/scanner_x2_wide.yaml ...] [--steps 150]
       [--network 8,1] [--threads 1] [--ahead 4]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MRISuperRes"))

DEFAULT_CONFIGS = ["configs/scanner_x2_wide.yaml", "configs/scanner_thick_x4_wide.yaml"]


def _trainer(config_path: str, network: str | None, threads: int, output: Path):  # type: ignore[no-untyped-def]
    from MRISuperResLib.training.config import load_config
    from MRISuperResLib.training.loop import Trainer

    config = load_config(config_path)
    config.output_dir = str(output)
    config.model.init_from = None
    config.model.init_grow = False
    if network:
        channels, blocks = (int(v) for v in network.split(","))
        config.model.config = {**config.model.config, "channels": channels, "blocks": blocks}
    config.run.device = "cpu"
    config.run.threads = threads
    config.run.amp = False
    return Trainer(config, show_progress=False, log=lambda message: None)


def measure(config_path: str, mode: str, steps: int, network: str | None, threads: int, ahead: int) -> dict:
    from MRISuperResLib.training.patch_step import draw_batch, patch_step
    from MRISuperResLib.training.prefetch import BatchPrefetcher

    with tempfile.TemporaryDirectory() as folder:
        trainer = _trainer(config_path, network, threads, Path(folder))
        started = time.perf_counter()
        trainer.load_data()
        load_s = time.perf_counter() - started
        every = trainer.config.data.resimulate_every
        started = time.perf_counter()
        trainer._refresh(0)
        simulate_s = time.perf_counter() - started
        draws = []
        for step in range(5):
            started = time.perf_counter()
            batch = draw_batch(trainer, trainer.train_subjects, step)
            draws.append(time.perf_counter() - started)
        for step in range(2):  # warm-up
            patch_step(trainer, step, batch)
        started = time.perf_counter()
        for step in range(3):
            patch_step(trainer, step, batch)
        network_s = (time.perf_counter() - started) / 3
        row = {"config": Path(config_path).name, "mode": mode, "subjects": len(trainer.train_subjects),
               "every": every, "load_s": load_s, "simulate_s": simulate_s, "draw_s": sum(draws) / len(draws),
               "network_s": network_s, "steps": steps, "waited_s": 0.0, "refresh_s": 0.0, "draw_total_s": 0.0}
        started = time.perf_counter()
        if mode == "in-step":
            for step in range(steps):
                if step % every == 0:
                    t = time.perf_counter()
                    trainer._refresh(step)
                    row["refresh_s"] += time.perf_counter() - t
                t = time.perf_counter()
                batch = draw_batch(trainer, trainer.train_subjects, step)
                row["draw_total_s"] += time.perf_counter() - t
                patch_step(trainer, step, batch)
        else:
            with BatchPrefetcher(trainer.train_subjects, trainer._simulate,
                                 lambda subjects, step: draw_batch(trainer, subjects, step), every, 0, ahead,
                                 trainer._simulation_workers()) as prefetcher:
                for step in range(steps):
                    patch_step(trainer, step, prefetcher.batch(step))
                row["waited_s"] = prefetcher.wait_s
        row["total_s"] = time.perf_counter() - started
        row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--steps", type=int, default=150, help="steps timed per mode (include a few simulations)")
    parser.add_argument("--network", default="8,1", help="channels,blocks of the timed network ('' = the config's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the network's step")
    parser.add_argument("--ahead", type=int, default=4, help="batches drawn ahead in the 'ahead' mode")
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], args.steps, args.network or None, args.threads,
                                 args.ahead)))
        return
    import os

    print(f"{os.cpu_count()} CPU cores; network {args.network or 'as configured'} on {args.threads} thread(s); "
          f"{args.steps} steps per mode; ahead = {args.ahead} batches\n")
    print("| config | volumes | simulate all s (every N steps) | batch ms | network step ms | mode | s/step | "
          "share: simulate / batch / network | waited for inputs | peak RSS GB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for config in args.configs:
        base = None
        for mode in ("in-step", "ahead"):
            command = [sys.executable, __file__, "--steps", str(args.steps), "--network", args.network,
                       "--threads", str(args.threads), "--ahead", str(args.ahead), "--child", config, mode]
            completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if completed.returncode != 0:
                print(f"| {Path(config).name} | {mode} failed: {completed.stderr.strip().splitlines()[-1][:100]} |")
                continue
            row = json.loads(completed.stdout.strip().splitlines()[-1])
            per_step = row["total_s"] / row["steps"]
            if mode == "in-step":
                base = per_step
                net = row["total_s"] - row["refresh_s"] - row["draw_total_s"]
                shares = " / ".join(f"{100 * v / row['total_s']:.0f} %"
                                    for v in (row["refresh_s"], row["draw_total_s"], net))
                waited = "-"
            else:
                shares = f"{per_step / base:.2f}x the in-step time" if base else "-"
                waited = f"{row['waited_s']:.1f} s ({100 * row['waited_s'] / row['total_s']:.0f} %)"
            print(f"| {row['config']} | {row['subjects']} | {row['simulate_s']:.2f} ({row['every']}) | "
                  f"{1000 * row['draw_s']:.1f} | {1000 * row['network_s']:.0f} | {mode} | {per_step:.3f} | {shares} | "
                  f"{waited} | {row['peak_rss_gb']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
