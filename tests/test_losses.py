"""Losses against hand computations and independent references."""

from __future__ import annotations

import pytest
import torch

from pipeline import losses
from pipeline.config import TrainConfig, default
from pipeline.errors import PipelineError
from pipeline.losses import (
    LOSSES,
    build_loss,
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


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_builds_and_backpropagates(name):
    loss_fn = build_loss(default(TrainConfig, loss=name))
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
        build_loss(default(TrainConfig, loss="focal"))


def test_boundary_band_on_a_hand_made_mask():
    """A 4x4 square of car in a 10x10 image, box 3: the band is every pixel whose 3x3
    neighbourhood (clipped to the image) mixes car and background, i.e. the ring of pixels
    within one pixel of the square's edge, inside and outside; nothing else."""
    mask = torch.zeros(1, 1, 10, 10)
    mask[..., 3:7, 3:7] = 1
    band = losses.boundary_band(mask, 3)[0, 0]
    expected = torch.zeros(10, 10, dtype=torch.bool)
    expected[2:8, 2:8] = True  # the square grown by one pixel ...
    expected[4:6, 4:6] = False  # ... minus its core, two pixels in from every edge
    assert torch.equal(band, expected)
    weights = losses.boundary_weights(mask, 3, 3.0)[0, 0]
    assert torch.equal(weights, torch.where(expected, 3.0, 1.0))
    # an all-background or all-car image has no edge
    assert not losses.boundary_band(torch.zeros(1, 1, 8, 8), 3).any()
    assert not losses.boundary_band(torch.ones(1, 1, 8, 8), 3).any()


def test_boundary_kernel_scales_with_the_input_height():
    assert losses.boundary_kernel(1024) == 41 and losses.boundary_kernel(1280) == 51
    assert losses.boundary_kernel(192) == 9 and losses.boundary_kernel(32) == 3
    assert all(losses.boundary_kernel(h) % 2 == 1 for h in range(16, 2000, 37))


def test_boundary_loss_weights_mistakes_on_the_edge_more():
    """The same number of wrong pixels costs more on the band than far from it."""
    target = torch.zeros(1, 1, 32, 32)
    target[..., 8:24, 8:24] = 1
    good = torch.where(target > 0, 6.0, -6.0)
    on_edge, far = good.clone(), good.clone()
    on_edge[..., 8, 8:12] = -6.0  # 4 car pixels on the edge called background
    far[..., 15, 14:18] = -6.0  # 4 car pixels in the middle of the car
    def loss(logits):
        return float(losses.boundary_bce_dice(logits, target, weight=3.0, kernel=5))

    assert loss(good) < loss(far) < loss(on_edge)
    plain = float(losses.bce_dice(on_edge, target))
    assert plain == pytest.approx(float(losses.bce_dice(far, target)), rel=1e-4)
