"""Scoring at full resolution: per-image Dice and pixel counts of constant predictions against
closed-form answers, the worst images, and the summary of a scored set computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipeline.config import PredictConfig, default
from pipeline.data.io import read_mask
from pipeline.data.layout import train_index
from pipeline.distributed import DistInfo
from pipeline.evaluate.score import (
    SCORE_COLUMNS,
    score_distributed,
    score_images,
    summarize_dice,
)
from pipeline.inference.engine import Ensemble, Member, prepare_engine

FP32 = prepare_engine(default(PredictConfig, precision="fp32", num_workers=0, batch_size=4))


class Constant(nn.Module):
    """Logit ``value`` everywhere: all car (> 0) or no car (< 0)."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x):
        return torch.full_like(x[:, :1], self.value)


def all_car_dice(mask_path: str) -> float:
    """Dice of an all-car prediction: 2 |T| / (|T| + H * W)."""
    truth = read_mask(mask_path)
    return 2 * truth.sum() / (truth.sum() + truth.size)


@pytest.fixture(scope="module")
def rows(tiny_data) -> pd.DataFrame:
    """10 labelled images (no fold column), in an order that is not sorted by name."""
    index = train_index(tiny_data)
    return index.iloc[[7, 3, 12, 0, 21, 5, 30, 9, 1, 17]].reset_index(drop=True)


def test_all_car_scores_the_closed_form_dice(rows):
    ensemble = Ensemble([Member(Constant(30.0), (32, 48))], FP32)
    scores, worst = score_images(ensemble, rows, (64, 96), worst_k=3)
    assert list(scores.columns) == SCORE_COLUMNS
    assert scores["img"].tolist() == rows["img"].tolist()  # input order kept
    assert (scores["fold"] == -1).all()  # rows without a fold column
    for row, mask_path in zip(scores.itertuples(), rows["mask_path"]):
        truth = read_mask(mask_path)
        assert row.pred_px == 64 * 96 and row.true_px == truth.sum() > 0
        assert row.inter_px == row.true_px
        assert row.dice == pytest.approx(all_car_dice(mask_path))
    assert [w.dice for w in worst] == sorted(scores["dice"])[:3]
    first = scores.set_index("img").loc[worst[0].img]
    assert worst[0].mask_path == rows.set_index("img").loc[worst[0].img, "mask_path"]
    assert worst[0].pred_rle == f"1 {64 * 96}" and worst[0].dice == first["dice"]


def test_no_car_scores_zero_and_one_process_is_score_images(rows):
    ensemble = Ensemble([Member(Constant(-30.0), (32, 48))], FP32)
    scores, worst = score_images(ensemble, rows, (64, 96))
    assert (scores["dice"] == 0).all() and (scores["pred_px"] == 0).all()
    assert (scores["inter_px"] == 0).all() and (scores["true_px"] > 0).all()
    assert len(worst) == 6 and all(w.pred_rle == "" for w in worst)
    again, _ = score_distributed(ensemble, rows, DistInfo(), (64, 96), 6, False)
    pd.testing.assert_frame_equal(again, scores)


def test_summarize_dice_by_hand():
    frame = pd.DataFrame({"dice": [1.0, 0.5, 0.0, 0.5], "fold": [0, 0, 1, 1],
                          "car_id": ["a", "a", "b", "c"],
                          "angle": [1, 2, 1, 2], "make": ["A", "A", "B", "A"],
                          "pred_px": [10, 10, 0, 5], "true_px": [10, 30, 5, 5],
                          "inter_px": [10, 10, 0, 5]})
    s = summarize_dice(frame)
    assert s["dice"] == 0.5 and s["dice_min"] == 0.0 and s["dice_median"] == 0.5
    assert s["dice_std"] == pytest.approx(np.std([1, 0.5, 0, 0.5]))
    assert s["folds"] == {"0": {"dice": 0.75, "std": 0.25, "images": 2, "ci95": [0.75, 0.75]},
                          "1": s["folds"]["1"]}  # fold 0: one car, so no spread
    assert {k: v for k, v in s["folds"]["1"].items() if k != "ci95"} == \
        {"dice": 0.25, "std": 0.25, "images": 2}
    lo, hi = s["folds"]["1"]["ci95"]  # cars b (0.0) and c (0.5): resamples lie in [0, 0.5]
    assert 0.0 <= lo < 0.25 < hi <= 0.5
    assert s["dice_ci95"][0] < 0.5 < s["dice_ci95"][1]
    assert s["angles"]["01"]["dice"] == 0.5 and s["makes"]["B"]["dice"] == 0.0
    assert s["precision"] == 25 / 25 and s["recall"] == 25 / 50
