"""Optimisers and learning-rate schedules.

One schedule, cosine decay after a linear warm-up: a pure function of the optimiser step
(:func:`lr_at`, also the edge refiner's) wrapped in ``LambdaLR``, so its whole state is one
integer that ``--resume`` restores.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.config import TrainConfig


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    """Cosine decay with linear warm-up; ``step`` counts optimiser steps from 0."""
    # 1) warm-up: ramp linearly up to base_lr so Adam's early, noisy moments do not blow up
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    # 2) past the end (e.g. a resumed run with more steps): hold the floor
    if step >= total_steps:
        return min_lr
    # 3) cosine from base_lr at the end of warm-up down to min_lr at the last step
    progress = (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (base_lr - min_lr)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; biases and norm weights (1-D tensors) get no weight decay."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr)


class Schedule:
    """The learning rate of every optimiser step: :func:`lr_at` over ``train.epochs``, as a
    ``LambdaLR`` whose whole state is the step count (what ``--resume`` restores)."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
        self.optimizer, self.cfg, self.steps_per_epoch = optimizer, cfg, steps_per_epoch
        total = max(1, cfg.epochs * steps_per_epoch)
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
        self.inner = torch.optim.lr_scheduler.LambdaLR(optimizer, self._factor(total, warmup))

    def _factor(self, total: int, warmup: int):
        base, floor = self.cfg.lr, self.cfg.min_lr
        scale = 1.0 / base if base > 0 else 0.0  # LambdaLR wants a factor of the base lr
        return lambda s: lr_at(s, total, warmup, base, floor) * scale

    def shorten(self, total_steps: int) -> None:
        """Re-plan the decay to end after ``total_steps`` optimiser steps (what a time budget
        allows), keeping the steps already taken: the run still anneals to ``min_lr``."""
        total = max(1, total_steps)
        # a budget of a fraction of an epoch must not be all warm-up
        warmup = min(round(self.cfg.warmup_epochs * self.steps_per_epoch), total // 5)
        self.inner.lr_lambdas = [self._factor(total, warmup) for _ in self.inner.lr_lambdas]
        # the new plan applies to the current step at once, not from the next one
        for group, base_lr, fn in zip(self.optimizer.param_groups, self.inner.base_lrs,
                                      self.inner.lr_lambdas, strict=True):
            group["lr"] = base_lr * fn(self.inner.last_epoch)

    def step(self) -> None:
        """Call after every optimiser step."""
        self.inner.step()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)
