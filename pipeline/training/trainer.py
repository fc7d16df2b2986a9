"""Train one model on one fold: ``train(cfg, fold, run=RunPaths(...))`` (what
``python -m pipeline.train`` calls, alone or as one rank under torchrun).

Writes the run's best and last checkpoints, its training record and its DVCLive folder
(:mod:`pipeline.runs`). ``resume=True`` continues from ``last.pt`` and ends in the same state as
an uninterrupted run: the shuffle order is seeded per epoch and the augmentation per (epoch,
image), so neither depends on what ran before.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from pipeline import device, distributed
from pipeline.config import Config, TrainConfig, to_dict
from pipeline.data.dataset import crop_size
from pipeline.data.splits import split_id
from pipeline.device import Precision, peak_memory_mib, reset_peak_memory, resolve_precision
from pipeline.distributed import DistInfo
from pipeline.errors import PipelineError
from pipeline.losses import build_loss
from pipeline.metrics import count_metrics
from pipeline.models.checkpoint import load_checkpoint, model_config_of, save_checkpoint, unwrap
from pipeline.models.factory import build_model, count_parameters
from pipeline.records import TrainRecord, write_record
from pipeline.runs import RunPaths
from pipeline.training import budget, shm
from pipeline.training.ema import WeightEMA
from pipeline.training.loaders import cache_rows, make_loaders, run_rows, set_epoch
from pipeline.training.loop import NonFiniteLoss, train_one_epoch, validate_epoch
from pipeline.training.report import epoch_row, log_epoch, training_record
from pipeline.training.schedule import Schedule, build_optimizer
from pipeline.training.state import Progress, restore, seed_everything, train_state
from pipeline.training.tracking import Tracker


@dataclass
class Parts:
    """Everything one optimisation step touches."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    precision: Precision
    channels_last: bool
    ema: WeightEMA | None = None  # train.ema: the average that is validated and kept

    @property
    def evaluated(self) -> nn.Module:
        """The model that is validated and saved as ``best.pt``: the average when there is
        one. Never the DDP wrapper: a forward through it is a collective (its buffer
        broadcast), and a rank with fewer validation batches would leave the others waiting."""
        return self.ema.module if self.ema is not None else unwrap(self.model)


def build_parts(cfg: Config, info: DistInfo, steps_per_epoch: int) -> Parts:
    """Model, optimiser, schedule and scaler, built from the seed so two runs start alike."""
    tc = cfg.train
    seed_everything(tc.seed)
    precision = resolve_precision(tc.precision, info.device, what="train.precision",
                                  warn=None if info.is_main else _silent)
    channels_last = tc.channels_last  # NHWC convs: faster on CUDA and ~1.25x on this CPU too
    model = build_model(cfg.model)
    if tc.init_from:
        init_weights(model, tc.init_from, cfg)
    if tc.sync_bn and info.enabled:  # one process: BatchNorm already sees the whole batch
        model = distributed.sync_batchnorm(model)
    model = model.to(info.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, tc)
    ema = WeightEMA(model, tc.ema) if tc.ema > 0 else None  # copied before compiling: eager
    if tc.compile:  # in place, before DDP wraps it (as PyTorch advises)
        device.compile_model(model)
    return Parts(model, optimizer, Schedule(optimizer, tc, steps_per_epoch),
                 torch.amp.GradScaler(info.device.type, enabled=precision.scaler),
                 build_loss(tc), precision, channels_last, ema)


def init_weights(model: nn.Module, path: str, cfg: Config) -> None:
    """Start from the weights of checkpoint ``path`` (``train.init_from``): the same
    architecture, trained at any input size (a fully convolutional net takes any size), so a
    run can continue at a larger size for its last epochs. The optimiser starts afresh."""
    ckpt = load_checkpoint(path)
    if model_config_of(ckpt, path) != cfg.model:
        raise PipelineError(f"{path}: train.init_from holds another model "
                            f"({model_config_of(ckpt, path).label}); use a checkpoint of "
                            f"{cfg.model.label}")
    model.load_state_dict(ckpt["state_dict"])


def check_settings(tc: TrainConfig) -> None:
    """The training settings that can be checked without data: loss, crop, counts."""
    build_loss(tc)
    crop_size(tc)
    if min(tc.accumulate, tc.batch_size, tc.epochs) < 1:
        raise PipelineError("train.epochs, train.batch_size and train.accumulate must be >= 1")


def _silent(_: str) -> None:
    """Warnings are printed by rank 0 only."""


def run_epoch(epoch: int, cfg: Config, parts: Parts, train_loader, val_loader,
              info: DistInfo, show: bool, max_batches: int = 0, on_probe=None,
              planned: int = 0) -> dict:
    """Train one epoch (at most ``max_batches``, 0: all), validate, add the sums of every
    rank; returns the epoch's row. ``on_probe``: see
    :func:`~pipeline.training.loop.train_one_epoch`; ``planned``: the epochs the run plans
    (for the progress line; default ``train.epochs``)."""
    planned = planned or cfg.train.epochs
    tc, p, start = cfg.train, parts, time.perf_counter()
    set_epoch(train_loader, epoch, tc.seed)
    result = train_one_epoch(
        p.model, train_loader, p.loss_fn, p.optimizer, p.schedule, p.scaler,
        device=info.device, precision=p.precision, accumulate=tc.accumulate,
        grad_clip=tc.grad_clip, max_steps=max_batches or tc.max_steps,
        channels_last=p.channels_last, desc=f"epoch {epoch + 1}/{planned}", progress=show,
        probe_steps=budget.PROBE_STEPS if on_probe else 0, probe_skip=budget.PROBE_SKIP,
        on_probe=on_probe,
        on_step=(lambda: p.ema.update(unwrap(p.model))) if p.ema is not None else None,
    )
    lr = p.schedule.lr  # the rate the epoch ended on
    sums = distributed.all_reduce_sum(
        torch.tensor([result.loss_sum, result.images], dtype=torch.float64), info)
    train_loss = float(sums[0] / max(sums[1], 1))
    images_per_s = float(sums[1]) / max(result.seconds, 1e-9)
    val, val_loss = None, None
    if val_loader is not None:
        counts, loss_sum, images = validate_epoch(
            p.evaluated, val_loader, p.loss_fn, device=info.device, precision=p.precision,
            channels_last=p.channels_last, full_res=tc.full_res_val, progress=show)
        counts = distributed.all_reduce_sum(counts, info)
        vsums = distributed.all_reduce_sum(
            torch.tensor([loss_sum, images], dtype=torch.float64), info)
        val, val_loss = count_metrics(counts), float(vsums[0] / max(vsums[1], 1))
        val["images"] = int(counts[5])
    p.schedule.step_epoch(val["dice"] if val else -train_loss)
    return epoch_row(epoch, train_loss, val, val_loss, lr, images_per_s, result.seconds,
                     time.perf_counter() - start, result.batches)


def save_epoch(run: RunPaths, cfg: Config, parts: Parts, progress: Progress,
               improved: bool, split: dict | None) -> None:
    """``best.pt`` (the evaluated model: the weight average when there is one) when the epoch
    improved, then ``last.pt`` with the raw weights and the state to resume from (in this
    order: after a kill between the two, the resume redoes the epoch). ``split`` names the
    images the model must not be scored on."""
    row = progress.history[-1]
    metrics = {k: v for k, v in row.items() if v is not None}
    if improved:
        save_checkpoint(run.best, parts.evaluated, cfg, metrics=metrics, epoch=row["epoch"],
                        split=split)
    state = train_state(progress, parts.optimizer, parts.schedule, parts.scaler, parts.ema)
    save_checkpoint(run.last, parts.model, cfg, metrics=metrics, epoch=row["epoch"],
                    train_state=state, split=split)


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


def _train(cfg: Config, fold: int, info: DistInfo, *, folds_path, run: RunPaths,
           resume: bool, show: bool) -> TrainRecord:
    tc, main = cfg.train, info.is_main
    # Settings first: a typo fails in a second, not after the cache is built.
    check_settings(tc)
    resolve_precision(tc.precision, info.device, what="train.precision", warn=_silent)
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    if tc.sync_bn:
        distributed.check_sync_bn(info)
    distributed.run_on_all_ranks(lambda: shm.check_shm(
        tc, crop_size(tc) or (tc.height, tc.width), distributed.local_world_size(info)), info)

    train_rows, val_rows = run_rows(cfg, fold, folds_path)
    split = split_id(fold, folds_path) if fold >= 0 else None
    cache_rows(cfg, pd.concat([train_rows, val_rows], ignore_index=True), info, show)
    train_loader, val_loader = make_loaders(cfg, train_rows, val_rows, info)
    if len(train_loader) == 0:
        raise PipelineError(f"{folds_path}: fold {fold} leaves no training batch")
    n_batches = min(len(train_loader), tc.max_steps or len(train_loader))
    parts = build_parts(cfg, info, steps_per_epoch=-(-n_batches // tc.accumulate))

    state = Progress()
    if resume and run.last.is_file():
        state = restore(run.last, cfg, parts.model, parts.optimizer, parts.schedule,
                        parts.scaler, parts.ema)
        if main:
            print(f"resuming {run.last} at epoch {state.next_epoch + 1}/{tc.epochs}",
                  flush=True)
    elif resume and main:
        print(f"nothing to resume at {run.last}; starting from epoch 1", flush=True)
    params = count_parameters(parts.model)
    if info.enabled:
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        parts.model = nn.parallel.DistributedDataParallel(parts.model, device_ids=device_ids)

    device.enable_fast_kernels(info.device)
    tracker = Tracker(run.live_dir, enabled=main, use_dvclive=tc.live,
                      params={"fold": fold, **to_dict(cfg)})
    tracker.replay(state.history)
    # The run as a number of batches: every epoch in full, or what a time budget planned (kept
    # in last.pt: a resume continues the same plan and learning-rate curve).
    total = state.planned_batches or tc.epochs * n_batches
    if total < tc.epochs * n_batches:
        parts.schedule.shorten(budget.optimizer_steps(total, tc.accumulate),
                               budget.optimizer_steps(n_batches, tc.accumulate), tc)
    spent = sum(r["epoch_seconds"] for r in state.history)  # budget already used before a resume
    done = sum(r.get("train_batches", n_batches) for r in state.history)
    budget_s = tc.time_budget_min * 60

    def replan(new_total: int, why: str) -> None:
        nonlocal total
        total = state.planned_batches = new_total
        parts.schedule.shorten(budget.optimizer_steps(total, tc.accumulate),
                               budget.optimizer_steps(n_batches, tc.accumulate), tc)
        if main:
            print(f"time budget {tc.time_budget_min:g} min ({why}): planning "
                  f"{budget.describe(total, n_batches, tc.epochs)}", flush=True)

    def on_probe(seconds_per_batch: float) -> int:
        # The first plan, from the pace of the first batches; the ranks agree on the mean.
        pace = distributed.mean_over_ranks(seconds_per_batch, info)
        replan(budget.plan_batches(budget_s, pace, total, reserve=budget.VAL_SHARE),
               f"{pace:.2f} s/batch")
        return budget.epoch_batches(total, n_batches, 0)

    if budget_s > 0 and done:  # resumed: shorten the plan if the pace so far needs it
        fits = budget.plan_batches(budget_s, spent / done, total, spent_s=spent, done=done)
        if fits < total:
            replan(fits, "resumed")
    try:
        for epoch in range(state.next_epoch, tc.epochs):
            cap = budget.epoch_batches(total, n_batches, epoch)
            if state.stopped or cap == 0:
                break
            probe = on_probe if budget_s > 0 and epoch == 0 else None
            row = run_epoch(epoch, cfg, parts, train_loader, val_loader, info, show,
                            max_batches=cap, on_probe=probe,
                            planned=math.ceil(total / n_batches))
            if budget_s > 0:
                # Check the plan against the pace so far, validation included; the ranks
                # agree on the mean epoch time. Shorten only: never raise the rate again.
                spent += distributed.mean_over_ranks(row["epoch_seconds"], info)
                done += row["train_batches"]
                fits = budget.plan_batches(budget_s, spent / done, total, spent_s=spent,
                                           done=done)
                if fits < total:
                    replan(fits, f"after epoch {epoch + 1}")
            improved = state.record(row, tc.patience)
            if main:
                save_epoch(run, cfg, parts, state, improved, split)
                tracker.log_epoch(row)
                log_epoch(row, math.ceil(total / n_batches))
                if state.stopped:
                    print(f"early stop: no val_dice gain for {tc.patience} epochs", flush=True)
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
    record = training_record(cfg, fold, state.history, state.best_epoch,
                             device=str(info.device), precision=parts.precision,
                             peak_memory_mib=peak_memory_mib(info.device), params=params,
                             batches_per_epoch=n_batches)
    if main:
        write_record(run.record, record)
    return record
