"""Staging entries left by a killed run are removed by the next write into the same folder (imaging.staging)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT

from MRISuperResLib.imaging.staging import STAGING_PREFIX, process_alive, remove_stale_staging, staging_prefix
from MRISuperResLib.imaging.verified_write import replace_text_file
from MRISuperResLib.imaging.volume import Grid, Volume
from MRISuperResLib.imaging.volume_io import write_volume

pytestmark = pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")

KILLED_WRITER = """
import os, signal, sys
sys.path.insert(0, {library!r})
from pathlib import Path
from MRISuperResLib.imaging.volume_io import staging_folder
with staging_folder(Path({folder!r})) as staging:
    (staging / "sr.nii.gz").write_bytes(b"half a file")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_run_leftover(folder: Path) -> Path:
    """Run a process that stages a file in ``folder`` and is killed (SIGKILL) before it can clean up."""
    code = KILLED_WRITER.format(library=str(ROOT / "MRISuperRes"), folder=str(folder))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    (leftover,) = folder.glob(f"{STAGING_PREFIX}*")
    assert (leftover / "sr.nii.gz").is_file()
    return leftover


def small_volume() -> Volume:
    return Volume(np.arange(64, dtype=np.float32).reshape(4, 4, 4), Grid((4, 4, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))


def test_the_next_volume_write_removes_what_a_killed_run_left(tmp_path: Path) -> None:
    leftover = killed_run_leftover(tmp_path)
    write_volume(small_volume(), tmp_path / "next.nii.gz")
    assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["next.nii.gz"]


def test_the_next_text_write_removes_what_a_killed_run_left(tmp_path: Path) -> None:
    leftover = killed_run_leftover(tmp_path)
    replace_text_file(tmp_path / "sr.json", "{}")
    assert not leftover.exists() and (tmp_path / "sr.json").read_text() == "{}"


def test_entries_of_live_processes_other_hosts_and_other_tools_are_kept(tmp_path: Path) -> None:
    live = tmp_path / f"{staging_prefix().replace(str(os.getpid()), str(os.getppid()))}abc"
    other_host = tmp_path / f"{STAGING_PREFIX}otherhost-999999-abc"
    old_style = tmp_path / f"{STAGING_PREFIX}abc123"
    unrelated = tmp_path / "scan.nii.gz"
    for path in (live, other_host, old_style):
        path.mkdir()
    unrelated.write_bytes(b"data")
    assert process_alive(os.getppid()) and remove_stale_staging(tmp_path) == []
    assert all(p.exists() for p in (live, other_host, old_style, unrelated))


@pytest.mark.skipif(not Path("/proc/self/ns/pid").exists(), reason="Linux PID namespaces")
def test_entries_of_another_pid_namespace_are_kept(tmp_path: Path) -> None:
    # Another container with this host name numbers its processes in its own namespace: a PID dead here may be
    # alive there.
    host = staging_prefix()[len(STAGING_PREFIX):].rsplit("-", 2)[0]
    other_namespace = tmp_path / f"{STAGING_PREFIX}{host.rsplit('n', 1)[0]}n1-999999-abc"
    other_namespace.mkdir()
    assert remove_stale_staging(tmp_path) == [] and other_namespace.is_dir()


def test_similar_host_names_do_not_judge_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    from MRISuperResLib.imaging import staging

    monkeypatch.setattr(staging.socket, "gethostname", lambda: "node-1")
    first = staging.staging_prefix()
    monkeypatch.setattr(staging.socket, "gethostname", lambda: "node1")
    assert staging.staging_prefix() != first


def test_own_staging_entries_are_never_removed(tmp_path: Path) -> None:
    own = tmp_path / f"{staging_prefix()}abc"
    own.mkdir()
    assert remove_stale_staging(tmp_path) == [] and own.is_dir()
