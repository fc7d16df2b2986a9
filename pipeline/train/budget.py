"""Time budgets (``train.time_budget_min``, the benchmark's equal budget) planned in batches.

A budgeted run is planned from the pace of its first batches, before the first epoch ends, so
the cosine decay ends inside the budget even when the budget holds a few epochs, or less than
one; the last epoch may be partial. After each epoch the plan is checked against the measured
pace (validation included) and shortened if it no longer fits. It is never lengthened: that
would raise the learning rate again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.config import TrainConfig
from pipeline.schedule import Schedule

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


@dataclass
class Probe:
    """Times the first batches of a budgeted run: after ``steps`` batches, ``plan(pace)`` gets
    the seconds a batch took (batches ``skip``..``steps``) and returns how many batches the
    first epoch may train."""

    plan: Callable[[float], int]
    steps: int
    skip: int


class Budget:
    """A run as a number of batches: every epoch in full, or what ``train.time_budget_min``
    allows, kept in ``last.pt`` (``planned``) so a resume continues the same plan and
    learning-rate curve. Whenever the plan changes, the schedule's decay is re-planned to end
    with it and one line says so.

    The plan is made from the pace of the first batches (:meth:`probe`) and shortened after any
    epoch (:meth:`after_epoch`), or on resume (:meth:`resumed`), whose pace, validation
    included, no longer fits. It is never lengthened: that would raise the rate again."""

    def __init__(self, tc: TrainConfig, n_batches: int, schedule: Schedule, planned: int = 0,
                 history: list[dict] | None = None, say: Callable[..., None] = print):
        history = history or []
        self.tc, self.n_batches, self.schedule, self.say = tc, n_batches, schedule, say
        self.seconds = tc.time_budget_min * 60
        self.total = planned or tc.epochs * n_batches
        self.spent = sum(r["epoch_seconds"] for r in history)
        self.done = sum(r.get("train_batches", n_batches) for r in history)
        if self.total < tc.epochs * n_batches:  # a resumed plan: its curve, not the full one
            self.schedule.shorten(optimizer_steps(self.total, tc.accumulate))

    @property
    def active(self) -> bool:
        return self.seconds > 0

    @property
    def planned(self) -> int:
        """What ``last.pt`` keeps: the batches planned (0: every epoch in full)."""
        return self.total if self.active else 0

    @property
    def planned_epochs(self) -> int:
        return math.ceil(self.total / self.n_batches)

    def epoch_cap(self, epoch: int) -> int:
        """Batches epoch ``epoch`` trains under the plan (0: the plan is used up)."""
        return epoch_batches(self.total, self.n_batches, epoch)

    def probe(self, agree: Callable[[float], float] = float) -> Probe | None:
        """The first epoch's :class:`Probe`: the plan from the pace of its first batches
        (``agree``: the pace the ranks agree on), validation's share reserved."""
        if not self.active:
            return None

        def plan(seconds_per_batch: float) -> int:
            pace = agree(seconds_per_batch)
            self._apply(plan_batches(self.seconds, pace, self.total, reserve=VAL_SHARE),
                        f"{pace:.2f} s/batch")
            return self.epoch_cap(0)

        return Probe(plan, PROBE_STEPS, PROBE_SKIP)

    def resumed(self) -> None:
        """A resumed run: shorten the plan if the pace so far needs it."""
        if self.active and self.done:
            self._shorten("resumed")

    def after_epoch(self, epoch_seconds: float, batches: int, epoch: int) -> None:
        """Count an epoch (training and validation) and shorten the plan if it needs it."""
        if self.active:
            self.spent += epoch_seconds
            self.done += batches
            self._shorten(f"after epoch {epoch + 1}")

    def _shorten(self, why: str) -> None:
        fits = plan_batches(self.seconds, self.spent / self.done, self.total, spent_s=self.spent,
                            done=self.done)
        if fits < self.total:
            self._apply(fits, why)

    def _apply(self, total: int, why: str) -> None:
        self.total = total
        self.schedule.shorten(optimizer_steps(total, self.tc.accumulate))
        self.say(f"time budget {self.tc.time_budget_min:g} min ({why}): planning "
                 f"{describe(total, self.n_batches, self.tc.epochs)}", flush=True)
