"""pipeline.schedule: the cosine rate, Schedule state round trips, shortening the plan, and
AdamW's parameter groups."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from pipeline.config import TrainConfig, default
from pipeline.schedule import Schedule, build_optimizer, lr_at


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


def test_schedule_state_round_trips():
    cfg = default(TrainConfig, lr=0.01, epochs=3)

    def make():
        opt = build_optimizer(nn.Linear(2, 2), cfg)
        return opt, Schedule(opt, cfg, steps_per_epoch=4)

    opt, sched = make()
    for _ in range(5):
        opt.step()
        sched.step()
    opt2, sched2 = make()
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    opt.step(), opt2.step()
    sched.step(), sched2.step()
    assert sched2.lr == pytest.approx(sched.lr)
    assert sched.lr != pytest.approx(0.01)  # it really moved


def test_shortening_ends_the_decay_at_the_new_total():
    cfg = default(TrainConfig, lr=0.01, min_lr=0.0001, epochs=10, warmup_epochs=0)
    opt = build_optimizer(nn.Linear(2, 2), cfg)
    sched = Schedule(opt, cfg, steps_per_epoch=10)
    for _ in range(20):
        opt.step()
        sched.step()
    sched.shorten(40)  # 40 steps instead of 100: the rate applies at once
    assert sched.lr == pytest.approx(lr_at(20, 40, 0, 0.01, 0.0001))
    for _ in range(19):
        opt.step()
        sched.step()
    assert sched.lr == pytest.approx(0.0001)  # step 39, the last one: min_lr


def test_adamw_skips_weight_decay_on_biases_and_norms():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    opt = build_optimizer(model, default(TrainConfig, weight_decay=0.1))
    assert isinstance(opt, torch.optim.AdamW)
    decay, none = opt.param_groups
    assert decay["weight_decay"] == 0.1 and [p.ndim for p in decay["params"]] == [4]
    assert none["weight_decay"] == 0.0 and all(p.ndim == 1 for p in none["params"])
