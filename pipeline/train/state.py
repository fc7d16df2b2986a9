"""What ``--resume`` needs beyond the weights: progress through the epochs and RNG states."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import PipelineError
from pipeline.models.checkpoint import load_checkpoint, unwrap


@dataclass
class Progress:
    """Where training stands after ``history[-1]``; saved in ``last.pt``."""

    history: list[dict] = field(default_factory=list)
    best_dice: float = -1.0
    best_epoch: int = -1
    planned_batches: int = 0  # the batches a time budget planned (0: every epoch in full)

    @property
    def next_epoch(self) -> int:
        return self.history[-1]["epoch"] + 1 if self.history else 0

    def record(self, row: dict) -> bool:
        """Add one epoch; returns whether it is the new best. Without validation (fold -1)
        the latest epoch is always the best."""
        self.history.append(row)
        score = row["val_dice"] if row["val_dice"] is not None else float(row["epoch"])
        improved = score > self.best_dice
        if improved:
            self.best_dice, self.best_epoch = score, row["epoch"]
        return improved

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_state(progress: Progress, optimizer, schedule, scaler, ema=None) -> dict:
    """The ``train_state`` stored in ``last.pt``."""
    return {"progress": progress.state_dict(), "epoch": progress.next_epoch - 1,
            "optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "ema": ema.state_dict() if ema is not None else None,
            "rng": rng_state()}


def restore(path: Path, key: str, model, optimizer, schedule, scaler, ema=None) -> Progress:
    """Load ``last.pt`` into the live objects (weights, optimiser, schedule, scaler, the
    weight average, RNGs), refusing one made with other settings, training images or starting
    weights (its resume ``key``, :func:`pipeline.train.trainer.run_key`)."""
    ckpt = load_checkpoint(path)
    if ckpt.get("key") != key:
        raise PipelineError(f"{path}: was trained with other settings, training images (the "
                            "folds file may have changed) or starting weights; drop --resume "
                            "to start over")
    state = ckpt.get("train_state")
    if not state or "progress" not in state:
        raise PipelineError(f"{path}: has no training state to resume from; drop --resume")
    unwrap(model).load_state_dict(ckpt["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["scheduler"])
    if state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    set_rng_state(state["rng"])
    return Progress(**state["progress"])
