"""Exponential moving average of the weights (``train.ema``), the model that is validated and
kept as ``best.pt``.

After every optimiser step ``ema = decay * ema + (1 - decay) * weights`` for every floating-point
parameter and buffer; integer buffers (BatchNorm's batch counter) are copied. Early in a run the
decay is warmed up as ``min(decay, (1 + step) / (10 + step))`` (the TensorFlow convention), so
the average is not dominated by the random initial weights when a run is short. The average
lives on the model's device, in float32.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(decay: float, step: int) -> float:
    """The decay used at optimiser step ``step`` (0-based): ``decay``, warmed up early on."""
    return min(decay, (1.0 + step) / (10.0 + step))


class WeightEMA:
    """A shadow copy of ``model`` whose weights follow an exponential moving average."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema must be in (0, 1) or 0 (off), got {decay}")
        self.decay = decay
        self.steps = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` (same architecture) into the average."""
        d = ema_decay(self.decay, self.steps)
        mine = self.module.state_dict()
        for name, value in model.state_dict().items():
            shadow = mine[name]
            if shadow.dtype.is_floating_point:
                shadow.mul_(d).add_(value.detach().to(shadow.dtype), alpha=1.0 - d)
            else:
                shadow.copy_(value)
        self.steps += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "steps": self.steps, "weights": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.steps = float(state["decay"]), int(state["steps"])
        self.module.load_state_dict(state["weights"])
