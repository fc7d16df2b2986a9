"""pipeline.training.schedule: the cosine and warm-restart rates, Schedule state round trips,
and unknown scheduler / optimizer names."""

from __future__ import annotations

import itertools

import pytest
from torch import nn

from pipeline.config import TrainConfig
from pipeline.errors import PipelineError
from pipeline.training.schedule import Schedule, build_optimizer, lr_at, lr_restarts_at


def test_lr_at_phases():
    total, warm, base, floor = 100, 10, 1e-3, 1e-5
    lrs = [lr_at(s, total, warm, base, floor) for s in range(total + 5)]
    assert lrs[0] == pytest.approx(base / warm)  # warm-up starts small...
    assert all(a < b for a, b in itertools.pairwise(lrs[:warm]))  # ...and rises linearly
    assert lrs[warm - 1] == pytest.approx(base) and lrs[warm] == pytest.approx(base)
    assert all(a >= b for a, b in itertools.pairwise(lrs[warm:]))  # then only decays
    mid = (warm + total - 1) / 2  # cosine midpoint, halfway between warm-up and the last step
    assert lr_at(int(mid), total, warm, base, floor) > (base + floor) / 2
    assert lr_at(int(mid) + 1, total, warm, base, floor) < (base + floor) / 2
    assert lrs[total - 1] == pytest.approx(floor) and lrs[-1] == floor  # the last step: min_lr


def test_lr_restarts_cycle():
    lrs = [lr_restarts_at(s, 10, 0, 1.0, 0.0) for s in range(30)]
    assert lrs[0] == lrs[10] == lrs[20] == 1.0  # each cycle restarts at the base lr
    assert lrs[5] == pytest.approx(0.5) and lrs[9] < 0.05


@pytest.mark.parametrize("kind", ["cosine", "warm_restarts", "plateau", "none"])
def test_schedule_state_round_trips(kind):
    cfg = TrainConfig(scheduler=kind, lr=0.01, epochs=3, plateau_patience=0)

    def make():
        opt = build_optimizer(nn.Linear(2, 2), cfg)
        return opt, Schedule(opt, cfg, steps_per_epoch=4)

    opt, sched = make()
    for _ in range(5):
        opt.step()
        sched.step_batch()
    sched.step_epoch(0.5)
    sched.step_epoch(0.4)  # plateau: no gain -> cut
    opt2, sched2 = make()
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    opt.step(), opt2.step()
    sched.step_batch(), sched2.step_batch()
    assert sched2.lr == pytest.approx(sched.lr)
    if kind != "none":
        assert sched.lr != pytest.approx(0.01)  # it really moved


def test_unknown_scheduler_and_optimizer_are_rejected():
    opt = build_optimizer(nn.Linear(2, 2), TrainConfig())
    with pytest.raises(PipelineError, match="train.scheduler"):
        Schedule(opt, TrainConfig(scheduler="step"), 4)
    with pytest.raises(PipelineError, match="train.optimizer"):
        build_optimizer(nn.Linear(2, 2), TrainConfig(optimizer="sgd"))
