"""The metrics files, one schema each: written by one stage, read strictly by the others.

    <metrics>/<label>/fold<K>.json   TrainRecord   pipeline.train: the best epoch of one run
    <metrics>/<label>/cv.json        CVSummary     pipeline.evaluate: Dice at full resolution

The benchmark table and the leaderboard read them with :func:`read_record`; a file of any
other shape (a missing or unknown key, a value of the wrong type, not JSON) is one clear
error naming the file, never a guess at what it meant.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pipeline.atomic import write_json
from pipeline.errors import PipelineError
from pipeline.typed import build

R = TypeVar("R")


@dataclass(kw_only=True)
class TrainRecord:
    """One training run: the best epoch's validation metrics (at the training size, or at full
    size with ``full_res_val``; None without validation), its speed and its settings."""

    model: str
    fold: int
    best_epoch: int
    val_dice: float | None
    val_accuracy: float | None
    val_precision: float | None
    val_recall: float | None
    val_images: int | None
    train_loss: float
    epochs: int  # epochs trained (the last one may be partial under a time budget)
    images_per_s: float  # training throughput
    seconds: float  # wall time of all epochs, training and validation, across resumes
    height: int
    width: int
    device: str
    precision: str
    full_res_val: bool
    peak_memory_mib: float | None
    params: int | None = None
    train_batches: int | None = None  # batches trained over all epochs
    batches_per_epoch: int | None = None

    @property
    def epochs_trained(self) -> float:
        """Epochs as a fraction: what a time budget really allowed."""
        if self.train_batches and self.batches_per_epoch:
            return self.train_batches / self.batches_per_epoch
        return float(self.epochs)


@dataclass(kw_only=True)
class GroupScore:
    """Mean Dice of a group of images (a fold, an angle, a make)."""

    dice: float
    std: float
    images: int
    ci95: list[float] | None = None  # 95% bootstrap interval over cars (folds)


@dataclass(kw_only=True)
class PredictSettings:
    """What the scored masks were predicted with: every result setting of ``predict``
    (``precision`` resolved, never ``auto``) and the device type."""

    tta: list[str]
    threshold: float
    largest_component: bool
    precision: str
    device: str
    refiner: bool = False  # the edge refiners beside the checkpoints were applied
    channels_last: bool = True
    compile: bool = False
    compile_mode: str = "default"
    decode: str = "workers"


@dataclass(kw_only=True)
class CVSummary:
    """Per-image Dice at the photos' full size: out of fold (``mode: oof``; ``checkpoints``
    maps each fold to its model) or one ensemble on a labelled folder (``mode: all-images``;
    ``checkpoints`` lists the ensemble)."""

    mode: str
    label: str
    data_root: str
    folds_file: str | None = None
    images: int
    dice: float
    dice_ci95: list[float] | None = None  # 95% bootstrap interval over cars
    dice_std: float
    dice_min: float
    dice_median: float
    precision: float
    recall: float
    folds: dict[str, GroupScore]
    angles: dict[str, GroupScore]
    makes: dict[str, GroupScore]
    checkpoints: dict[str, str] | list[str]
    skipped_folds: list[int] = field(default_factory=list)
    images_per_s: float | None = None  # full-resolution prediction with TTA
    predict: PredictSettings

    def fold_dice(self) -> dict[int, float]:
        """``{fold: mean Dice}`` (out of fold; ``-1`` for an all-images summary)."""
        return {int(k): g.dice for k, g in self.folds.items()}


def to_json(record) -> dict:
    return dataclasses.asdict(record)


def write_record(path: str | Path, record) -> Path:
    """Atomically write ``record`` as JSON."""
    return write_json(path, to_json(record))


def read_record(path: str | Path, cls: type[R]) -> R:
    """The record of type ``cls`` in ``path``; one :class:`PipelineError` line otherwise."""
    path = Path(path)
    what = {TrainRecord: "training record (pipeline.train)",
            CVSummary: "CV summary (pipeline.evaluate)"}.get(cls, cls.__name__)
    if not path.is_file():
        raise PipelineError(f"{path}: {what} not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PipelineError(f"{path}: not a readable {what} ({exc})") from None
    return build(cls, data, f"{path} (a {what})")
