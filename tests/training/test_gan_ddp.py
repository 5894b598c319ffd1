"""Adversarial (WGAN-GP) training with two real ``torchrun`` processes on CPU (gloo): the critic stays identical
across processes, and a run killed mid-way (launcher and workers) then resumed ends bit-identical to an
uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from helpers import free_port, tiny_config

WORKER = Path(__file__).with_name("ddp_gan_worker.py")
STEPS, HOLD_AT = 6, 3


def gan_config(paths: list[Path], output: Path) -> dict:
    return tiny_config(
        paths, output,
        run={"steps": STEPS, "validate_every": 3, "checkpoint_every": 2, "log_every": 2},
        loss={"l1": 1.0, "adversarial": 0.05, "n_critic": 2, "critic_lr": 0.001},
        model={"family": "edsr3d", "config": {"scale": [2, 2, 2], "channels": 8, "blocks": 1,
                                                "upsample_features": 2},
               "critic": {"channels": 4, "layers": 2}},
    )


def launch(config: Path, out: Path, tag: str, *extra: str) -> subprocess.Popen:
    """torchrun with two CPU workers, in its own session so that its whole group can be killed."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               str(WORKER), str(config), str(out), tag, *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> None:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]


def results(out: Path, tag: str) -> list[dict]:
    return [json.loads((out / f"done-{tag}-rank{rank}.json").read_text()) for rank in (0, 1)]


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie awaiting its parent counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_everything(process: subprocess.Popen, worker_pids: list[int]) -> None:
    """SIGKILL torchrun's process group and each worker by its id, then wait until none is left running."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in worker_pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.communicate(timeout=30)
    deadline = time.time() + 30
    while any(alive(pid) for pid in worker_pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in worker_pids), "a worker survived the kill"


def test_killed_and_resumed_gan_ddp_run_matches_an_uninterrupted_one(brain_files: list[Path],  # noqa: F811
                                                                     tmp_path: Path) -> None:
    straight_config, resumed_config = tmp_path / "straight.yaml", tmp_path / "resumed.yaml"
    straight_config.write_text(yaml.safe_dump(gan_config(brain_files, tmp_path / "straight")))
    resumed_config.write_text(yaml.safe_dump(gan_config(brain_files, tmp_path / "resumed")))

    # Both runs start together (the machine's cores are shared anyway); the second holds at step HOLD_AT.
    straight = launch(straight_config, tmp_path, "straight")
    killed = launch(resumed_config, tmp_path, "killed", "--hold-at", str(HOLD_AT))
    held = [tmp_path / f"held-killed-rank{rank}.txt" for rank in (0, 1)]
    deadline = time.time() + 300
    while not all(path.is_file() for path in held):
        assert killed.poll() is None, killed.communicate()[0][-3000:]
        assert time.time() < deadline, "the run to be killed never reached its holding step"
        time.sleep(0.2)
    workers = [int((tmp_path / f"pid-killed-rank{rank}.txt").read_text()) for rank in (0, 1)]
    kill_everything(killed, workers)
    assert not (tmp_path / "done-killed-rank0.json").exists()
    saved = torch.load(tmp_path / "resumed" / "state.pt", weights_only=True)
    assert saved["step"] == 2 and "critic_scaler" in saved  # the last checkpoint before the kill

    finish(straight)
    reference = results(tmp_path, "straight")
    # Every process holds the same generator and the same critic (weights and optimiser) at the end.
    assert reference[0] == reference[1]
    assert reference[0]["steps"] == STEPS

    finish(launch(resumed_config, tmp_path, "resumed", "--resume"))
    resumed = results(tmp_path, "resumed")
    assert resumed[0] == resumed[1] == reference[0]
    a = torch.load(tmp_path / "straight" / "state.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "state.pt", weights_only=True)
    for key in ("network", "critic"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name}"
    assert [r.get("val_psnr") for r in a["history"]] == [r.get("val_psnr") for r in b["history"]]
    assert (tmp_path / "resumed" / "tiny.safetensors").is_file()
