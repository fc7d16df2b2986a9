"""Train one model on one fold: ``train(cfg, fold, run=RunPaths(...))`` (one phase of what
``python -m pipeline.train`` runs, alone or as one rank under torchrun).

Writes the run's best and last checkpoints, its training record and its DVCLive folder
(:mod:`pipeline.runs`). Every checkpoint records the images its weights learnt from
(``trained_on``: this run's training images and those of the weights it started from) and the
run's resume key (:func:`run_key`). ``resume=True`` continues from ``last.pt`` when its key is
this run's, and ends in the same state as an uninterrupted run: the shuffle order is seeded per
epoch and the augmentation per (epoch, image), so neither depends on what ran before.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from pipeline import distributed
from pipeline.config import Config, TrainConfig, to_dict
from pipeline.data.dataset import crop_size
from pipeline.device import (
    compile_model,
    enable_fast_kernels,
    peak_memory_mib,
    reset_peak_memory,
    resolve_precision,
    seed_everything,
)
from pipeline.dice import count_metrics
from pipeline.distributed import DistInfo
from pipeline.errors import PipelineError
from pipeline.folds.splits import check_unseen
from pipeline.keys import output_key, result_settings
from pipeline.losses import build_loss
from pipeline.models.checkpoint import load_checkpoint, model_config_of, save_checkpoint, trained_on
from pipeline.models.factory import build_model, count_parameters
from pipeline.records import TrainRecord, write_record
from pipeline.runs import RunPaths
from pipeline.schedule import Schedule, build_optimizer
from pipeline.train import budget, shm
from pipeline.train.ema import WeightEMA
from pipeline.train.loaders import cache_dir, cache_rows, make_loaders, run_rows, set_epoch
from pipeline.train.loop import NonFiniteLoss, Parts, train_one_epoch, validate_epoch
from pipeline.train.record import epoch_row, log_epoch, training_record
from pipeline.train.state import Progress, restore, train_state
from pipeline.train.tracking import Tracker


@dataclass(frozen=True)
class Split:
    """The images of one run: those it trains on and those it holds out (validation), and
    where they come from (for messages)."""

    train: pd.DataFrame
    val: pd.DataFrame
    what: str  # "fold 2 of folds/folds.csv"

    @property
    def held_out(self) -> list[str]:
        return self.val["img"].tolist()


def run_key(cfg: Config, split: Split) -> str:
    """The resume key of a run: its model and training settings as written, the images it
    trains and validates on, and the bytes (not the path) of the checkpoint it starts from."""
    tc = cfg.train
    return output_key([tc.init_from] if tc.init_from else [], result_settings(cfg.model),
                      result_settings(tc, init_from=bool(tc.init_from)),
                      sorted(split.train["img"]), sorted(split.held_out))


def build_parts(cfg: Config, info: DistInfo, steps_per_epoch: int) -> Parts:
    """Model, optimiser, schedule and scaler, built from the seed so two runs start alike; the
    precision is resolved here, once per run (rank 0 prints its warning)."""
    tc = cfg.train
    seed_everything(tc.seed)
    precision = resolve_precision(tc.precision, info.device, what="train.precision")
    if precision.warning and info.is_main:
        print(precision.warning, file=sys.stderr, flush=True)
    model = build_model(cfg.model)
    if tc.init_from:
        model.load_state_dict(load_checkpoint(tc.init_from)["state_dict"])
    model = model.to(info.device)
    if tc.channels_last:  # NHWC convs: faster on CUDA and ~1.25x on a CPU too
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, tc)
    ema = WeightEMA(model, tc.ema) if tc.ema > 0 else None  # copied before compiling: eager
    if tc.compile:  # in place, before DDP wraps it (as PyTorch advises)
        compile_model(model, what="train.compile")
    return Parts(model, optimizer, Schedule(optimizer, tc, steps_per_epoch),
                 torch.amp.GradScaler(info.device.type, enabled=precision.scaler),
                 build_loss(tc), precision, ema)


def inherited(cfg: Config, split: Split, say=print) -> frozenset[str]:
    """The images the starting weights (``train.init_from``) learnt from; refused when that
    model is another architecture or saw any image this run holds out."""
    path = cfg.train.init_from
    if not path:
        return frozenset()
    ckpt = load_checkpoint(path)
    if model_config_of(ckpt, path) != cfg.model:
        raise PipelineError(f"{path}: train.init_from holds another model "
                            f"({model_config_of(ckpt, path).label}); use a checkpoint of "
                            f"{cfg.model.label}")
    seen = trained_on(ckpt)
    warning = check_unseen(seen, split.held_out, f"{path} (train.init_from)",
                           f"the validation images of {split.what}")
    if warning:
        say(f"warning: {warning}")
    return seen or frozenset()


def check_settings(tc: TrainConfig) -> None:
    """The training settings that can be checked without data: loss, crop, counts."""
    build_loss(tc)
    crop_size(tc)
    if min(tc.accumulate, tc.batch_size, tc.epochs) < 1:
        raise PipelineError("train.epochs, train.batch_size and train.accumulate must be >= 1")


def run_epoch(epoch: int, tc: TrainConfig, parts: Parts, loaders: tuple, info: DistInfo,
              show: bool, max_batches: int, probe: budget.Probe | None, planned: int) -> dict:
    """Train one epoch (at most ``max_batches``), validate, add the sums of every rank;
    returns the epoch's row (``planned``: the epochs the run plans, for the progress line)."""
    train_loader, val_loader = loaders
    start = time.perf_counter()
    set_epoch(train_loader, epoch, tc.seed)
    result = train_one_epoch(parts, train_loader, tc, info.device, max_batches=max_batches,
                             desc=f"epoch {epoch + 1}/{planned}", progress=show, probe=probe)
    lr = parts.schedule.lr  # the rate the epoch ended on
    sums = distributed.all_reduce_sum(
        torch.tensor([result.loss_sum, result.images], dtype=torch.float64), info)
    train_loss = float(sums[0] / max(sums[1], 1))
    images_per_s = float(sums[1]) / max(result.seconds, 1e-9)
    val, val_loss = None, None
    if val_loader is not None:
        counts, loss_sum, images = validate_epoch(parts, val_loader, tc, info.device, show)
        counts = distributed.all_reduce_sum(counts, info)
        vsums = distributed.all_reduce_sum(
            torch.tensor([loss_sum, images], dtype=torch.float64), info)
        val, val_loss = count_metrics(counts), float(vsums[0] / max(vsums[1], 1))
        val["images"] = int(counts[5])
    return epoch_row(epoch, train_loss, val, val_loss, lr, images_per_s, result.seconds,
                     time.perf_counter() - start, result.batches)


@dataclass
class Lineage:
    """What every checkpoint of a run records: the images its weights learnt from and the
    run's resume key."""

    trained_on: frozenset[str]
    key: str


def save_epoch(run: RunPaths, cfg: Config, parts: Parts, progress: Progress, improved: bool,
               lineage: Lineage) -> None:
    """``best.pt`` (the evaluated model: the weight average when there is one) when the epoch
    improved, then ``last.pt`` with the raw weights and the state to resume from (in this
    order: after a kill between the two, the resume redoes the epoch)."""
    row = progress.history[-1]
    metrics = {k: v for k, v in row.items() if v is not None}
    stamp = {"metrics": metrics, "epoch": row["epoch"], "trained_on": lineage.trained_on,
             "key": lineage.key}
    if improved:
        save_checkpoint(run.best, parts.evaluated, cfg, **stamp)
    state = train_state(progress, parts.optimizer, parts.schedule, parts.scaler, parts.ema)
    save_checkpoint(run.last, parts.model, cfg, train_state=state, **stamp)


def train(cfg: Config, fold: int, *, folds_path, run: RunPaths | None = None,
          resume: bool = False, progress: bool = True,
          info: DistInfo | None = None) -> TrainRecord:
    """Train ``cfg.model`` on ``fold`` (-1: every image, no validation); returns the training
    record written to ``run.record`` (``run``: default roots, the model's label). ``info``: the
    process group of a caller that trains several runs in it (a group cannot be joined twice
    under torchrun); None: join it here and leave it at the end."""
    run = run or RunPaths(cfg.model.label, fold)
    own = info is None
    info = distributed.setup() if own else info
    reset_peak_memory(info.device)
    try:
        return _train(cfg, fold, info, folds_path=folds_path, run=run, resume=resume,
                      show=progress and info.is_main)
    finally:
        if own:
            distributed.cleanup(info)


@dataclass
class Prepared:
    """What a run trains with: its images, their lineage and key, the loaders and the parts."""

    split: Split
    lineage: Lineage
    loaders: tuple
    n_batches: int
    parts: Parts


def prepare_run(cfg: Config, fold: int, info: DistInfo, folds_path, show: bool, say) -> Prepared:
    """Every check that needs no training first (settings, /dev/shm, the folds, the starting
    weights), then the cache, the loaders and the parts."""
    tc = cfg.train
    check_settings(tc)  # settings first: a typo fails in a second, not after the cache is built
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    distributed.run_on_all_ranks(lambda: shm.check_shm(
        tc, crop_size(tc) or (tc.height, tc.width), distributed.local_world_size(info)), info)
    split = Split(*run_rows(cfg.data, fold, folds_path), f"fold {fold} of {folds_path}")
    lineage = Lineage(inherited(cfg, split, say) | frozenset(split.train["img"]),
                      run_key(cfg, split))
    cache = cache_dir(tc, cfg.data)
    cache_rows(tc, cache, pd.concat([split.train, split.val], ignore_index=True), info, show)
    loaders = make_loaders(tc, cache, split.train, split.val, info)
    if len(loaders[0]) == 0:
        raise PipelineError(f"{folds_path}: fold {fold} leaves no training batch")
    n_batches = min(len(loaders[0]), tc.max_steps or len(loaders[0]))
    parts = build_parts(cfg, info, steps_per_epoch=-(-n_batches // tc.accumulate))
    return Prepared(split, lineage, loaders, n_batches, parts)


def _train(cfg: Config, fold: int, info: DistInfo, *, folds_path, run: RunPaths,
           resume: bool, show: bool) -> TrainRecord:
    tc, main = cfg.train, info.is_main
    say = print if main else (lambda *_, **__: None)
    prep = prepare_run(cfg, fold, info, folds_path, show, say)
    parts = prep.parts
    state = Progress()
    if resume and run.last.is_file():
        state = restore(run.last, prep.lineage.key, parts.model, parts.optimizer,
                        parts.schedule, parts.scaler, parts.ema)
        say(f"resuming {run.last} at epoch {state.next_epoch + 1}/{tc.epochs}", flush=True)
    elif resume:
        say(f"nothing to resume at {run.last}; starting from epoch 1", flush=True)
    params = count_parameters(parts.model)
    if info.enabled:
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        parts.model = nn.parallel.DistributedDataParallel(parts.model, device_ids=device_ids)
    enable_fast_kernels(info.device)
    tracker = Tracker(run.live_dir, enabled=main, use_dvclive=tc.live,
                      params={"fold": fold, **to_dict(cfg)})
    tracker.replay(state.history)
    plan = budget.Budget(tc, prep.n_batches, parts.schedule, state.planned_batches,
                         state.history, say)
    plan.resumed()
    try:
        for epoch in range(state.next_epoch, tc.epochs):
            if plan.epoch_cap(epoch) == 0:
                break
            probe = plan.probe(lambda s: distributed.mean_over_ranks(s, info)) \
                if epoch == 0 else None
            row = run_epoch(epoch, tc, parts, prep.loaders, info, show, plan.epoch_cap(epoch),
                            probe, plan.planned_epochs)
            plan.after_epoch(distributed.mean_over_ranks(row["epoch_seconds"], info),
                             row["train_batches"], epoch)
            state.planned_batches = plan.planned
            improved = state.record(row)
            if main:
                save_epoch(run, cfg, parts, state, improved, prep.lineage)
                tracker.log_epoch(row)
                log_epoch(row, plan.planned_epochs)
            distributed.barrier(info)
    except NonFiniteLoss as exc:
        last = (f"the last good checkpoint is {run.last} (epoch {state.next_epoch})"
                if state.history else "no checkpoint was written yet")
        raise PipelineError(f"{exc}; training stopped, {last}. Lower train.lr, set "
                            "train.grad_clip or train.precision=fp32, then --resume") from None
    finally:
        tracker.close()
    if not state.history:
        raise PipelineError(f"{run.last}: no epoch was trained (train.epochs={tc.epochs})")
    record = training_record(cfg.model.label, tc, fold, state.history, state.best_epoch,
                             device=str(info.device), precision=parts.precision,
                             peak_memory_mib=peak_memory_mib(info.device), params=params,
                             batches_per_epoch=prep.n_batches)
    if main:
        write_record(run.record, record)
    return record
