"""Segmentation losses: pure functions on logits, thin ``nn.Module`` wrappers, ``build_loss``.

Conventions: ``logits`` and ``target`` have shape (N, 1, H, W) (or (N, H, W)); ``target`` holds
{0, 1} floats; every loss returns a scalar averaged over the batch. Soft Dice and Lovasz are
computed per image and then averaged, like the competition metric (mean per-image Dice).
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


def bce_log_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``BCE - log(soft Dice)`` (Dice averaged over the batch first), the Carvana-era favourite:
    the log sharpens the gradient as Dice approaches 1."""
    return bce(logits, target) - torch.log(soft_dice(logits, target).mean())


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors
    (Berman et al. 2018, Alg. 1)."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_hinge_flat(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovasz hinge of one image: ``logits`` and ``labels`` flattened to shape (P,)."""
    if labels.numel() == 0:
        return logits.sum() * 0.0
    signs = 2.0 * labels - 1.0
    errors = 1.0 - logits * signs  # hinge margins; > 0 where a pixel is wrong or not confident
    errors_sorted, perm = torch.sort(errors, descending=True)
    grad = _lovasz_grad(labels[perm])
    return torch.dot(F.relu(errors_sorted), grad)


def lovasz_hinge(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Lovasz hinge loss computed per image and averaged over the batch."""
    lg, t = _flat(logits), _flat(target)
    return torch.stack([lovasz_hinge_flat(lg[i], t[i]) for i in range(lg.shape[0])]).mean()


class BCEDiceLoss(nn.Module):
    """Module form of :func:`bce_dice`."""

    def __init__(self, bce_weight: float = 0.5):
        super().__init__()
        self.bce_weight = bce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return bce_dice(logits, target, self.bce_weight)


class LossFn(nn.Module):
    """Module wrapper around a pure loss function ``fn(logits, target)``."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.fn(logits, target)

    def extra_repr(self) -> str:
        return self.fn.__name__


LOSSES = ("bce_dice", "bce", "dice", "lovasz", "bce_log_dice")


def build_loss(cfg: TrainConfig) -> nn.Module:
    """The loss named by ``cfg.loss``: bce_dice (default), bce, dice, lovasz, bce_log_dice."""
    if cfg.loss == "bce_dice":
        return BCEDiceLoss(cfg.bce_weight)
    table = {"bce": bce, "dice": soft_dice_loss, "lovasz": lovasz_hinge,
             "bce_log_dice": bce_log_dice}
    if cfg.loss not in table:
        raise PipelineError(f"train.loss must be one of {', '.join(LOSSES)}, got '{cfg.loss}'")
    return LossFn(table[cfg.loss])
