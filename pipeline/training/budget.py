"""Time budgets (``train.time_budget_min``, the benchmark's equal budget) planned in batches.

A budgeted run is planned from the pace of its first batches, before the first epoch ends, so
the cosine decay ends inside the budget even when the budget holds a few epochs, or less than
one; the last epoch may be partial. After each epoch the plan is checked against the measured
pace (validation included) and shortened if it no longer fits. It is never lengthened: that
would raise the learning rate again.
"""

from __future__ import annotations

import math

# Batches timed at the start of a budgeted run: the pace is measured from PROBE_SKIP to
# PROBE_STEPS, leaving out the first batches (workers starting, caches cold).
PROBE_STEPS = 10
PROBE_SKIP = 2
# Share of the budget kept for validation when the plan is made from training batches alone.
VAL_SHARE = 0.1


def plan_batches(budget_s: float, seconds_per_batch: float, max_batches: int, *,
                 spent_s: float = 0.0, done: int = 0, reserve: float = 0.0) -> int:
    """Total training batches (``done`` included) that fit ``budget_s`` seconds when ``done``
    batches took ``spent_s`` and the rest go at ``seconds_per_batch``, keeping ``reserve`` of
    the budget free; at least ``done`` and at least one, at most ``max_batches``."""
    left = budget_s * (1.0 - reserve) - spent_s
    more = int(max(0.0, left) // max(seconds_per_batch, 1e-9))
    return max(done, 1, min(max_batches, done + more))


def epoch_batches(total: int, n_batches: int, epoch: int) -> int:
    """Batches epoch ``epoch`` (0-based) trains under a plan of ``total`` batches of epochs of
    ``n_batches``: full epochs, then the remainder, then 0."""
    return max(0, min(n_batches, total - epoch * n_batches))


def describe(total: int, n_batches: int, max_epochs: int) -> str:
    """``'2.4 of 30 epochs (370 batches)'``: a plan for the log."""
    return f"{total / n_batches:.3g} of {max_epochs} epochs ({total} batches)"


def optimizer_steps(batches: int, accumulate: int) -> int:
    return math.ceil(batches / accumulate)
