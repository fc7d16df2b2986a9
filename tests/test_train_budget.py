"""pipeline.train.budget: a time budget planned in batches (plan_batches), spread over
epochs (epoch_batches), and the plan's log line (describe)."""

from __future__ import annotations

from pipeline.train.budget import describe, epoch_batches, plan_batches


def test_plan_batches_fits_the_remaining_time():
    # 600 s at 1 s per batch, 1000 batches at most
    assert plan_batches(600, 1.0, 1000) == 600
    assert plan_batches(600, 1.0, 1000, reserve=0.1) == 540  # a tenth kept for validation
    assert plan_batches(600, 0.1, 1000) == 1000  # fast: capped at every epoch
    assert plan_batches(600, 1e4, 1000) == 1  # slow: one batch at least
    # 300 batches took 400 s: 200 s left at 4/3 s per batch is 150 more
    assert plan_batches(600, 400 / 300, 1000, spent_s=400, done=300) == 450
    assert plan_batches(600, 2.0, 1000, spent_s=700, done=300) == 300  # over: stop here


def test_epoch_batches_spread_a_plan_over_epochs():
    assert [epoch_batches(370, 154, e) for e in range(4)] == [154, 154, 62, 0]
    assert [epoch_batches(54, 100, e) for e in range(2)] == [54, 0]  # part of one epoch
    assert describe(370, 154, 30) == "2.4 of 30 epochs (370 batches)"
