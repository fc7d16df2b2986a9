"""One training epoch and one validation pass.

Both loops return sums (loss x images, confusion counts) so that DDP ranks can add them before
anything is divided.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pipeline import faults
from pipeline.data.transforms import normalize_batch
from pipeline.device import Precision, autocast
from pipeline.errors import PipelineError
from pipeline.metrics import confusion_counts
from pipeline.training.schedule import Schedule

WORKER_ERROR_PREFIX = "pipeline.errors.PipelineError: "


@contextlib.contextmanager
def clean_worker_errors():
    """A ``PipelineError`` raised inside a DataLoader worker arrives wrapped in a traceback;
    re-raise it as the one line it was."""
    try:
        yield
    except PipelineError as exc:
        lines = [ln for ln in str(exc).splitlines() if ln.startswith(WORKER_ERROR_PREFIX)]
        if not lines:
            raise
        raise PipelineError(lines[-1][len(WORKER_ERROR_PREFIX):]) from None


def to_input(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 N x H x W x 3 RGB from the workers -> the model's float32 N x 3 x H x W input,
    normalised on ``device`` (:func:`~pipeline.data.transforms.normalize_batch`, the same
    float32 arithmetic as the per-image :func:`~pipeline.data.transforms.normalize`)."""
    x = normalize_batch(images.to(device, non_blocking=True))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=layout)


def to_target(masks: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 N x H x W masks in {0, 1} -> float32 N x 1 x H x W on ``device``."""
    return masks.to(device, non_blocking=True)[:, None].float()


class NonFiniteLoss(PipelineError):
    """The loss became NaN or infinite: the weights would turn to garbage from here on."""


@dataclass
class EpochResult:
    loss_sum: float  # sum over images of the per-batch mean loss x batch size
    images: int
    seconds: float
    batches: int = 0


def train_one_epoch(
    model: nn.Module,
    loader,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    scaler: torch.amp.GradScaler,
    *,
    device: torch.device,
    precision: Precision,
    accumulate: int = 1,
    grad_clip: float = 0.0,
    max_steps: int = 0,
    channels_last: bool = False,
    desc: str = "train",
    progress: bool = True,
    probe_steps: int = 0,
    probe_skip: int = 0,
    on_probe: Callable[[float], int | None] | None = None,
    on_step: Callable[[], None] | None = None,
) -> EpochResult:
    """One pass over ``loader`` (at most ``max_steps`` batches, 0: all): gradients accumulated
    over ``accumulate`` batches, clipped to ``grad_clip`` (0: off), then one optimiser step and
    one schedule step.

    ``on_probe(seconds_per_batch)`` is called once, after ``probe_steps`` batches, with the
    pace of the batches after the first ``probe_skip``; it may return how many batches this
    epoch should train instead (what a time budget allows).
    """
    model.train()
    n_batches = len(loader) if not max_steps else min(len(loader), max_steps)
    loss_sum, images, start = 0.0, 0, time.perf_counter()
    probe_skip = min(probe_skip, max(probe_steps - 1, 0))
    probe_start, batches = start, 0
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(total=n_batches, desc=desc, disable=not progress, leave=False, unit="batch")
    with clean_worker_errors():
        for i, (x, y, *_) in enumerate(loader):
            if i >= n_batches:
                break
            x, y = to_input(x, device, channels_last), to_target(y, device)
            stepping = (i + 1) % accumulate == 0 or i + 1 == n_batches
            # DDP: skip the gradient all-reduce on batches that only accumulate
            sync = contextlib.nullcontext() if stepping or not hasattr(model, "no_sync") \
                else model.no_sync()
            with sync:
                with autocast(precision, device):
                    logits = model(x)
                loss = loss_fn(logits.float(), y)
                if not torch.isfinite(loss):
                    raise NonFiniteLoss(f"{desc}: the loss is {float(loss.detach())} at batch {i + 1}")
                scaler.scale(loss / accumulate).backward()
            if stepping:
                if grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                schedule.step_batch()
                if on_step is not None:
                    on_step()
                faults.reached("train.step")
            batches += 1
            batch_loss = float(loss.detach())
            loss_sum += batch_loss * x.shape[0]
            images += x.shape[0]
            bar.update()
            bar.set_postfix(loss=f"{batch_loss:.4f}",
                            img_s=f"{images / (time.perf_counter() - start):.1f}")
            if on_probe is not None and i + 1 == probe_skip:
                probe_start = time.perf_counter()
            if on_probe is not None and i + 1 == probe_steps < n_batches:
                cap = on_probe((time.perf_counter() - probe_start) / (probe_steps - probe_skip))
                if cap is not None:
                    n_batches = bar.total = min(n_batches, max(cap, probe_steps))
    bar.close()
    return EpochResult(loss_sum, images, time.perf_counter() - start, batches)


@torch.no_grad()
def validate_epoch(
    model: nn.Module,
    loader,
    loss_fn: nn.Module,
    *,
    device: torch.device,
    precision: Precision,
    channels_last: bool = False,
    full_res: bool = False,
    progress: bool = True,
) -> tuple[torch.Tensor, float, int]:
    """Summed ``confusion_counts`` (tp, fp, fn, tn, dice_sum, n), loss sum and image count.

    A pixel is car where its logit is > 0 (probability > 0.5). With ``full_res`` the loader
    yields the source-resolution mask as a third item and logits are upsampled to it
    (bilinear) before thresholding: the competition's 1918x1280 metric.
    """
    model.eval()
    counts = torch.zeros(6, dtype=torch.float64, device=device)
    loss_sum, images = 0.0, 0
    bar = tqdm(total=len(loader), desc="val", disable=not progress, leave=False, unit="batch")
    with clean_worker_errors():
        for batch in loader:
            x, y = to_input(batch[0], device, channels_last), to_target(batch[1], device)
            with autocast(precision, device):
                logits = model(x)
            logits = logits.float()
            loss_sum += float(loss_fn(logits, y)) * x.shape[0]
            images += x.shape[0]
            if full_res:
                target = batch[2].to(device)
                logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear",
                                       align_corners=False)
            else:
                target = y
            counts += confusion_counts(logits > 0, target > 0.5)
            bar.update()
    bar.close()
    return counts, loss_sum, images
