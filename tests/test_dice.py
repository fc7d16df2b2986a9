"""Segmentation metrics against hand computations: per-image Dice (numpy and torch, both-empty
images score 1), the summed confusion counts and the metrics made from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.dice import confusion_counts, count_metrics, dice_per_image

# Two 2x4 images. Image 0: pred 3 px, target 2 px, 2 shared -> Dice 2*2/(3+2) = 0.8.
# Image 1: pred 1 px, target 3 px, none shared -> Dice 0.
PRED = np.array([[[1, 1, 1, 0], [0, 0, 0, 0]],
                 [[0, 0, 0, 0], [0, 0, 0, 1]]], dtype=np.uint8)
TARGET = np.array([[[1, 1, 0, 0], [0, 0, 0, 0]],
                   [[1, 1, 1, 0], [0, 0, 0, 0]]], dtype=np.uint8)


def test_dice_per_image_numpy_by_hand():
    dice = dice_per_image(PRED, TARGET)
    assert isinstance(dice, np.ndarray) and dice.dtype == np.float64
    np.testing.assert_allclose(dice, [0.8, 0.0])


def test_dice_per_image_torch_by_hand():
    dice = dice_per_image(torch.from_numpy(PRED), torch.from_numpy(TARGET))
    assert isinstance(dice, torch.Tensor)
    torch.testing.assert_close(dice, torch.tensor([0.8, 0.0]))
    as_bool = dice_per_image(torch.from_numpy(PRED).bool(), torch.from_numpy(TARGET).bool())
    torch.testing.assert_close(as_bool, torch.tensor([0.8, 0.0]))


def test_both_empty_scores_one_and_one_empty_scores_zero():
    empty = np.zeros((1, 3, 3), np.uint8)
    full = np.ones((1, 3, 3), np.uint8)
    assert dice_per_image(empty, empty).tolist() == [1.0]
    assert dice_per_image(empty, full).tolist() == [0.0]
    assert dice_per_image(torch.from_numpy(empty), torch.from_numpy(empty)).tolist() == [1.0]
    assert dice_per_image(torch.from_numpy(full), torch.from_numpy(empty)).tolist() == [0.0]


def test_dice_accepts_a_channel_axis_and_nonzero_as_car():
    pred = PRED[:, None] * 255  # (N, 1, H, W), 255 for car as in a PNG
    np.testing.assert_allclose(dice_per_image(pred, TARGET[:, None]), [0.8, 0.0])


@pytest.mark.parametrize("scale", [255, 0.7])
def test_torch_dice_and_counts_binarise_like_numpy(scale):
    """Non-zero is car on both paths: torch used to multiply raw values (255 * 255 gave a Dice
    far from 0.8, 0.7 masks a soft Dice) where numpy compared with 0."""
    pred, target = PRED.astype(np.float32) * scale, TARGET.astype(np.float32) * scale
    np.testing.assert_allclose(dice_per_image(pred, target), [0.8, 0.0])
    torch.testing.assert_close(dice_per_image(torch.from_numpy(pred), torch.from_numpy(target)),
                               torch.tensor([0.8, 0.0]))
    counts = confusion_counts(torch.from_numpy(pred), torch.from_numpy(target))
    assert counts.tolist() == pytest.approx([2, 2, 3, 9, 0.8, 2])
    as_uint8 = confusion_counts(torch.from_numpy(PRED * 255), torch.from_numpy(TARGET * 255))
    torch.testing.assert_close(as_uint8, counts)


def test_confusion_counts_by_hand():
    counts = confusion_counts(torch.from_numpy(PRED), torch.from_numpy(TARGET))
    assert counts.dtype == torch.float64 and counts.shape == (6,)
    # tp: 2 + 0; fp: 1 + 1; fn: 0 + 3; tn: 5 + 4; dice sum 0.8; 2 images
    assert counts.tolist() == pytest.approx([2, 2, 3, 9, 0.8, 2])


def test_counts_add_over_batches():
    a = confusion_counts(torch.from_numpy(PRED[:1]), torch.from_numpy(TARGET[:1]))
    b = confusion_counts(torch.from_numpy(PRED[1:]), torch.from_numpy(TARGET[1:]))
    whole = confusion_counts(torch.from_numpy(PRED), torch.from_numpy(TARGET))
    torch.testing.assert_close(a + b, whole)


def test_count_metrics_by_hand():
    counts = torch.tensor([2, 2, 3, 9, 0.8, 2], dtype=torch.float64)
    m = count_metrics(counts)
    assert m["dice"] == pytest.approx(0.4)  # mean per image, not the pooled 2*2/(4+5)
    assert m["accuracy"] == pytest.approx(11 / 16)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 5)


def test_count_metrics_without_positives_is_perfect_not_nan():
    m = count_metrics(torch.tensor([0, 0, 0, 8, 1.0, 1], dtype=torch.float64))
    assert m == {"dice": 1.0, "accuracy": 1.0, "precision": 1.0, "recall": 1.0}
    assert count_metrics(torch.zeros(6, dtype=torch.float64))["dice"] == 0.0  # no images
