"""Work on the CPU time the network leaves unused (MRISuperResLib.engine.idle_worker)."""

from __future__ import annotations

import gc
import os
import threading

import pytest

from MRISuperResLib.engine.idle_worker import IdleExecutor

linux_only = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="scheduling classes are Linux's")


@linux_only
def test_calls_run_at_idle_priority_until_promoted() -> None:
    executor = IdleExecutor()
    try:
        assert executor.submit(os.sched_getscheduler, 0).result() == os.SCHED_IDLE
        gate = threading.Event()
        waiting = executor.submit(lambda: (gate.wait(10), os.sched_getscheduler(0))[1])
        executor.promote()
        gate.set()
        assert waiting.result() == os.SCHED_OTHER
        assert executor.submit(os.sched_getscheduler, 0).result() == os.SCHED_OTHER
    finally:
        executor.shutdown()


def test_a_failing_call_raises_from_its_future_and_the_executor_goes_on() -> None:
    executor = IdleExecutor()
    try:
        with pytest.raises(ZeroDivisionError):
            executor.submit(lambda: 1 / 0).result()
        assert executor.submit(sum, [1, 2]).result() == 3
    finally:
        executor.shutdown()


def idle_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("idle")]


def test_a_dropped_executor_lets_its_thread_end() -> None:
    # Without shutdown() the thread ends only when the executor is freed by its last reference: an executor in a
    # reference cycle waits for the cyclic collector, and the interpreter's exit joined its thread forever.
    gc.disable()
    try:
        before = set(idle_threads())
        executor = IdleExecutor()
        assert executor.submit(sum, [1, 2]).result() == 3
        (thread,) = set(idle_threads()) - before
        del executor
        thread.join(10)
        assert not thread.is_alive()
    finally:
        gc.enable()
