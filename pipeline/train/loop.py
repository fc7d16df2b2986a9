"""One training epoch and one validation pass over the :class:`Parts` of a run.

Both loops return sums (loss x images, confusion counts) so that DDP ranks can add them before
anything is divided.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pipeline import faults
from pipeline.config import TrainConfig
from pipeline.data.transforms import normalize_batch
from pipeline.device import Precision, autocast
from pipeline.dice import confusion_counts
from pipeline.errors import PipelineError
from pipeline.models.checkpoint import unwrap
from pipeline.schedule import Schedule
from pipeline.train.budget import Probe

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
class Parts:
    """Everything one optimisation step touches, built once per run
    (:func:`pipeline.train.trainer.build_parts`)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    precision: Precision  # resolved for the run's device
    ema: object | None = None  # train.ema: the WeightEMA that is validated and kept

    @property
    def evaluated(self) -> nn.Module:
        """The model that is validated and saved as ``best.pt``: the average when there is
        one. Never the DDP wrapper: a forward through it is a collective (its buffer
        broadcast), and a rank with fewer validation batches would leave the others waiting."""
        return self.ema.module if self.ema is not None else unwrap(self.model)


@dataclass
class EpochResult:
    loss_sum: float  # sum over images of the per-batch mean loss x batch size
    images: int
    seconds: float
    batches: int = 0


def train_one_epoch(parts: Parts, loader, tc: TrainConfig, device: torch.device, *,
                    max_batches: int = 0, desc: str = "train", progress: bool = True,
                    probe: Probe | None = None) -> EpochResult:
    """One pass over ``loader`` (at most ``max_batches`` batches, 0: all): gradients
    accumulated over ``train.accumulate`` batches, clipped to ``train.grad_clip`` (0: off),
    then one optimiser step, one schedule step and one update of the weight average.

    ``probe`` times the first batches of a budgeted run and may cap this epoch's batches.
    """
    p = parts
    p.model.train()
    n_batches = len(loader) if not max_batches else min(len(loader), max_batches)
    loss_sum, images, start = 0.0, 0, time.perf_counter()
    probe_start, batches = start, 0
    p.optimizer.zero_grad(set_to_none=True)
    bar = tqdm(total=n_batches, desc=desc, disable=not progress, leave=False, unit="batch")
    with clean_worker_errors():
        for i, (x, y, *_) in enumerate(loader):
            if i >= n_batches:
                break
            x, y = to_input(x, device, tc.channels_last), to_target(y, device)
            stepping = (i + 1) % tc.accumulate == 0 or i + 1 == n_batches
            # DDP: skip the gradient all-reduce on batches that only accumulate
            sync = contextlib.nullcontext() if stepping or not hasattr(p.model, "no_sync") \
                else p.model.no_sync()
            with sync:
                with autocast(p.precision, device):
                    logits = p.model(x)
                loss = p.loss_fn(logits.float(), y)
                if not torch.isfinite(loss):
                    raise NonFiniteLoss(f"{desc}: the loss is {float(loss.detach())} at batch {i + 1}")
                p.scaler.scale(loss / tc.accumulate).backward()
            if stepping:
                step(p, tc.grad_clip)
            batches += 1
            batch_loss = float(loss.detach())
            loss_sum += batch_loss * x.shape[0]
            images += x.shape[0]
            bar.update()
            bar.set_postfix(loss=f"{batch_loss:.4f}",
                            img_s=f"{images / (time.perf_counter() - start):.1f}")
            if probe is not None and i + 1 == probe.skip:
                probe_start = time.perf_counter()
            if probe is not None and i + 1 == probe.steps < n_batches:
                pace = (time.perf_counter() - probe_start) / (probe.steps - probe.skip)
                n_batches = bar.total = min(n_batches, max(probe.plan(pace), probe.steps))
    bar.close()
    return EpochResult(loss_sum, images, time.perf_counter() - start, batches)


def step(p: Parts, grad_clip: float) -> None:
    """One optimiser step on the accumulated gradients, then the schedule and the average."""
    if grad_clip > 0:
        p.scaler.unscale_(p.optimizer)
        nn.utils.clip_grad_norm_(p.model.parameters(), grad_clip)
    p.scaler.step(p.optimizer)
    p.scaler.update()
    p.optimizer.zero_grad(set_to_none=True)
    p.schedule.step()
    if p.ema is not None:
        p.ema.update(unwrap(p.model))
    faults.reached("train.step")


@torch.no_grad()
def validate_epoch(parts: Parts, loader, tc: TrainConfig, device: torch.device,
                   progress: bool = True) -> tuple[torch.Tensor, float, int]:
    """Summed ``confusion_counts`` (tp, fp, fn, tn, dice_sum, n), loss sum and image count of
    the evaluated model.

    A pixel is car where its logit is > 0 (probability > 0.5). With ``train.full_res_val`` the
    loader yields the source-resolution mask as a third item and logits are upsampled to it
    (bilinear) before thresholding: the competition's 1918x1280 metric.
    """
    model = parts.evaluated.eval()
    counts = torch.zeros(6, dtype=torch.float64, device=device)
    loss_sum, images = 0.0, 0
    bar = tqdm(total=len(loader), desc="val", disable=not progress, leave=False, unit="batch")
    with clean_worker_errors():
        for batch in loader:
            x, y = to_input(batch[0], device, tc.channels_last), to_target(batch[1], device)
            with autocast(parts.precision, device):
                logits = model(x)
            logits = logits.float()
            loss_sum += float(parts.loss_fn(logits, y)) * x.shape[0]
            images += x.shape[0]
            if tc.full_res_val:
                target = batch[2].to(device)
                logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear",
                                       align_corners=False)
            else:
                target = y
            counts += confusion_counts(logits > 0, target > 0.5)
            bar.update()
    bar.close()
    return counts, loss_sum, images
