"""Losses against hand computations and independent references."""

from __future__ import annotations

import itertools
import math

import pytest
import segmentation_models_pytorch as smp
import torch

from pipeline.config import TrainConfig
from pipeline.errors import PipelineError
from pipeline.losses import (
    LOSSES,
    bce_dice,
    bce_log_dice,
    build_loss,
    lovasz_hinge,
    soft_dice,
    soft_dice_loss,
)


def test_soft_dice_by_hand():
    # logits 0 -> p = 0.5 everywhere; 3 of 8 pixels are car
    logits = torch.zeros(1, 1, 2, 4)
    target = torch.tensor([[[[1, 1, 1, 0], [0, 0, 0, 0]]]], dtype=torch.float32)
    expected = (2 * 0.5 * 3 + 1) / (0.5 * 8 + 3 + 1)
    assert soft_dice(logits, target).item() == pytest.approx(expected)
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 - expected)


def test_soft_dice_is_per_image_mean():
    logits = torch.tensor([[[[20.0, -20.0]]], [[[-20.0, -20.0]]]])  # (2, 1, 1, 2)
    target = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 1.0]]]])
    per_image = soft_dice(logits, target)
    assert per_image[0].item() == pytest.approx(1.0, abs=1e-6)  # perfect
    assert per_image[1].item() == pytest.approx(1 / 3, abs=1e-6)  # (0 + 1) / (0 + 2 + 1)
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 - (1 + 1 / 3) / 2, abs=1e-6)


def test_empty_target_and_confident_empty_prediction_scores_one():
    logits = torch.full((1, 1, 4, 4), -30.0)
    target = torch.zeros(1, 1, 4, 4)
    assert soft_dice(logits, target).item() == pytest.approx(1.0, abs=1e-6)


def test_bce_log_dice_by_hand():
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    dice = (2 * 0.5 + 1) / (0.5 * 4 + 1 + 1)
    assert bce_log_dice(logits, target).item() == pytest.approx(math.log(2) - math.log(dice))
    assert bce_dice(logits, target, 0.5).item() == pytest.approx(
        0.5 * math.log(2) + 0.5 * (1 - dice))


def _lovasz_bruteforce(logits: list[float], labels: list[int]) -> float:
    """Lovasz extension of the Jaccard loss from its definition (Berman et al. 2018, eq. 8):
    sort hinge errors m decreasingly, sum m_i * (Delta(S_i) - Delta(S_{i-1})), where S_i is
    the set of the i largest-error pixels taken as mispredicted and
    Delta(M) = 1 - |gt minus M| / |gt union M|."""
    gt = {i for i, y in enumerate(labels) if y}
    errors = [max(0.0, 1 - z * (2 * y - 1)) for z, y in zip(logits, labels)]
    order = sorted(range(len(errors)), key=lambda i: -errors[i])

    def delta(m: set) -> float:
        union = gt | m
        return 1 - len(gt - m) / len(union) if union else 0.0

    total, chosen, prev = 0.0, set(), 0.0
    for i in order:
        chosen.add(i)
        d = delta(chosen)
        total += errors[i] * (d - prev)
        prev = d
    return total


def test_lovasz_matches_definition_on_all_small_label_patterns():
    torch.manual_seed(0)
    for labels in itertools.product([0, 1], repeat=4):
        z = torch.randn(4)
        ours = lovasz_hinge(z.view(1, 1, 2, 2), torch.tensor(labels, dtype=torch.float32)
                            .view(1, 1, 2, 2)).item()
        assert ours == pytest.approx(_lovasz_bruteforce(z.tolist(), list(labels)), abs=1e-5)


def test_lovasz_perfect_with_margin_is_zero():
    target = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    logits = (target * 2 - 1) * 5.0  # every pixel right with margin > 1
    assert lovasz_hinge(logits, target).item() == pytest.approx(0.0, abs=1e-7)


def test_lovasz_matches_smp_per_image():
    torch.manual_seed(1)
    logits = torch.randn(3, 1, 8, 8)
    target = (torch.rand(3, 1, 8, 8) > 0.6).float()
    reference = smp.losses.LovaszLoss(mode="binary", per_image=True)(logits, target)
    assert lovasz_hinge(logits, target).item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_builds_and_backpropagates(name):
    loss_fn = build_loss(TrainConfig(loss=name))
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    target = torch.zeros(2, 1, 8, 8)
    target[0, :, 2:6, 2:6] = 1  # the second image is empty: must stay finite
    loss = loss_fn(logits, target)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # moving logits towards the target lowers the loss
    better = logits.detach() + 3 * (2 * target - 1)
    assert loss_fn(better, target) < loss


def test_unknown_loss_is_one_line_error():
    with pytest.raises(PipelineError, match="train.loss must be one of"):
        build_loss(TrainConfig(loss="focal"))
