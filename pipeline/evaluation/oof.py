"""The two evaluation modes and the fold-level resume.

Out of fold: for every fold K with a checkpoint, the fold's validation images (the folds
file) are predicted at their full size by that fold's model with flip TTA and scored. All
images: one ensemble on every labelled image of a Kaggle-layout folder (e.g. held-out cars).

Finished folds are kept in ``.fold<K>.csv`` beside the report, stamped with a fingerprint of the
checkpoint, settings and images, so an interrupted run resumes at the next fold.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from pipeline.atomic import atomic_path, write_json
from pipeline.config import Config, PredictConfig
from pipeline.data.io import image_shape
from pipeline.data.layout import train_index
from pipeline.data.splits import check_split, fold_rows, load_folds
from pipeline.device import resolve_precision
from pipeline.distributed import DistInfo
from pipeline.errors import PipelineError
from pipeline.evaluation.score import SCORE_COLUMNS, Worst, score_distributed, summarize_dice
from pipeline.fingerprint import code_version, file_stats, fingerprint
from pipeline.inference.engine import load_ensemble
from pipeline.models.checkpoint import load_checkpoint
from pipeline.records import CVSummary, PredictSettings
from pipeline.runs import ModelPaths, fold_of, refiner_beside
from pipeline.typed import build


@dataclass
class EvalResult:
    scores: pd.DataFrame
    worst: list[Worst]
    summary: CVSummary


def labelled_index(data_root: str | Path) -> pd.DataFrame:
    """Every image of ``<data_root>/train`` that has a mask (train_index rows)."""
    index = train_index(data_root)
    labelled = index[index["mask_path"] != ""].reset_index(drop=True)
    if labelled.empty:
        raise PipelineError(f"{Path(data_root) / 'train_masks'}: no masks for the images in "
                            f"{Path(data_root) / 'train'}; evaluation needs labelled images")
    return labelled


def predict_settings(p: PredictConfig, device: torch.device) -> PredictSettings:
    """The settings the scores were computed with, precision resolved for ``device``."""
    precision = resolve_precision(p.precision, device, what="predict.precision")
    return PredictSettings(tta=list(p.tta), threshold=p.threshold,
                           largest_component=p.largest_component, precision=precision.name,
                           device=device.type, refiner=p.refiner)


# --------------------------------------------------------------------------- resume


def resume_key(p: PredictConfig, device: torch.device, data_root: str | Path,
               rows: pd.DataFrame) -> tuple:
    """What a fold's scores depend on besides the checkpoint: the settings with the precision
    resolved for ``device``, the code, the data root, the images (size and time) and the masks
    (their bytes)."""
    settings = predict_settings(p, device)
    return (vars(settings), code_version(), str(Path(data_root).resolve()),
            rows["img"].tolist(), file_stats(rows["image_path"]),
            fingerprint(list(rows["mask_path"])))


def model_files(checkpoint: Path, p: PredictConfig) -> list[Path]:
    """The files a fold's scores come from: its checkpoint and, with ``predict.refiner``, the
    refiner beside it (when there: a missing one fails as one line when the model loads)."""
    refiner = refiner_beside(checkpoint)
    return [checkpoint, refiner] if p.refiner and refiner.is_file() else [checkpoint]


def _fold_cache(report_dir: Path, fold: int) -> tuple[Path, Path]:
    path = report_dir / f".fold{fold}.csv"
    return path, path.with_suffix(".json")


def _load_cached(report_dir: Path, fold: int, key: str) -> tuple[pd.DataFrame, list[Worst]] | None:
    path, stamp = _fold_cache(report_dir, fold)
    try:
        state = json.loads(stamp.read_text())
        if state.get("key") != key:
            return None
        scores = pd.read_csv(path, dtype={"img": str, "car_id": str, "make": str})
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    worst = [Worst(**w) for w in state.get("worst", [])]
    return scores[SCORE_COLUMNS], worst


def _save_cached(report_dir: Path, fold: int, key: str, scores: pd.DataFrame,
                 worst: list[Worst]) -> None:
    path, stamp = _fold_cache(report_dir, fold)
    with atomic_path(path) as tmp:
        scores.to_csv(tmp, index=False)
    write_json(stamp, {"key": key, "worst": [vars(w) for w in worst]})


# --------------------------------------------------------------------------- the two modes


def evaluate_oof(
    cfg: Config,
    data_root: str | Path,
    folds_path: str | Path,
    report_dir: str | Path,
    *,
    model: ModelPaths | None = None,
    checkpoints: Sequence[str | Path] | None = None,
    worst_k: int = 6,
    dist: DistInfo | None = None,
    progress: bool = True,
) -> EvalResult:
    """Out-of-fold Dice: each fold's validation images scored by that fold's model.

    ``checkpoints``: explicit files, each in a ``fold<K>`` folder; default: every
    ``<checkpoints>/<label>/fold<K>/best.pt`` of ``model`` (default roots, the config's
    label). Folds without a checkpoint are skipped.
    """
    dist = dist or DistInfo()
    model = model or ModelPaths(cfg.model.label)
    report_dir, folds_path = Path(report_dir), Path(folds_path)
    folds = load_folds(folds_path)
    if checkpoints:
        by_fold = {fold_of(p): Path(p) for p in checkpoints}
    else:
        by_fold = model.fold_checkpoints()
    by_fold = {k: p for k, p in by_fold.items() if k >= 0}
    n_folds = int(folds["fold"].max()) + 1
    if not by_fold:
        raise PipelineError(
            f"no fold checkpoints at {model.roots.checkpoints / model.label}/fold<K>/best.pt "
            f"for the {n_folds} folds of {folds_path}; train them first (python -m "
            "pipeline.train --fold K) or pass --checkpoint"
        )
    index = labelled_index(data_root)
    out_shape = image_shape(index["image_path"].iloc[0])
    all_scores, all_worst = [], []
    p = cfg.predict
    predicted, seconds = 0, 0.0  # full-resolution TTA throughput, for the benchmark table
    for fold, ckpt in by_fold.items():
        _, rows = fold_rows(index, folds, fold, folds_path,
                            "the data root (train/, train_masks/)")
        if rows.empty:
            continue
        warning = check_split(load_checkpoint(ckpt).get("split"), fold, folds_path, ckpt)
        if warning and dist.is_main:
            print(f"warning: {warning}", file=sys.stderr)
        key = fingerprint(model_files(ckpt, p), resume_key(p, dist.device, data_root, rows),
                          out_shape)
        cached = _load_cached(report_dir, fold, key)
        if cached is None:
            ensemble = load_ensemble([ckpt], dist.device, p)
            start = time.perf_counter()
            scores, worst = score_distributed(ensemble, rows, p, dist, out_shape, worst_k,
                                              f"fold {fold}" if progress else False)
            predicted, seconds = predicted + len(rows), seconds + time.perf_counter() - start
            if dist.is_main:
                _save_cached(report_dir, fold, key, scores, worst)
        else:
            scores, worst = cached
        all_scores.append(scores)
        all_worst.extend(worst)
    scores = pd.concat(all_scores, ignore_index=True).sort_values("img", ignore_index=True)
    summary = build(CVSummary, {
        "mode": "oof", "label": cfg.model.label, "data_root": str(data_root),
        "folds_file": str(folds_path), **summarize_dice(scores),
        "checkpoints": {str(k): str(v) for k, v in by_fold.items()},
        "skipped_folds": [k for k in range(n_folds) if k not in by_fold],
        "images_per_s": predicted / seconds if seconds else None,
        "predict": vars(predict_settings(p, dist.device)),
    }, "the out-of-fold summary")
    return EvalResult(scores, sorted(all_worst)[:worst_k], summary)


def evaluate_all_images(
    cfg: Config,
    data_root: str | Path,
    checkpoints: Sequence[str | Path],
    *,
    worst_k: int = 6,
    dist: DistInfo | None = None,
    progress: bool = True,
) -> EvalResult:
    """The ensemble of ``checkpoints`` on every labelled image of ``data_root``."""
    dist = dist or DistInfo()
    index = labelled_index(data_root)
    out_shape = image_shape(index["image_path"].iloc[0])
    ensemble = load_ensemble(checkpoints, dist.device, cfg.predict)
    start = time.perf_counter()
    scores, worst = score_distributed(ensemble, index, cfg.predict, dist, out_shape, worst_k,
                                      "evaluate" if progress else False)
    seconds = time.perf_counter() - start
    scores = scores.sort_values("img", ignore_index=True)
    summary = build(CVSummary, {
        "mode": "all-images", "label": cfg.model.label, "data_root": str(data_root),
        **summarize_dice(scores), "checkpoints": [str(c) for c in checkpoints],
        "images_per_s": len(scores) / seconds if seconds else None,
        "predict": vars(predict_settings(cfg.predict, dist.device)),
    }, "the all-images summary")
    return EvalResult(scores, worst, summary)
