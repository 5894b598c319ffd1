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


class IdleExecutor(ThreadPoolExecutor):
    """An executor running submitted calls one after another on one idle-priority thread.

    A call's exception is raised by its future's ``result()``; ``shutdown()`` (or dropping the executor) lets the
    thread end once its calls are done.
    """

    def __init__(self) -> None:
        self._ids: list[int] = []
        self._lock = threading.Lock()
        self._promoted = False
        super().__init__(max_workers=1, thread_name_prefix="idle", initializer=self._start)

    def _start(self) -> None:
        with self._lock:
            self._ids.append(threading.get_native_id())
            if not self._promoted:
                _set_policy(0, "SCHED_IDLE")

    def promote(self) -> None:
        """Run the remaining calls at normal priority (from any thread)."""
        with self._lock:
            self._promoted = True
            for thread_id in self._ids:
                _set_policy(thread_id, "SCHED_OTHER")
