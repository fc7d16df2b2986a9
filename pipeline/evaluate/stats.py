"""The spread of a score, pure: 95% bootstrap intervals over cars, for a mean Dice and for the
paired difference of two models scored on the same images.

The 16 photos of a car are far from independent (one car's shape, colour and background), so
the unit resampled is the car: each resample draws as many cars as there are, with
replacement, and takes the mean over all their images (the mean per-image Dice, the
competition's metric, of that set). Seeded: the same scores give the same interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

RESAMPLES = 4000
SEED = 0


def _car_sums(values: np.ndarray, cars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per car: the sum of ``values`` and the number of images."""
    _, car = np.unique(cars, return_inverse=True)
    return np.bincount(car, weights=values), np.bincount(car).astype(np.float64)


def bootstrap_ci(values, cars, resamples: int = RESAMPLES, seed: int = SEED
                 ) -> tuple[float, float]:
    """95% interval (2.5th and 97.5th percentiles) of the image mean of ``values`` when the
    cars are resampled with replacement; ``cars`` gives each value's car."""
    sums, counts = _car_sums(np.asarray(values, dtype=np.float64), np.asarray(cars))
    if len(sums) < 2:
        mean = float(sums.sum() / counts.sum())
        return mean, mean
    pick = np.random.default_rng(seed).integers(0, len(sums), size=(resamples, len(sums)))
    means = sums[pick].sum(1) / counts[pick].sum(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Paired:
    """``other`` minus ``base`` on the images both scored: the mean difference of per-image
    Dice, its 95% interval over cars, and how many images and cars it rests on."""

    diff: float
    lo: float
    hi: float
    images: int
    cars: int
    better: int  # images where ``other`` scores higher
    worse: int


def paired_difference(base: pd.DataFrame, other: pd.DataFrame) -> Paired:
    """The paired difference of two per-image score tables (columns img, car_id, dice: an
    ``oof_dice.csv`` each), matched by image. Images in only one of them are left out."""
    both = base[["img", "car_id", "dice"]].merge(other[["img", "dice"]], on="img",
                                                  suffixes=("_base", "_other"))
    delta = (both["dice_other"] - both["dice_base"]).to_numpy()
    if len(delta) == 0:
        return Paired(float("nan"), float("nan"), float("nan"), 0, 0, 0, 0)
    lo, hi = bootstrap_ci(delta, both["car_id"].to_numpy())
    return Paired(float(delta.mean()), lo, hi, len(delta), both["car_id"].nunique(),
                  int((delta > 0).sum()), int((delta < 0).sum()))
