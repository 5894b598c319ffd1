"""Fitting a training run into a wall-clock budget (``run.max_minutes``).

The budget counts from the start of the run in this process, data loading included (as a batch queue's wall-time
limit does). The pace is measured, not guessed: wall time per step since the first step, data refreshes,
validations and checkpoints included. From it the last step that ends inside the budget is planned, less a
reserve for the final validation and model file, and only ever lowered, so a cosine schedule refitted to it still
ends at ``min_lr``.
"""

from __future__ import annotations

import math

#: Steps measured before the first plan (a pace from fewer is noise).
MIN_MEASURED_STEPS = 10
#: Share of the budget kept for the final validation, checkpoint and model file.
RESERVE = 0.05


class TimeBudget:
    """``minutes`` of wall time from ``started`` (seconds, ``time.time()``: the run's start); the steps are timed
    from ``first_step`` (a resumed run's step) at ``stepping_from`` (when the loop began)."""

    def __init__(self, minutes: float, started: float, stepping_from: float, first_step: int) -> None:
        self.seconds = 60.0 * float(minutes)
        self.deadline = started + self.seconds
        self.stepping_from = stepping_from
        self.first_step = first_step

    def plan(self, step: int, total_steps: int, now: float) -> int:
        """The step the run should end at: ``total_steps``, or fewer when the pace so far would overrun.

        ``step`` is the number of steps done. Returns ``step`` itself once the budget is spent, never less.
        """
        if now >= self.deadline:
            return min(step, total_steps)
        done = step - self.first_step
        if done < MIN_MEASURED_STEPS:
            return total_steps
        pace = (now - self.stepping_from) / done
        remaining = self.deadline - RESERVE * self.seconds - now
        fitting = step + max(0, math.floor(remaining / pace))
        return max(step, min(total_steps, fitting))
