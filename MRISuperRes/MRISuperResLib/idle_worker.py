"""Work that runs on the CPU time the network leaves unused.

While the network runs, some work of an enhance run is already possible (the B-spline baseline's consistency
score needs only the baseline). Run beside the network at normal priority it would only take CPU from it; on a
thread of the Linux ``SCHED_IDLE`` class it runs only when a core would otherwise idle (between tiles, while the
network's threads wait on memory), and whatever is left runs when the caller asks for the result. Elsewhere the
thread runs at normal priority.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor


def _lower_priority() -> None:
    # pid 0 is the calling thread: Linux schedules threads, not processes.
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined]


def idle_executor() -> ThreadPoolExecutor:
    """An executor running submitted calls one after another on one idle-priority thread.

    A call's exception is raised by its future's ``result()``; ``shutdown()`` (or dropping the executor) lets the
    thread end once its calls are done.
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="idle", initializer=_lower_priority)
