"""Segmentation metrics. The competition metric is the mean over images of the per-image Dice

    Dice(X, Y) = 2 |X ∩ Y| / (|X| + |Y|),   defined as 1 when X and Y are both empty,

computed on binary masks at full 1918x1280 resolution. Functions here are pure and work on a
batch: numpy or torch arrays of shape (N, H, W) (or (N, 1, H, W)). Any non-zero value is
foreground (car), in numpy and torch alike: a 0/255 mask scores as its 0/1 twin, and
probabilities must be thresholded first (0.01 counts as car; this is not a soft Dice).
"""

from __future__ import annotations

import numpy as np
import torch


def _flat(x):
    return x.reshape(x.shape[0], -1)


def dice_per_image(pred, target):
    """Per-image Dice (non-zero = foreground); both-empty images score 1. numpy or torch in,
    same out (torch: float32 per image)."""
    if isinstance(pred, torch.Tensor):
        p, t = (_flat(pred) != 0).float(), (_flat(target) != 0).float()
        inter = (p * t).sum(1)
        total = p.sum(1) + t.sum(1)
        return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))
    p, t = _flat(np.asarray(pred) != 0), _flat(np.asarray(target) != 0)
    inter = np.logical_and(p, t).sum(1).astype(np.float64)
    total = (p.sum(1) + t.sum(1)).astype(np.float64)
    return np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)


def confusion_counts(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Summed (tp, fp, fn, tn, dice_sum, n_images) over a batch, as a float64 tensor of 6.

    Sums (rather than means) so that batches and DDP ranks can be added before dividing.
    Non-zero is foreground, as in :func:`dice_per_image`.
    """
    p, t = _flat(pred) != 0, _flat(target) != 0
    tp = (p & t).sum()
    fp = (p & ~t).sum()
    fn = (~p & t).sum()
    tn = (~p & ~t).sum()
    dice = dice_per_image(p, t).sum()
    return torch.stack([tp, fp, fn, tn, dice, torch.tensor(p.shape[0], device=p.device)]).double()


def count_metrics(counts: torch.Tensor) -> dict[str, float]:
    """Turn summed :func:`confusion_counts` into dice (mean per image), accuracy, precision,
    recall."""
    tp, fp, fn, tn, dice_sum, n = (float(v) for v in counts)
    return {
        "dice": dice_sum / max(n, 1),
        "accuracy": (tp + tn) / max(tp + fp + fn + tn, 1),
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
    }
