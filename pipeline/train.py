"""Training stage: ``python -m pipeline.train --fold K`` (or ``torchrun ... -m pipeline.train``).

Trains one model on one fold of ``folds/folds.csv`` and writes

    checkpoints/<model>/fold<K>/best.pt   best validation Dice (fold -1: the last epoch)
    checkpoints/<model>/fold<K>/last.pt   last epoch + optimiser/scheduler/scaler/RNG state
    metrics/<model>/fold<K>.json          best epoch's metrics, speed and settings
    dvclive/<model>/fold<K>/              per-epoch metrics (DVCLive) and curves.png

``--resume`` continues from ``last.pt`` and ends in the same state as an uninterrupted run:
the shuffle order is seeded per epoch and the augmentation per (epoch, image), so neither
depends on what ran before.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pandas as pd
import torch
import typer
from torch import nn

from pipeline.atomic import write_json
from pipeline.cli import ConfigOption, ModelOption, OverridesArgument
from pipeline.config import Config, cli_config, to_dict
from pipeline.errors import PipelineError, one_line_errors
from pipeline.losses import build_loss
from pipeline.metrics import summarize
from pipeline.models.checkpoint import save_checkpoint
from pipeline.training import budget, distributed
from pipeline.training.data import cache_rows, fold_rows, make_loaders, set_epoch
from pipeline.training.distributed import DistInfo
from pipeline.training.loop import Precision, evaluate, resolve_precision, train_one_epoch
from pipeline.training.schedule import Schedule, build_optimizer
from pipeline.training.state import Progress, restore, seed_everything, train_state
from pipeline.training.tracking import Tracker

# --------------------------------------------------------------------------- paths


def run_paths(cfg: Config, fold: int, checkpoints: str | Path = "checkpoints",
              metrics: str | Path = "metrics", live: str | Path = "dvclive") -> dict[str, Path]:
    """The default output locations for one (model, fold): out_dir, metrics_path, live_dir."""
    label = cfg.model.label
    return {
        "out_dir": Path(checkpoints) / label / f"fold{fold}",
        "metrics_path": Path(metrics) / label / f"fold{fold}.json",
        "live_dir": Path(live) / label / f"fold{fold}",
    }


# --------------------------------------------------------------------------- reporting


def epoch_row(epoch: int, train_loss: float, val: dict | None, val_loss: float | None,
              lr: float, images_per_s: float, train_seconds: float,
              epoch_seconds: float, train_batches: int = 0) -> dict:
    """One epoch's metrics: what the summary line, DVCLive and the history show."""
    row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": lr,
           "images_per_s": images_per_s, "train_seconds": train_seconds,
           "epoch_seconds": epoch_seconds, "train_batches": train_batches}
    for key in ("dice", "accuracy", "precision", "recall", "images"):
        row[f"val_{key}"] = None if val is None else val[key]
    return row


def log_epoch(row: dict, epochs: int) -> None:
    """The one summary line per epoch."""
    parts = [f"epoch {row['epoch'] + 1}/{epochs}", f"loss {row['train_loss']:.4f}"]
    if row["val_dice"] is not None:
        parts += [f"val_loss {row['val_loss']:.4f}", f"val_dice {row['val_dice']:.4f}",
                  f"acc {row['val_accuracy']:.4f}", f"prec {row['val_precision']:.4f}",
                  f"rec {row['val_recall']:.4f}"]
    parts += [f"lr {row['lr']:.2e}", f"{row['images_per_s']:.1f} img/s",
              f"{row['epoch_seconds']:.0f}s"]
    print(" ".join(parts), flush=True)


def final_metrics(cfg: Config, fold: int, history: list[dict], best_epoch: int,
                  device: torch.device, precision: Precision) -> dict:
    """The best epoch's validation metrics; ``images_per_s`` is training throughput and
    ``seconds`` the wall time of all epochs (training + validation, across resumes; the
    one-off cache build excluded)."""
    best = next(r for r in history if r["epoch"] == best_epoch)
    train_images = sum(r["images_per_s"] * r["train_seconds"] for r in history)
    train_seconds = sum(r["train_seconds"] for r in history)
    return {
        "model": cfg.model.label,
        "fold": fold,
        "best_epoch": best_epoch,
        "val_dice": best["val_dice"],
        "val_accuracy": best["val_accuracy"],
        "val_precision": best["val_precision"],
        "val_recall": best["val_recall"],
        "val_images": best["val_images"],
        "train_loss": best["train_loss"],
        "epochs": len(history),
        "images_per_s": train_images / train_seconds if train_seconds else 0.0,
        "seconds": sum(r["epoch_seconds"] for r in history),
        "height": cfg.train.height,
        "width": cfg.train.width,
        "device": str(device),
        "precision": precision.name,
        "full_res_val": cfg.train.full_res_val,
        "peak_memory_mib": peak_memory_mib(device),
    }


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh peak for :func:`peak_memory_mib`, so that a process training several
    models (the benchmark) reports each one's own peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: "5" resets the peak resident set size (VmHWM) to the current one
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory since :func:`reset_peak_memory`: the CUDA allocator's peak on a GPU, else
    the peak resident set size (what the benchmark table reports)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --------------------------------------------------------------------------- core


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


def build_parts(cfg: Config, info: DistInfo, steps_per_epoch: int) -> Parts:
    """Model, optimiser, schedule and scaler, built from the seed so two runs start alike."""
    from pipeline.models.factory import build_model

    tc = cfg.train
    seed_everything(tc.seed)
    precision = resolve_precision(tc.precision, info.device)
    channels_last = tc.channels_last  # NHWC convs: faster on CUDA and ~1.25x on this CPU too
    model = build_model(cfg.model).to(info.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, tc)
    return Parts(model, optimizer, Schedule(optimizer, tc, steps_per_epoch),
                 torch.amp.GradScaler(info.device.type, enabled=precision.scaler),
                 build_loss(tc), precision, channels_last)


def run_epoch(epoch: int, cfg: Config, parts: Parts, train_loader, val_loader,
              info: DistInfo, show: bool, max_batches: int = 0, on_probe=None) -> dict:
    """Train one epoch (at most ``max_batches``, 0: all), validate, add the sums of every
    rank; returns the epoch's row. ``on_probe``: see
    :func:`~pipeline.training.loop.train_one_epoch`."""
    tc, p, start = cfg.train, parts, time.perf_counter()
    set_epoch(train_loader, epoch, tc.seed)
    result = train_one_epoch(
        p.model, train_loader, p.loss_fn, p.optimizer, p.schedule, p.scaler,
        device=info.device, precision=p.precision, accumulate=tc.accumulate,
        grad_clip=tc.grad_clip, max_steps=max_batches or tc.max_steps,
        channels_last=p.channels_last, desc=f"epoch {epoch + 1}/{tc.epochs}", progress=show,
        probe_steps=budget.PROBE_STEPS if on_probe else 0, probe_skip=budget.PROBE_SKIP,
        on_probe=on_probe,
    )
    lr = p.schedule.lr  # the rate the epoch ended on
    sums = distributed.all_reduce_sum(
        torch.tensor([result.loss_sum, result.images], dtype=torch.float64), info)
    train_loss = float(sums[0] / max(sums[1], 1))
    images_per_s = float(sums[1]) / max(result.seconds, 1e-9)
    val, val_loss = None, None
    if val_loader is not None:
        counts, loss_sum, images = evaluate(
            p.model, val_loader, p.loss_fn, device=info.device, precision=p.precision,
            channels_last=p.channels_last, full_res=tc.full_res_val, progress=show)
        counts = distributed.all_reduce_sum(counts, info)
        vsums = distributed.all_reduce_sum(
            torch.tensor([loss_sum, images], dtype=torch.float64), info)
        val, val_loss = summarize(counts), float(vsums[0] / max(vsums[1], 1))
        val["images"] = int(counts[5])
    p.schedule.step_epoch(val["dice"] if val else -train_loss)
    return epoch_row(epoch, train_loss, val, val_loss, lr, images_per_s, result.seconds,
                     time.perf_counter() - start, result.batches)


def save_epoch(out_dir: Path, cfg: Config, parts: Parts, progress: Progress,
               improved: bool) -> None:
    """``best.pt`` when the epoch improved, then ``last.pt`` with the state to resume from
    (in this order: after a kill between the two, the resume redoes the epoch)."""
    row = progress.history[-1]
    metrics = {k: v for k, v in row.items() if v is not None}
    if improved:
        save_checkpoint(out_dir / "best.pt", parts.model, cfg, metrics=metrics,
                        epoch=row["epoch"])
    state = train_state(progress, parts.optimizer, parts.schedule, parts.scaler)
    save_checkpoint(out_dir / "last.pt", parts.model, cfg, metrics=metrics, epoch=row["epoch"],
                    train_state=state)


def train(
    cfg: Config,
    fold: int,
    *,
    folds_path: str | Path = "folds/folds.csv",
    out_dir: str | Path | None = None,
    metrics_path: str | Path | None = None,
    live_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    time_budget_s: float | None = None,
) -> dict:
    """Train ``cfg.model`` on ``fold`` (-1: every image, no validation); returns the metrics
    written to ``metrics_path``. Works alone or as one rank under torchrun.

    ``time_budget_s`` (the benchmark's equal budget) overrides ``train.time_budget_min``.
    """
    if time_budget_s:
        cfg = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, time_budget_min=time_budget_s / 60))
    defaults = run_paths(cfg, fold)
    info = distributed.setup()
    reset_peak_memory(info.device)
    try:
        return _train(cfg, fold, info, folds_path=Path(folds_path),
                      out_dir=Path(out_dir or defaults["out_dir"]),
                      metrics_path=Path(metrics_path or defaults["metrics_path"]),
                      live_dir=Path(live_dir or defaults["live_dir"]),
                      resume=resume, show=progress and info.is_main)
    finally:
        distributed.cleanup(info)


def _train(cfg: Config, fold: int, info: DistInfo, *, folds_path: Path, out_dir: Path,
           metrics_path: Path, live_dir: Path, resume: bool, show: bool) -> dict:
    tc, main = cfg.train, info.is_main
    # Settings first: a typo fails in a second, not after the cache is built.
    build_loss(tc)
    resolve_precision(tc.precision, info.device)
    if min(tc.accumulate, tc.batch_size, tc.epochs) < 1:
        raise PipelineError("train.epochs, train.batch_size and train.accumulate must be >= 1")
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)

    train_rows, val_rows = fold_rows(cfg, fold, folds_path)
    cache_rows(cfg, pd.concat([train_rows, val_rows], ignore_index=True), info, show)
    train_loader, val_loader = make_loaders(cfg, train_rows, val_rows, info)
    if len(train_loader) == 0:
        raise PipelineError(f"{folds_path}: fold {fold} leaves no training batch")
    n_batches = min(len(train_loader), tc.max_steps or len(train_loader))
    parts = build_parts(cfg, info, steps_per_epoch=-(-n_batches // tc.accumulate))

    state = Progress()
    last_path = out_dir / "last.pt"
    if resume and last_path.is_file():
        state = restore(last_path, cfg, parts.model, parts.optimizer, parts.schedule,
                        parts.scaler)
        if main:
            print(f"resuming {last_path} at epoch {state.next_epoch + 1}/{tc.epochs}",
                  flush=True)
    elif resume and main:
        print(f"nothing to resume at {last_path}; starting from epoch 1", flush=True)
    if info.enabled:
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        parts.model = nn.parallel.DistributedDataParallel(parts.model, device_ids=device_ids)

    tracker = Tracker(live_dir, enabled=main, use_dvclive=tc.live,
                      params={"fold": fold, **to_dict(cfg)})
    tracker.replay(state.history)
    # The run as a number of batches: every epoch in full, or what a time budget allows.
    total = tc.epochs * n_batches
    spent = sum(r["epoch_seconds"] for r in state.history)  # budget already used before a resume
    done = sum(r.get("train_batches", n_batches) for r in state.history)
    budget_s = tc.time_budget_min * 60

    def replan(new_total: int, why: str) -> None:
        nonlocal total
        total = new_total
        parts.schedule.shorten(budget.optimizer_steps(total, tc.accumulate),
                               budget.optimizer_steps(n_batches, tc.accumulate), tc)
        if main:
            print(f"time budget {tc.time_budget_min:g} min ({why}): planning "
                  f"{budget.describe(total, n_batches, tc.epochs)}", flush=True)

    def on_probe(seconds_per_batch: float) -> int:
        # The first plan, from the pace of the first batches; the ranks agree on the mean.
        pace = float(distributed.all_reduce_sum(
            torch.tensor([seconds_per_batch], dtype=torch.float64), info)[0]) / info.world_size
        replan(budget.plan_batches(budget_s, pace, total, reserve=budget.VAL_SHARE),
               f"{pace:.2f} s/batch")
        return budget.epoch_batches(total, n_batches, 0)

    if budget_s > 0 and done:  # resumed: plan the rest from the pace so far
        replan(budget.plan_batches(budget_s, spent / done, total, spent_s=spent, done=done),
               "resumed")
    try:
        for epoch in range(state.next_epoch, tc.epochs):
            cap = budget.epoch_batches(total, n_batches, epoch)
            if state.stopped or cap == 0:
                break
            probe = on_probe if budget_s > 0 and epoch == 0 else None
            row = run_epoch(epoch, cfg, parts, train_loader, val_loader, info, show,
                            max_batches=cap, on_probe=probe)
            if budget_s > 0:
                # Check the plan against the pace so far, validation included; the ranks
                # agree on the mean epoch time. Shorten only: never raise the rate again.
                spent += float(distributed.all_reduce_sum(
                    torch.tensor([row["epoch_seconds"]], dtype=torch.float64), info)[0]
                ) / info.world_size
                done += row["train_batches"]
                fits = budget.plan_batches(budget_s, spent / done, total, spent_s=spent,
                                           done=done)
                if fits < total:
                    replan(fits, f"after epoch {epoch + 1}")
            improved = state.record(row, tc.patience)
            if main:
                save_epoch(out_dir, cfg, parts, state, improved)
                tracker.log_epoch(row)
                log_epoch(row, tc.epochs)
                if state.stopped:
                    print(f"early stop: no val_dice gain for {tc.patience} epochs", flush=True)
            distributed.barrier(info)
    finally:
        tracker.close()

    if not state.history:
        raise PipelineError(f"{last_path}: no epoch was trained (train.epochs={tc.epochs})")
    metrics = final_metrics(cfg, fold, state.history, state.best_epoch, info.device,
                            parts.precision)
    if main:
        write_json(metrics_path, metrics)
    return metrics


# --------------------------------------------------------------------------- CLI

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@app.command()
@one_line_errors
def main(
    fold: Annotated[int, typer.Option(help="Fold to validate on; -1 trains on every image.")] = 0,
    config: ConfigOption = None,
    model: ModelOption = None,
    folds: Annotated[Path, typer.Option(help="Folds CSV.")] = Path("folds/folds.csv"),
    checkpoints: Annotated[Path, typer.Option(help="Checkpoint root.")] = Path("checkpoints"),
    metrics: Annotated[Path, typer.Option(help="Metrics root.")] = Path("metrics"),
    live: Annotated[Path, typer.Option(help="DVCLive root.")] = Path("dvclive"),
    resume: Annotated[bool, typer.Option(help="Continue from last.pt.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    overrides: OverridesArgument = None,
) -> None:
    """Train one model on one fold."""
    cfg = cli_config(config, model, overrides)
    out = run_paths(cfg, fold, checkpoints, metrics, live)
    result = train(cfg, fold, folds_path=folds, resume=resume, progress=progress, **out)
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {k: result[k] for k in ("model", "fold", "best_epoch", "val_dice", "epochs")}
        typer.echo(f"wrote {out['metrics_path']}: {json.dumps(summary)}")


if __name__ == "__main__":
    app()
