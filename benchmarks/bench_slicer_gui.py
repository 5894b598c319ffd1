"""How long Slicer's GUI thread is busy around a background x2 enhance of a 256 x 256 x 176 input (not a test).

The Enhance module runs the engine in a child process; what remains on the GUI thread is writing the input
(``EnhanceProcess.start``), the polls, and putting the outputs into the scene (``EnhanceProcess.finish``). This
prints, for one input of that size with the real slicer-core MRML classes:

* ``start``: the input node written to NRRD by an MRML storage node;
* ``outputs read``: the four outputs of the child (SR, baseline, difference at 512 x 512 x 352, consistency at
  the input size, float32 gzip NRRD written by the engine's own writer, as the child writes them) read into
  memory, with the maps' colour windows: what ``EnhanceProcess`` does in a worker thread (numpy and zlib release
  the GIL), *not* on the GUI thread;
* ``longest stall``: the longest the GUI thread waits (for the GIL) while the worker thread reads;
* ``finish (now)``: the GUI thread's part: the read voxels handed to new nodes as their image data, provenance,
  display (``EnhanceLogic.add_output_files``);
* ``finish, C++ reader``: the same outputs read on the GUI thread by Slicer's C++ reader (the fallback for a file
  the worker's reader does not handle);
* ``finish (before)``: the same files read with ``volume_io.read_volume`` and copied into nodes from Python
  (``EnhanceLogic.add_outputs``), the way the module did it before.

With ``--real``, the whole run goes through ``EnhanceProcess`` and a real engine child (slow on a CPU: the x2 of
11.5 million voxels), and the GUI-thread time is the sum of the time spent in ``start``, every ``poll`` and
``finish``.

Usage: python benchmarks/bench_slicer_gui.py [--shape 256 256 176] [--repeats 3] [--real]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MRISuperRes"))


def brain_like(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Smooth blobs plus 2 % noise, ``[i, j, k]`` float32: compresses like an MRI, not like pure noise."""
    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    i, j, k = np.meshgrid(*axes, indexing="ij", sparse=True)
    head = np.exp(-(i**2 + j**2 + k**2) * 2.5) * 800
    folds = 60 * np.sin(9 * i) * np.cos(7 * j) * np.sin(5 * k)
    return (head + folds + rng.normal(0, 16, shape)).astype(np.float32)


def input_node(scene, shape):
    import slicer

    from MRISuperResLib.slicer.volumes import KJI

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T1")
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(brain_like(shape).transpose(KJI)))
    node.SetSpacing(1.0, 1.0, 1.2)
    node.CreateDefaultDisplayNodes()
    return node


def child_outputs(folder: Path, shape: tuple[int, int, int]) -> dict[str, Path]:
    """The files a child writes for an x2 run, with the engine's writer and provenance key-values."""
    from MRISuperResLib.imaging.geometry import upsampled_grid
    from MRISuperResLib.imaging.provenance import KEY_PREFIX
    from MRISuperResLib.slicer.enhance_process import OUTPUT_FILES
    from MRISuperResLib.imaging.volume import Grid, Volume
    from MRISuperResLib.imaging.volume_io import write_volume

    grid = Grid(shape=shape, spacing=(1.0, 1.0, 1.2), origin=(0.0, 0.0, 0.0))
    fine = upsampled_grid(grid, (2.0, 2.0, 2.0))
    sr = brain_like(fine.shape, 1)
    arrays = {"sr": sr, "baseline": brain_like(fine.shape, 2), "difference": sr - brain_like(fine.shape, 2),
              "consistency": np.abs(brain_like(shape, 3)) / 100}
    files = {}
    for role, array in arrays.items():
        metadata = {f"{KEY_PREFIX}role": role, f"{KEY_PREFIX}scale": "2", f"{KEY_PREFIX}model": "edsr3d-x2-brain",
                    f"{KEY_PREFIX}notice": "AI-generated, not acquired"}
        volume = Volume(array, fine if role != "consistency" else grid, metadata)
        files[role] = write_volume(volume, folder / OUTPUT_FILES[role], overwrite=True)
    return files


def timed(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def longest_stall(work) -> float:
    """Run ``work`` in a worker thread (as ``EnhanceProcess`` does) while this thread ticks every 10 ms like an
    event loop; the longest gap between ticks is how long the GUI would have been frozen."""
    import threading

    worker = threading.Thread(target=work)
    worker.start()
    longest, last = 0.0, time.perf_counter()
    while worker.is_alive():
        time.sleep(0.01)
        now = time.perf_counter()
        longest, last = max(longest, now - last - 0.01), now
    worker.join()
    return longest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 256, 176])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--real", action="store_true", help="run the real engine child too (slow on a CPU)")
    args = parser.parse_args()
    shape = tuple(args.shape)

    import slicer

    from MRISuperResLib.imaging.provenance import KEY_PREFIX
    from MRISuperResLib.slicer.outputs import MAP_COLORS, EnhanceLogic, window_percentile
    from MRISuperResLib.slicer.enhance_process import write_volume_node
    from MRISuperResLib.slicer.volumes import load_nrrd
    from MRISuperResLib.imaging.volume_io import read_volume

    folder = Path(tempfile.mkdtemp(prefix="bench-slicer-gui-"))
    try:
        scene = slicer.vtkMRMLScene()
        node = input_node(scene, shape)
        logic = EnhanceLogic(scene)
        rows = [("start: input node -> NRRD (MRML storage node)",
                 timed(lambda: write_volume_node(node, folder / "input.nrrd"), args.repeats))]
        files = child_outputs(folder, shape)

        loaded: dict = {}

        def read() -> None:  # the worker thread's part
            for role, path in files.items():
                loaded[role] = load_nrrd(path)
                if role in MAP_COLORS:
                    loaded[role].window = window_percentile(loaded[role].array, role == "difference")

        def add(ready) -> None:
            nodes = logic.add_output_files(node, files, (2.0, 2.0, 2.0), metadata={f"{KEY_PREFIX}source": "T1"},
                                           loaded=ready)
            for output in nodes.nodes().values():
                if output is not None:
                    scene.RemoveNode(output)

        def before() -> None:
            volumes = {role: read_volume(path) for role, path in files.items()}
            nodes = logic.add_outputs(node, volumes, (2.0, 2.0, 2.0))
            for output in nodes.nodes().values():
                if output is not None:
                    scene.RemoveNode(output)

        rows.append(("(worker thread, not GUI) outputs read + map windows", timed(read, args.repeats)))
        rows.append(("GUI thread: longest stall while the worker reads", longest_stall(read)))
        rows.append(("finish (now): read outputs -> nodes, provenance, display", timed(lambda: add(loaded), args.repeats)))
        rows.append(("finish, fallback: Slicer's C++ reader on the GUI thread", timed(lambda: add(None), 1)))
        rows.append(("finish (before): read_volume + Python copy into nodes", timed(before, 1)))
        if args.real:
            rows += real_run(scene, node)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    sizes = " x ".join(map(str, shape))
    print(f"GUI-thread time around a background x2 enhance of a {sizes} float32 input "
          f"(outputs {' x '.join(str(2 * n) for n in shape)}; best of {args.repeats}, 'before' once)\n")
    print(f"| {'step on the GUI thread':<58} | {'seconds':>8} |")
    print(f"|{'-' * 60}|{'-' * 10}|")
    for label, seconds in rows:
        print(f"| {label:<58} | {seconds:8.2f} |")


def real_run(scene, node) -> list[tuple[str, float]]:
    from MRISuperResLib.slicer.outputs import EnhanceLogic
    from MRISuperResLib.slicer.enhance_process import EnhanceProcess

    process = EnhanceProcess(EnhanceLogic(scene), node, "default", 2, "auto")
    busy = {"start": 0.0, "polls": 0.0, "finish": 0.0}
    start = time.perf_counter()
    process.start()
    busy["start"] = time.perf_counter() - start
    polls = 0
    while True:
        start = time.perf_counter()
        status = process.poll()
        busy["polls"] += time.perf_counter() - start
        polls += 1
        if status.done:
            break
        time.sleep(0.2)
    start = time.perf_counter()
    process.finish()
    busy["finish"] = time.perf_counter() - start
    return [("real run: start", busy["start"]), (f"real run: {polls} polls (total)", busy["polls"]),
            ("real run: finish", busy["finish"]),
            ("real run: GUI thread busy in all", sum(busy.values()))]


if __name__ == "__main__":
    main()
