"""The pseudo-label rule, pure: which predicted masks are confident enough to train on.

With ``p`` the car probability of a pixel averaged over the TTA views and the models (what
:func:`pipeline.inference.engine.predict_probs` returns) and ``mask`` the predicted mask
(``p > predict.threshold``, with ``predict.largest_component`` when set):

    uncertain pixels   low < p < high            (strict on both sides; the whole photo)
    uncertain fraction uncertain pixels / mask pixels   (inf for an empty mask)
    kept               mask pixels > 0  and  uncertain fraction <= max_uncertain

The fraction is relative to the car's size, so a small, far car is held to the same standard
as a large one; the uncertain pixels sit along the car's edge, where the labels matter.
"""

from __future__ import annotations

import torch

from pipeline.config import PseudoConfig
from pipeline.errors import PipelineError


def check_rule(cfg: PseudoConfig, threshold: float) -> None:
    """One line when the rule cannot work: need 0 <= low < high <= 1, the mask threshold
    within [low, high] and max_uncertain >= 0."""
    if not (0.0 <= cfg.low < cfg.high <= 1.0 and cfg.low <= threshold <= cfg.high):
        raise PipelineError(
            f"pseudo.low={cfg.low} and pseudo.high={cfg.high} must satisfy 0 <= low < high <= 1 "
            f"around predict.threshold={threshold}")
    if cfg.max_uncertain < 0:
        raise PipelineError(f"pseudo.max_uncertain must be >= 0 (got {cfg.max_uncertain})")


def uncertainty(probs: torch.Tensor, masks: torch.Tensor, low: float,
                high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(uncertain fraction, mask pixels) per image, each float32 of length N, from
    probabilities N x H x W and bool masks N x H x W on the same device."""
    uncertain = ((probs > low) & (probs < high)).sum(dim=(1, 2)).float()
    area = masks.sum(dim=(1, 2)).float()
    fraction = torch.where(area > 0, uncertain / area.clamp(min=1), torch.inf)
    return fraction, area


def keep(fraction: torch.Tensor, area: torch.Tensor, max_uncertain: float) -> torch.Tensor:
    """Bool per image: a non-empty mask whose uncertain fraction is at most ``max_uncertain``."""
    return (area > 0) & (fraction <= max_uncertain)
