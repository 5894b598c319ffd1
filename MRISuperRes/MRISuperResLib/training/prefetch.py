"""Training inputs prepared ahead, on background threads, while the device runs the current step.

A fixed-scale run waits for the CPU twice: every ``data.resimulate_every`` steps every training subject is
simulated anew (k-space truncation or slice profile, noise, bias field, contrast, B-spline baseline of the whole
volume), and every step cuts, stacks and augments its batch of patches. On an accelerator the network's step is
short, so these dominate: the 48-channel H200 runs of 2026-11-30 (14 volumes, a refresh every 50 steps) spent a
fifth to a quarter of their time in the refresh alone, the GPU idle meanwhile.

:class:`BatchPrefetcher` does both ahead of time: one thread cuts the batches of the coming steps into a bounded
queue, and while the batches of one simulation are being cut, a thread pool simulates the next one. The device then
waits only when the CPU cannot keep up.

Stopping is prompt: the simulations run on daemon threads that take no new subject once the prefetcher is closed,
and nothing waits for the subjects still in progress (their results are dropped; the process may exit meanwhile), so
a stopped run saves its state and ends within a fraction of a second even while a large volume is being simulated.
Nothing is drawn past the run's last step, and a simulation is started only when a step of the run will use it.

Determinism: a batch depends only on ``(seed, step, rank)`` and on the simulation it is cut from, which depends only
on ``(seed, refresh number)`` (:mod:`.data`); the prefetcher computes exactly those, each simulation on fresh shallow
copies of the subjects (never the arrays a queued batch was cut from), so a run draws the same batches, and ends
with the same weights, with or without it, resumed or not.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from collections.abc import Callable, Sequence

from .augment import PatchBatch
from .data import Subject

__all__ = ["BatchPrefetcher", "StoppedWaiting"]

_POLL_S = 0.1  # how often a blocked thread looks at the stop flag


class StoppedWaiting(Exception):
    """:meth:`BatchPrefetcher.batch` gave up waiting because its ``stop`` callable asked it to."""


class _Simulation:
    """One simulation (number ``number``) of every subject, on shallow copies, by ``workers`` daemon threads."""

    def __init__(self, subjects: Sequence[Subject], simulate: Callable[[Subject, int, int], None], number: int,
                 workers: int, stop: threading.Event) -> None:
        self.number = number
        self._subjects, self._simulate, self._stop = subjects, simulate, stop
        self._results: list[Subject | None] = [None] * len(subjects)
        self._error: BaseException | None = None
        self._pending: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(len(subjects)):
            self._pending.put(index)
        self._remaining = len(subjects)
        self._lock = threading.Lock()
        self._done = threading.Event()
        for _ in range(max(1, min(workers, len(subjects)))):
            threading.Thread(target=self._work, name="mrisuperres-simulate", daemon=True).start()

    def _work(self) -> None:
        while not self._stop.is_set() and not self._done.is_set():
            try:
                index = self._pending.get_nowait()
            except queue.Empty:
                return
            try:
                subject = copy.copy(self._subjects[index])
                self._simulate(subject, self.number, index)
                self._results[index] = subject
            except BaseException as error:  # handed to whoever waits for this simulation
                with self._lock:
                    self._error = self._error or error
                self._done.set()
                return
            with self._lock:
                self._remaining -= 1
                if self._remaining == 0:
                    self._done.set()

    def result(self) -> list[Subject] | None:
        """The simulated subjects (waits for them); ``None`` when stopped first.

        Raises: what simulating a subject raised."""
        while not self._done.wait(_POLL_S):
            if self._stop.is_set():
                return None
        if self._error is not None:
            raise self._error
        return list(self._results)  # type: ignore[arg-type]


class BatchPrefetcher:
    """Batches of consecutive steps, drawn on a background thread, and the next simulation, on daemon threads.

    Args:
        subjects: the training subjects (their simulation arrays are not used or changed; each simulation
            fills shallow copies).
        simulate: ``simulate(subject, refresh, index)`` fills ``subject``'s current input, baseline and target
            with simulation number ``refresh`` (``index``: the subject's position in ``subjects``).
        draw: ``draw(subjects, step)`` returns the (augmented) batch of ``step`` from simulated subjects.
        resimulate_every: steps per simulation (simulation ``step // resimulate_every`` serves ``step``).
        start: the first step to draw (a resumed run's step).
        ahead: batches kept ready (at least 1).
        workers: threads simulating subjects in parallel.
        end: the run's number of steps, asked again as it goes (a time budget may change it): no batch is drawn
            for step ``end()`` or later, and no simulation is started that no such step needs. ``None``: no end.

    Raises (from :meth:`batch`): whatever simulating or drawing raised, on the training thread.
    """

    def __init__(self, subjects: Sequence[Subject], simulate: Callable[[Subject, int, int], None],
                 draw: Callable[[list[Subject], int], PatchBatch], resimulate_every: int, start: int,
                 ahead: int = 4, workers: int = 1, end: Callable[[], int] | None = None) -> None:
        if ahead < 1 or resimulate_every < 1:
            raise ValueError("ahead and resimulate_every must be at least 1")
        self._subjects = list(subjects)
        self._simulate = simulate
        self._draw = draw
        self._every = resimulate_every
        self._workers = workers
        self._end = end
        self._next_step = start
        self._queue: queue.Queue[tuple[int, PatchBatch | BaseException]] = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self.wait_s = 0.0  # time the training thread spent waiting for batches
        self._thread = threading.Thread(target=self._produce, args=(start,), name="mrisuperres-prefetch",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------ producer side
    def _needed(self, step: int) -> bool:
        return self._end is None or step < self._end()

    def _simulation(self, number: int) -> _Simulation:
        return _Simulation(self._subjects, self._simulate, number, self._workers, self._stop)

    def _produce(self, step: int) -> None:
        try:
            number, current, upcoming = -1, None, None
            while not self._stop.is_set():
                if not self._needed(step):  # past the run's end (for now: a time budget may move it)
                    self._stop.wait(_POLL_S)
                    continue
                if step // self._every != number:
                    number = step // self._every
                    if upcoming is None or upcoming.number != number:
                        upcoming = self._simulation(number)
                    current = upcoming.result()
                    if current is None:
                        return
                    upcoming = self._simulation(number + 1) if self._needed((number + 1) * self._every) else None
                if not self._put((step, self._draw(current, step))):
                    return
                step += 1
        except BaseException as error:  # handed to the training thread, raised there
            self._put((step, error))

    def _put(self, item: tuple[int, PatchBatch | BaseException]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    # ------------------------------------------------------------------------------------------ consumer side
    def batch(self, step: int, stop: Callable[[], bool] | None = None) -> PatchBatch:
        """The batch of ``step``; steps must be asked for in order, from ``start``. While it waits, ``stop`` is
        asked every 0.1 s (a stop signal need not wait for a simulation of large volumes).

        Raises:
            StoppedWaiting: ``stop()`` returned true before the batch was ready (the same step may be asked again).
            ValueError: ``step`` is not the next one.
            Exception: what drawing or simulating this step's batch raised.
        """
        if step != self._next_step:
            raise ValueError(f"the prefetcher serves step {self._next_step} next, not step {step}")
        started = time.perf_counter()
        while True:
            try:
                drawn, item = self._queue.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError("the batch-preparing thread stopped") from None
                if stop is not None and stop():
                    self.wait_s += time.perf_counter() - started
                    raise StoppedWaiting(f"stopped while step {step} waited for its batch") from None
        self.wait_s += time.perf_counter() - started
        if isinstance(item, BaseException):
            raise item
        if drawn != step:  # cannot happen while steps are asked for in order
            raise RuntimeError(f"prefetched step {drawn} arrived for step {step}")
        self._next_step += 1
        return item

    def close(self) -> None:
        """Stop drawing and simulating and drop what was prepared. Returns within about 0.1 s: subjects being
        simulated finish on their daemon threads, unused, without being waited for."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()

    def __enter__(self) -> BatchPrefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
