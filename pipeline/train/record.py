"""What training reports: one row of metrics per epoch, its summary line, and the training
record of the run (:class:`pipeline.records.TrainRecord`)."""

from __future__ import annotations

from pipeline.config import TrainConfig
from pipeline.device import Precision
from pipeline.records import TrainRecord


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


def training_record(label: str, tc: TrainConfig, fold: int, history: list[dict],
                    best_epoch: int, *,
                    device: str, precision: Precision, peak_memory_mib: float | None,
                    params: int, batches_per_epoch: int) -> TrainRecord:
    """The best epoch's validation metrics; ``images_per_s`` is training throughput and
    ``seconds`` the wall time of all epochs (training + validation, across resumes; the
    one-off cache build excluded)."""
    best = next(r for r in history if r["epoch"] == best_epoch)
    train_images = sum(r["images_per_s"] * r["train_seconds"] for r in history)
    train_seconds = sum(r["train_seconds"] for r in history)
    return TrainRecord(
        model=label,
        fold=fold,
        best_epoch=best_epoch,
        val_dice=best["val_dice"],
        val_accuracy=best["val_accuracy"],
        val_precision=best["val_precision"],
        val_recall=best["val_recall"],
        val_images=best["val_images"],
        train_loss=best["train_loss"],
        epochs=len(history),
        images_per_s=train_images / train_seconds if train_seconds else 0.0,
        seconds=sum(r["epoch_seconds"] for r in history),
        height=tc.height,
        width=tc.width,
        device=device,
        precision=precision.name,
        full_res_val=tc.full_res_val,
        peak_memory_mib=peak_memory_mib,
        params=params,
        train_batches=sum(r.get("train_batches") or batches_per_epoch for r in history),
        batches_per_epoch=batches_per_epoch,
    )
