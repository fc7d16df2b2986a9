"""``python -m pipeline.benchmark predict``: its helpers (the naive loop's agreement with the
engine is tested in test_inference_engine.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import rle
from pipeline.benchmark.engine_speed import cycle, mean_agreement


def test_mean_agreement_and_cycle():
    a = np.zeros((4, 6), np.uint8)
    a[1:3, 1:5] = 1  # 8 pixels
    b = a.copy()
    b[1, 1:5] = 0  # 4 of them
    texts = [rle.encode(a), rle.encode(b)]
    # Dice(a, a) = 1 and Dice(a, b) = 2 * 4 / (8 + 4)
    assert mean_agreement(texts, [texts[0], texts[0]], (4, 6)) == pytest.approx((1 + 8 / 12) / 2)
    assert cycle(["x", "y"], 5) == ["x", "y", "x", "y", "x"]
