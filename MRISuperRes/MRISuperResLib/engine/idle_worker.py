"""Work that runs on the CPU time the network leaves unused.

While the network runs, some work of an enhance run is already possible (the B-spline baseline's consistency
score and its output file need only the baseline). Run beside the network at normal priority it would only take
CPU from it; on a thread of the Linux ``SCHED_IDLE`` class it runs only when a core would otherwise idle (between
tiles, while the network's threads wait on memory). Once the network is done, :meth:`IdleExecutor.promote` puts
the thread back to normal priority so what is left finishes at full speed. Elsewhere the thread runs at normal
priority throughout.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor


def _set_policy(thread_id: int, policy_name: str) -> None:
    # Linux schedules threads, not processes: a thread id selects one thread (0: the calling one).
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(thread_id, getattr(os, policy_name), os.sched_param(0))


class _Priority:
    """The idle executor's threads and whether they were promoted (kept apart from the executor, see below)."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.lock = threading.Lock()
        self.promoted = False

    def start(self) -> None:
        with self.lock:
            self.ids.append(threading.get_native_id())
            if not self.promoted:
                _set_policy(0, "SCHED_IDLE")

    def promote(self) -> None:
        with self.lock:
            self.promoted = True
            for thread_id in self.ids:
                _set_policy(thread_id, "SCHED_OTHER")


class IdleExecutor(ThreadPoolExecutor):
    """An executor running submitted calls one after another on one idle-priority thread.

    A call's exception is raised by its future's ``result()``; ``shutdown()`` (or dropping the executor) lets the
    thread end once its calls are done.
    """

    def __init__(self) -> None:
        # The thread initializer must not hold the executor: an executor in a reference cycle outlives its last
        # reference, so its thread would never be told to stop and the interpreter's exit would wait for it
        # forever (a Ctrl-C landing inside submit(), before the caller could shut the executor down).
        self._priority = _Priority()
        super().__init__(max_workers=1, thread_name_prefix="idle", initializer=self._priority.start)

    def promote(self) -> None:
        """Run the remaining calls at normal priority (from any thread)."""
        self._priority.promote()
