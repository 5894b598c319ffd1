"""Command line, interruption: Ctrl-C / SIGTERM while writing or while the command line loads leave no partial
output and exit with status 130."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import console_script, fingerprint, image_from_ijk, run_cli, terminal_lines, write_image
from MRISuperResLib.cli import app as cli

# ----------------------------------------------------------------------------------- interruption


def test_interrupt_while_writing_leaves_nothing(layout, tiny_model, capsys, monkeypatch):
    """Ctrl-C after one output was staged: no output, no sidecar, no staging folder, exit status 130."""
    import MRISuperResLib.engine.output_writer as writer_module

    real_stage = writer_module.stage_volume
    calls = []

    def stage_then_interrupt(*args, **kwargs):
        real_stage(*args, **kwargs)
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(writer_module, "stage_volume", stage_then_interrupt)
    tmp, out_dir = layout["root"], layout["out"]
    before = fingerprint(tmp)
    code, _, err = run_cli(capsys, "enhance", layout["input"], out_dir / "sr.nii.gz", "--model", tiny_model,
                            "--baseline", out_dir / "base.nii.gz", "--consistency", out_dir / "dc.nii.gz")
    assert code == cli.EXIT_INTERRUPTED
    assert len(calls) >= 2  # the outputs are staged side by side: the third may be staged too, then removed
    assert "interrupted" in err and "Traceback" not in err
    assert list(out_dir.iterdir()) == []
    assert fingerprint(tmp) == before


@pytest.fixture(scope="module")
def big_volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 96^3 volume: with --tile 16 --threads 1 and the shipped model it takes minutes, so it is interrupted."""
    rng = np.random.default_rng(5)
    array = (100 + 50 * rng.random((96, 96, 96))).astype(np.float32)
    return write_image(tmp_path_factory.mktemp("big") / "big.nii.gz", image_from_ijk(array))


def _read_into(fd: int, chunks: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO once the child closed the terminal
            return
        if not data:
            return
        chunks.append(data)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_console_script_interrupted_leaves_no_partial_output(big_volume, tmp_path, signum):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "big_sr.nii.gz"
    before_input = fingerprint(big_volume.parent)
    # stderr on a pseudo-terminal, as for a user pressing Ctrl-C at a shell
    master, slave = pty.openpty()
    # a real terminal has a size; tqdm draws nothing on a 0-column pseudo-terminal
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    process = subprocess.Popen(
        [*console_script(), "enhance", str(big_volume), str(output), "--tile", "16", "--threads", "1",
         "--device", "cpu", "--baseline", str(out_dir / "big_base.nii.gz")],
        stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
        # The default SIGINT disposition of an interactive shell, whatever the test runner inherited.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    os.close(slave)
    chunks: list[bytes] = []
    reader = threading.Thread(target=_read_into, args=(master, chunks), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if b"super-resolving" in b"".join(chunks):
                break
            time.sleep(0.1)
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert b"super-resolving" in b"".join(chunks), "no progress was shown within 60 s"
        time.sleep(0.5)
        process.send_signal(signum)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=5)
        os.close(master)
    stderr = b"".join(chunks).decode(errors="replace")
    assert process.returncode == cli.EXIT_INTERRUPTED, stderr[-2000:]
    assert "Traceback" not in stderr
    lines = terminal_lines(stderr)
    assert lines and "interrupted" in lines[-1] and lines[-1].startswith("mrisuperres:"), lines[-3:]
    assert list(out_dir.iterdir()) == [], "output or a staging folder was left behind"
    assert fingerprint(big_volume.parent) == before_input


def test_interrupt_while_the_command_line_loads_is_one_line(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["models"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "mrisuperres: interrupted; no partial output was written"
