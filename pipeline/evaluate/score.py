"""Per-image Dice at full resolution, the worst images, and the summary of a scored set.

Scoring streams: only a Dice value and three pixel counts are kept per image (and the RLE of
the few worst masks), so memory does not grow with the number of images.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from pipeline import faults, rle
from pipeline.dice import dice_per_image
from pipeline.distributed import DistInfo, block_range, gather
from pipeline.evaluate.stats import bootstrap_ci
from pipeline.inference.engine import Ensemble, iter_predictions, to_masks

SCORE_COLUMNS = ["img", "car_id", "angle", "make", "fold", "dice", "pred_px", "true_px", "inter_px"]


@dataclass(order=True)
class Worst:
    """A badly predicted image, kept with its predicted mask as RLE (a few kB)."""

    dice: float
    img: str = field(compare=False)
    image_path: str = field(compare=False)
    mask_path: str = field(compare=False)
    pred_rle: str = field(compare=False)


def score_images(
    ensemble: Ensemble,
    rows: pd.DataFrame,
    out_shape: tuple[int, int],
    worst_k: int = 6,
    progress: bool | str = False,
) -> tuple[pd.DataFrame, list[Worst]]:
    """Predict ``rows`` (img, image_path, mask_path, car_id, angle, make[, fold]) and score
    each image against its mask at full size.

    Returns one row per image (SCORE_COLUMNS) and the ``worst_k`` lowest-Dice images, worst first.
    """
    heap: list[tuple[float, int, Worst]] = []  # max-heap on Dice via negation: the k worst
    scored = []
    cfg = ensemble.engine.cfg
    preds = iter_predictions(ensemble, rows["image_path"].tolist(), out_shape,
                             mask_paths=rows["mask_path"].tolist(), progress=progress)
    for pred in preds:
        faults.reached("evaluate.batch")
        masks = to_masks(pred.probs, cfg.threshold, cfg.largest_component)
        truth = pred.masks.bool()
        dice = dice_per_image(masks, truth).double().cpu().numpy()
        counts = torch.stack([masks.flatten(1).sum(1), truth.flatten(1).sum(1),
                              (masks & truth).flatten(1).sum(1)], 1).cpu().numpy()
        for j, i in enumerate(pred.indices):
            scored.append((i, float(dice[j]), *map(int, counts[j])))
            entry = (-float(dice[j]), i)
            if len(heap) < worst_k or entry > heap[0][:2]:
                row = rows.iloc[i]
                worst = Worst(float(dice[j]), row["img"], row["image_path"], row["mask_path"],
                              rle.encode_torch(masks[j : j + 1])[0])
                item = (entry[0], entry[1], worst)
                if len(heap) < worst_k:
                    heapq.heappush(heap, item)
                else:
                    heapq.heapreplace(heap, item)
    order = [s[0] for s in scored]
    out = rows.iloc[order].reset_index(drop=True)
    if "fold" not in out:
        out["fold"] = -1
    values = np.array([s[1:] for s in scored], dtype=np.float64).reshape(-1, 4)
    out["dice"] = values[:, 0]
    for k, col in enumerate(("pred_px", "true_px", "inter_px"), start=1):
        out[col] = values[:, k].astype(np.int64)
    return out[SCORE_COLUMNS], sorted(w for _, _, w in heap)


def score_distributed(ensemble: Ensemble, rows: pd.DataFrame, dist: DistInfo,
                      out_shape: tuple[int, int], worst_k: int,
                      progress: bool | str) -> tuple[pd.DataFrame, list[Worst]]:
    """:func:`score_images` with the rows split over ranks in contiguous blocks of whole
    batches; every rank gets the whole result."""
    batch = ensemble.engine.cfg.batch_size
    start, stop = block_range(len(rows), dist.rank, dist.world_size, batch)
    scores, worst = score_images(ensemble, rows.iloc[start:stop].reset_index(drop=True),
                                 out_shape, worst_k, progress if dist.is_main else False)
    parts = gather((scores, worst), dist)
    scores = pd.concat([p[0] for p in parts], ignore_index=True)
    worst = sorted(w for p in parts for w in p[1])[:worst_k]
    return scores, worst


def summarize_dice(scores: pd.DataFrame) -> dict:
    """Mean/std/min/median Dice over images with its 95% bootstrap interval over cars, pixel
    precision and recall, and the mean Dice per fold (with its interval), per angle
    (``"01"``..``"16"``) and per make: the scoring fields of a
    :class:`~pipeline.records.CVSummary`."""
    d = scores["dice"]
    pred, true, inter = (float(scores[c].sum()) for c in ("pred_px", "true_px", "inter_px"))

    def by(col: str, key=str, ci: bool = False) -> dict:
        out = {}
        for k, g in scores.groupby(col):
            out[key(k)] = {"dice": float(g["dice"].mean()), "std": float(g["dice"].std(ddof=0)),
                           "images": len(g)}
            if ci:
                out[key(k)]["ci95"] = list(bootstrap_ci(g["dice"], g["car_id"]))
        return out

    return {
        "images": len(scores),
        "dice": float(d.mean()),
        "dice_ci95": list(bootstrap_ci(d, scores["car_id"])),
        "dice_std": float(d.std(ddof=0)),
        "dice_min": float(d.min()),
        "dice_median": float(d.median()),
        "precision": inter / pred if pred else 1.0,
        "recall": inter / true if true else 1.0,
        "folds": by("fold", lambda k: str(int(k)), ci=True),
        "angles": by("angle", lambda k: f"{int(k):02d}"),
        "makes": by("make"),
    }
