"""Segmentation losses: pure functions on logits, thin ``nn.Module`` wrappers, ``build_loss``.

Conventions: ``logits`` and ``target`` have shape (N, 1, H, W) (or (N, H, W)); ``target`` holds
{0, 1} floats; every loss returns a scalar averaged over the batch. Soft Dice is
computed per image and then averaged, like the competition metric (mean per-image Dice).

The boundary-weighted loss is the Carvana winners' (1st place: BCE + soft Dice with 3x weight on
a band along the car's edge, the band being where a box-filtered mask lies strictly between 0.01
and 0.99, box 41 px wide on a 1024 px input). Its box scales with the input height.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import TrainConfig
from pipeline.errors import PipelineError


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).float()


def soft_dice(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Per-image soft Dice ``(2 sum(p t) + eps) / (sum(p) + sum(t) + eps)`` with p = sigmoid(logits).

    ``eps`` (additive smoothing) keeps empty images finite: an empty target with p ~ 0 scores ~1.
    Returns shape (N,).
    """
    p, t = torch.sigmoid(_flat(logits)), _flat(target)
    return (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``1 - soft_dice``, averaged over the batch."""
    return (1 - soft_dice(logits, target, eps)).mean()


def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-mean binary cross-entropy on logits (numerically stable)."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def bce_dice(logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 0.5) -> torch.Tensor:
    """``bce_weight * BCE + (1 - bce_weight) * (1 - soft Dice)``."""
    return bce_weight * bce(logits, target) + (1 - bce_weight) * soft_dice_loss(logits, target)


def boundary_kernel(height: int, at_1024: int = 41) -> int:
    """The odd box width for an input ``height`` px tall: ``at_1024`` scaled, at least 3."""
    k = max(3, round(at_1024 * height / 1024))
    return k if k % 2 else k + 1


def boundary_band(target: torch.Tensor, kernel: int) -> torch.Tensor:
    """Bool mask of the pixels near an edge of ``target`` (N x 1 x H x W {0, 1}): where the
    ``kernel`` x ``kernel`` box average (over pixels inside the image) is in (0.01, 0.99)."""
    t = target.float().reshape(target.shape[0], 1, *target.shape[-2:])
    avg = F.avg_pool2d(t, kernel, stride=1, padding=kernel // 2, count_include_pad=False)
    return ((avg > 0.01) & (avg < 0.99)).reshape(target.shape)


def boundary_weights(target: torch.Tensor, kernel: int, weight: float) -> torch.Tensor:
    """Per-pixel weights: ``weight`` on :func:`boundary_band`, 1 elsewhere."""
    return 1.0 + (weight - 1.0) * boundary_band(target, kernel).float()


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged with per-pixel ``weights`` (sum(w * bce) / sum(w))."""
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target.float(),
                                                   reduction="none")
    return (per_pixel * weights).sum() / weights.sum()


def weighted_soft_dice(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                       eps: float = 1.0) -> torch.Tensor:
    """Per-image soft Dice with every pixel counted ``weights`` times; shape (N,)."""
    p, t, w = torch.sigmoid(_flat(logits)), _flat(target), _flat(weights)
    return (2 * (w * p * t).sum(1) + eps) / ((w * p).sum(1) + (w * t).sum(1) + eps)


def boundary_bce_dice(logits: torch.Tensor, target: torch.Tensor, weight: float = 3.0,
                      kernel: int | None = None, bce_weight: float = 0.5) -> torch.Tensor:
    """:func:`bce_dice` with both terms weighted ``weight`` x on the edge band (``kernel``:
    the box width, by default :func:`boundary_kernel` of the input height)."""
    kernel = kernel or boundary_kernel(target.shape[-2])
    w = boundary_weights(target, kernel, weight)
    dice = 1 - weighted_soft_dice(logits, target, w).mean()
    return bce_weight * weighted_bce(logits, target, w) + (1 - bce_weight) * dice


class BCEDiceLoss(nn.Module):
    """Module form of :func:`bce_dice`."""

    def __init__(self, bce_weight: float = 0.5):
        super().__init__()
        self.bce_weight = bce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return bce_dice(logits, target, self.bce_weight)


class BoundaryBCEDiceLoss(nn.Module):
    """Module form of :func:`boundary_bce_dice`; the band width follows each batch's height."""

    def __init__(self, weight: float, at_1024: int, bce_weight: float = 0.5):
        super().__init__()
        self.weight, self.at_1024, self.bce_weight = weight, at_1024, bce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kernel = boundary_kernel(target.shape[-2], self.at_1024)
        return boundary_bce_dice(logits, target, self.weight, kernel, self.bce_weight)


LOSSES = ("bce_dice", "boundary_bce_dice")


def build_loss(cfg: TrainConfig) -> nn.Module:
    """The loss named by ``cfg.loss``: bce_dice, or boundary_bce_dice
    (``train.boundary_weight`` on a band ``train.boundary_kernel`` px wide at a 1024 px input
    height)."""
    if cfg.loss == "bce_dice":
        return BCEDiceLoss(cfg.bce_weight)
    if cfg.loss == "boundary_bce_dice":
        if cfg.boundary_weight < 1 or cfg.boundary_kernel < 1:
            raise PipelineError("train.boundary_weight must be >= 1 and train.boundary_kernel "
                                f">= 1, got {cfg.boundary_weight} and {cfg.boundary_kernel}")
        return BoundaryBCEDiceLoss(cfg.boundary_weight, cfg.boundary_kernel, cfg.bce_weight)
    raise PipelineError(f"train.loss must be one of {', '.join(LOSSES)}, got '{cfg.loss}'")
