"""One ``torchrun`` worker of the data-parallel adversarial training tests (tests/training/test_gan_ddp.py).

Usage: ``torchrun --nproc_per_node 2 ddp_gan_worker.py CONFIG OUT_DIR TAG [--resume] [--hold-at STEP]``.
Writes ``OUT_DIR/pid-TAG-rankR.txt`` at start; with ``--hold-at`` writes ``OUT_DIR/held-TAG-rankR.txt`` and
sleeps (to be killed) when it reaches that step index; at the end writes ``OUT_DIR/done-TAG-rankR.json`` with
SHA-256 digests of this rank's generator, critic and critic optimiser.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "MRISuperRes"))

import torch
from MRISuperResLib.training.config import load_config
from MRISuperResLib.training.loop import Trainer


def digest(state: dict) -> str:
    """SHA-256 over every tensor (and number) of a nested state dict, in key order."""
    hasher = hashlib.sha256()

    def visit(value) -> None:  # type: ignore[no-untyped-def]
        if isinstance(value, torch.Tensor):
            hasher.update(value.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                hasher.update(str(key).encode())
                visit(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)
        else:
            hasher.update(repr(value).encode())

    visit(state)
    return hasher.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("out", type=Path)
    parser.add_argument("tag")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--hold-at", type=int)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))
    (args.out / f"pid-{args.tag}-rank{rank}.txt").write_text(str(os.getpid()))
    trainer = Trainer(load_config(args.config), show_progress=False, log=lambda message: None)
    assert trainer.critic is not None
    last: dict[str, object] = {}
    step_once = trainer.train_step

    def observed_step(step: int) -> dict[str, float]:
        if step == args.hold_at:
            (args.out / f"held-{args.tag}-rank{rank}.txt").write_text(str(step))
            time.sleep(600)
        values = step_once(step)
        # This rank's weights right after the last optimisation step (rank 0 later loads the best weights).
        last.update(steps=step + 1, generator=digest(trainer.network.state_dict()),
                    critic=digest(trainer.critic.network.state_dict()),
                    critic_optimizer=digest(trainer.critic.optimizer.state_dict()))
        return values

    trainer.train_step = observed_step  # type: ignore[method-assign]
    trainer.run(resume=args.resume)
    (args.out / f"done-{args.tag}-rank{rank}.json").write_text(json.dumps(last))


if __name__ == "__main__":
    main()
