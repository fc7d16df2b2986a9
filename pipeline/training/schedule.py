"""Optimisers and learning-rate schedules.

Step-based schedules (cosine with warm-up, cosine with warm restarts) are pure functions of the
optimiser step wrapped in ``LambdaLR``, so their whole state is one integer that ``--resume``
restores. ReduceLROnPlateau steps once per epoch on validation Dice (mode max).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from pipeline.config import TrainConfig
from pipeline.errors import PipelineError


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


def lr_restarts_at(
    step: int, period_steps: int, warmup_steps: int, base_lr: float, min_lr: float
) -> float:
    """Cosine with warm restarts (SGDR): warm-up once, then cosine cycles of ``period_steps``."""
    # 1) warm-up, as in lr_at
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    # 2) position inside the current cycle; each cycle restarts at base_lr
    t = (step - warmup_steps) % max(1, period_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * t / max(1, period_steps))) * (base_lr - min_lr)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or AdamW; biases and norm weights (1-D tensors) get no weight decay."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    raise PipelineError(f"train.optimizer must be adam or adamw, got '{cfg.optimizer}'")


class Schedule:
    """One place that knows when the learning rate moves: after each optimiser step
    (``cosine``, ``warm_restarts``), after each epoch (``plateau``), or never (``none``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
        self.kind = cfg.scheduler
        total = max(1, cfg.epochs * steps_per_epoch)
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
        base, floor = cfg.lr, cfg.min_lr
        scale = 1.0 / base if base > 0 else 0.0  # LambdaLR wants a factor of the base lr
        if self.kind == "cosine":
            self.inner: Any = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda s: lr_at(s, total, warmup, base, floor) * scale
            )
        elif self.kind == "warm_restarts":
            period = max(1, cfg.restart_epochs * steps_per_epoch)
            self.inner = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda s: lr_restarts_at(s, period, warmup, base, floor) * scale
            )
        elif self.kind == "plateau":
            self.inner = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=cfg.plateau_factor,
                patience=cfg.plateau_patience, min_lr=floor,
            )
        elif self.kind == "none":
            self.inner = None
        else:
            raise PipelineError(
                "train.scheduler must be cosine, plateau, warm_restarts or none, "
                f"got '{self.kind}'"
            )
        self.optimizer = optimizer

    def shorten(self, total_steps: int, steps_per_epoch: int, cfg: TrainConfig) -> None:
        """Re-plan the cosine decay to end after ``total_steps`` optimiser steps (what a time
        budget allows), keeping the steps already taken: the run still anneals to ``min_lr``."""
        if self.kind != "cosine":
            return
        total = max(1, total_steps)
        # a budget of a fraction of an epoch must not be all warm-up
        warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total // 5)
        base, floor = cfg.lr, cfg.min_lr
        scale = 1.0 / base if base > 0 else 0.0
        self.inner.lr_lambdas = [
            (lambda s: lr_at(s, total, warmup, base, floor) * scale) for _ in self.inner.lr_lambdas
        ]
        # the new plan applies to the current step at once, not from the next one
        for group, base_lr, fn in zip(self.optimizer.param_groups, self.inner.base_lrs,
                                      self.inner.lr_lambdas, strict=True):
            group["lr"] = base_lr * fn(self.inner.last_epoch)

    def step_batch(self) -> None:
        """Call after every optimiser step."""
        if self.kind in ("cosine", "warm_restarts"):
            self.inner.step()

    def step_epoch(self, score: float | None) -> None:
        """Call after validation with the score to maximise (val Dice; -train loss without one)."""
        if self.kind == "plateau" and score is not None:
            self.inner.step(score)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {} if self.inner is None else self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self.inner is not None and state:
            self.inner.load_state_dict(state)
