"""Fitting a training run into a wall-clock budget (``run.max_minutes``).

The budget counts from the start of the run in this process, data loading included (as a batch queue's wall-time
limit does). The pace is measured, not guessed: wall time per step after a few warm-up steps (kernel tuning, the
first simulation), data refreshes, validations and checkpoints included. From it the last step that ends inside
the budget, less a reserve for the final validation and model file, is planned afresh after every step, never
beyond the configured steps; a cosine schedule refitted to the plan still ends at ``min_lr``.
"""

from __future__ import annotations

import math

#: Steps left out of the pace (warm-up) and measured before the first plan.
MIN_MEASURED_STEPS = 10
#: Share of the budget kept for the final validation, checkpoint and model file.
RESERVE = 0.05


class TimeBudget:
    """``minutes`` of wall time from ``started`` (seconds, ``time.time()``: the run's start) for a run configured
    to end at ``total_steps``."""

    def __init__(self, minutes: float, started: float, total_steps: int) -> None:
        self.seconds = 60.0 * float(minutes)
        self.deadline = started + self.seconds
        self.total_steps = total_steps
        self._steps_seen = 0
        self._mark: tuple[int, float] | None = None

    def plan(self, step: int, now: float) -> int:
        """The step the run should end at, given ``step`` steps done at ``now``: ``total_steps``, or fewer when the
        pace would overrun. Returns ``step`` itself once the budget is spent, never less."""
        if now >= self.deadline:
            return min(step, self.total_steps)
        self._steps_seen += 1
        if self._mark is None:
            if self._steps_seen >= MIN_MEASURED_STEPS:
                self._mark = (step, now)
            return self.total_steps
        done = step - self._mark[0]
        if done < MIN_MEASURED_STEPS:
            return self.total_steps
        pace = (now - self._mark[1]) / done
        remaining = self.deadline - RESERVE * self.seconds - now
        fitting = step + max(0, math.floor(remaining / pace))
        return max(step, min(self.total_steps, fitting))
