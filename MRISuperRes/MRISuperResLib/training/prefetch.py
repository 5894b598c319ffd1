"""Training inputs prepared ahead, on background threads, while the device runs the current step.

A fixed-scale run waits for the CPU twice: every ``data.resimulate_every`` steps every training subject is
simulated anew (k-space truncation or slice profile, noise, bias field, contrast, B-spline baseline of the whole
volume), and every step cuts, stacks and augments its batch of patches. On an accelerator the network's step is
short, so these dominate: the 48-channel H200 runs of 2026-11-30 (14 volumes, a refresh every 50 steps) spent a
fifth to a quarter of their time in the refresh alone, the GPU idle meanwhile.

:class:`BatchPrefetcher` does both ahead of time: one thread cuts the batches of the coming steps into a bounded
queue, and while the batches of one simulation are being cut, a thread pool simulates the next one. The device then
waits only when the CPU cannot keep up.

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
from concurrent.futures import Future, ThreadPoolExecutor

from .augment import PatchBatch
from .data import Subject

__all__ = ["BatchPrefetcher"]

_POLL_S = 0.1  # how often a blocked thread looks at the stop flag


class BatchPrefetcher:
    """Batches of consecutive steps, drawn on a background thread, and the next simulation, on a thread pool.

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

    Raises (from :meth:`batch`): whatever simulating or drawing raised, on the training thread.
    """

    def __init__(self, subjects: Sequence[Subject], simulate: Callable[[Subject, int, int], None],
                 draw: Callable[[list[Subject], int], PatchBatch], resimulate_every: int, start: int,
                 ahead: int = 4, workers: int = 1) -> None:
        if ahead < 1 or resimulate_every < 1:
            raise ValueError("ahead and resimulate_every must be at least 1")
        self._subjects = list(subjects)
        self._simulate = simulate
        self._draw = draw
        self._every = resimulate_every
        self._next_step = start
        self._queue: queue.Queue[tuple[int, PatchBatch | BaseException]] = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(self._subjects))),
                                        thread_name_prefix="mrisuperres-simulate")
        self.wait_s = 0.0  # time the training thread spent waiting for batches
        self._thread = threading.Thread(target=self._produce, args=(start,), name="mrisuperres-prefetch",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------ producer side
    def _start_simulation(self, number: int) -> list[Future[Subject]]:
        def one(index: int) -> Subject:
            subject = copy.copy(self._subjects[index])
            self._simulate(subject, number, index)
            return subject

        return [self._pool.submit(one, index) for index in range(len(self._subjects))]

    def _produce(self, step: int) -> None:
        try:
            number = step // self._every
            current = [future.result() for future in self._start_simulation(number)]
            upcoming = self._start_simulation(number + 1)
            while not self._stop.is_set():
                if step // self._every != number:
                    number = step // self._every
                    current = [future.result() for future in upcoming]
                    upcoming = self._start_simulation(number + 1)
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
    def batch(self, step: int) -> PatchBatch:
        """The batch of ``step``; steps must be asked for in order, from ``start``.

        Raises:
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
        self.wait_s += time.perf_counter() - started
        if isinstance(item, BaseException):
            raise item
        if drawn != step:  # cannot happen while steps are asked for in order
            raise RuntimeError(f"prefetched step {drawn} arrived for step {step}")
        self._next_step += 1
        return item

    def close(self) -> None:
        """Stop the threads and drop what was prepared (waits for subjects being simulated to finish)."""
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)  # a producer waiting on a cancelled one stops
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> BatchPrefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
