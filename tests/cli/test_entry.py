"""The console script's entry: a run that fails while a background import is still loading exits at once with its
exit status and message (it does not wait for the import), and a successful run is untouched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import ROOT

ENTRY = """
import sys
sys.path[:0] = [{library!r}, {modules!r}]
from MRISuperResLib.cli import exit_without_waiting
from MRISuperResLib.engine.prepared_input import import_in_background
import_in_background("slow_module")
print("mrisuperres: error: the input is cut short", file=sys.stderr)
exit_without_waiting({code})
print("waited for the import", file=sys.stderr)
"""

SLOW_MODULE = """
import pathlib, time
time.sleep({seconds})
pathlib.Path({marker!r}).write_text("the import finished")
"""


def run_entry(tmp_path: Path, code: int, seconds: float) -> tuple[subprocess.CompletedProcess, Path]:
    marker = tmp_path / "imported"
    (tmp_path / "slow_module.py").write_text(SLOW_MODULE.format(marker=str(marker), seconds=seconds))
    script = ENTRY.format(library=str(ROOT / "MRISuperRes"), modules=str(tmp_path), code=code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120), marker


def test_a_failed_run_does_not_wait_for_the_background_import(tmp_path: Path) -> None:
    done, marker = run_entry(tmp_path, 1, seconds=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["mrisuperres: error: the input is cut short"]
    assert not marker.exists()  # the process ended while the import was still running


def test_a_successful_run_ends_normally(tmp_path: Path) -> None:
    done, marker = run_entry(tmp_path, 0, seconds=0.5)
    assert done.returncode == 0 and "waited for the import" in done.stderr
    assert marker.read_text() == "the import finished"


TEARDOWN = """
import atexit, pathlib, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
sys.path.insert(0, {library!r})
from MRISuperResLib.cli import exit_without_teardown
folder = pathlib.Path({folder!r})
atexit.register(lambda: (folder / "atexit").write_text("ran"))

def late_writer():
    time.sleep(0.5)
    (folder / "thread").write_text("joined")

threading.Thread(target=late_writer).start()
pool = ThreadPoolExecutor(max_workers=1)
pool.submit(lambda: None).result()  # an idle worker left running, as a run's executors may leave
sys.stdout.write("x" * 200000)  # buffered, not yet flushed
exit_without_teardown({code})
print("returned", file=sys.stderr)
"""


def test_a_finished_run_ends_without_teardown_but_with_everything_a_normal_exit_does(tmp_path: Path) -> None:
    """Threads are joined (an executor's idle worker does not hang the exit), ``atexit`` handlers run, buffered
    output is delivered, and the exit status is kept."""
    for code in (0, 3):
        folder = tmp_path / str(code)
        folder.mkdir()
        script = TEARDOWN.format(library=str(ROOT / "MRISuperRes"), folder=str(folder), code=code)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert done.returncode == code
        assert done.stdout == "x" * 200000
        assert "returned" not in done.stderr  # the process ended inside the call
        assert (folder / "atexit").read_text() == "ran"
        assert (folder / "thread").read_text() == "joined"


def test_the_console_script_delivers_its_whole_output(tmp_path: Path) -> None:
    """``python -m MRISuperResLib.cli models --json`` through a pipe: complete, parseable output, status 0."""
    import json

    done = subprocess.run([sys.executable, "-m", "MRISuperResLib.cli", "models", "--json"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT / "MRISuperRes")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)


def test_a_closed_standard_output_is_one_line_and_status_1() -> None:
    """``mrisuperres models | true``: the reader is gone before anything is printed; one error line, status 1,
    no traceback (and no second failure when the interpreter flushes at exit)."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "MRISuperResLib.cli", "models", "--json"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120, cwd=ROOT / "MRISuperRes")
    finally:
        os.close(write_end)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "mrisuperres: error: cannot print to the standard output: the program reading it has closed it (broken pipe)"]


LATE_STOP = """
import os, signal, sys, threading, time
sys.path[:0] = [{library!r}]
from MRISuperResLib.cli import end_at_once_on_stop, raise_interrupt
signal.signal(signal.SIGTERM, raise_interrupt)  # as during the run
print("run finished", flush=True)
end_at_once_on_stop({code})
gate = threading.Event()
threading.Thread(target=gate.wait).start()  # a thread the exit would wait for
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(30)
print("still exiting")
"""


def test_a_stop_after_the_run_ends_the_exit_at_once_with_the_runs_status() -> None:
    for code in (0, 2):
        script = LATE_STOP.format(library=str(ROOT / "MRISuperRes"), code=code)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
        assert (done.returncode, done.stdout, done.stderr) == (code, "run finished\n", "")


EARLY_STOP = """
import importlib.abc, os, signal, sys, time
sys.path[:0] = [{library!r}]

class StopDuringImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "MRISuperResLib.cli.app":  # the command line's first half second goes on importing it
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        return None

sys.meta_path.insert(0, StopDuringImport())
from MRISuperResLib.cli import main
main(["models"])
print("not stopped")
"""


def test_a_sigterm_while_the_command_line_loads_gets_the_interrupted_line_and_130() -> None:
    done = subprocess.run([sys.executable, "-c", EARLY_STOP.format(library=str(ROOT / "MRISuperRes"))],
                          capture_output=True, text=True, timeout=20)
    assert (done.returncode, done.stdout) == (130, "")
    assert done.stderr.splitlines() == ["mrisuperres: interrupted; no partial output was written"]
