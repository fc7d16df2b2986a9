"""The two evaluation modes and the fold-level resume.

Out of fold: for every fold K with a checkpoint, the fold's validation images (the folds
file) are predicted at their full size by that fold's model with flip TTA and scored. All
images: one ensemble on every labelled image of a Kaggle-layout folder (e.g. held-out cars).

Before a model is scored, the images it learnt from (its ``trained_on``, its refiner's too) must
not include any image it is scored on; otherwise it is refused as leakage. Finished folds are
kept in ``.fold<K>.csv`` beside the report, stamped with a resume key of the ensemble (its files
and every prediction setting), the images and the masks, so an interrupted run resumes at the
next fold.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.atomic import atomic_path, write_json
from pipeline.config import PredictConfig
from pipeline.data.io import image_shape
from pipeline.data.layout import train_index
from pipeline.distributed import DistInfo
from pipeline.errors import PipelineError
from pipeline.evaluate.score import SCORE_COLUMNS, Worst, score_distributed, summarize_dice
from pipeline.folds.splits import check_unseen, fold_rows, load_folds
from pipeline.inference.engine import Engine, Ensemble, load_ensemble, prepare_engine
from pipeline.keys import file_stats, output_key
from pipeline.records import CVSummary
from pipeline.runs import ModelPaths, fold_of
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


def check_ensemble(ensemble: Ensemble, rows: pd.DataFrame, why: str, announce: bool) -> None:
    """Refuse an ensemble one of whose models (or refiners) learnt from any image of ``rows``
    (``why`` names them); warn about models that do not record what they learnt from."""
    for member in ensemble.members:
        warning = check_unseen(member.trained_on, rows["img"].tolist(), member.source, why)
        if warning and announce:
            print(f"warning: {warning}", file=sys.stderr)


def fold_key(ensemble: Ensemble, data_root: str | Path, rows: pd.DataFrame,
             out_shape: tuple[int, int]) -> str:
    """What a fold's scores depend on: the ensemble (its files and settings), the data root,
    the images (names, sizes and times) and the masks (their bytes)."""
    return output_key(list(rows["mask_path"]), ensemble.key, str(Path(data_root).resolve()),
                      rows["img"].tolist(), file_stats(rows["image_path"]), out_shape)


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
    predict: PredictConfig,
    data_root: str | Path,
    folds_path: str | Path,
    report_dir: str | Path,
    *,
    model: ModelPaths,
    checkpoints: Sequence[str | Path] | None = None,
    worst_k: int = 6,
    dist: DistInfo | None = None,
    progress: bool = True,
) -> EvalResult:
    """Out-of-fold Dice: each fold's validation images scored by that fold's model.

    ``checkpoints``: explicit files, each in a ``fold<K>`` folder; default: every
    ``<checkpoints>/<label>/fold<K>/best.pt`` of ``model``. Folds without a checkpoint are
    skipped.
    """
    dist = dist or DistInfo()
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
    engine = prepare_engine(predict, dist.device, announce=dist.is_main)
    all_scores, all_worst = [], []
    predicted, seconds = 0, 0.0  # full-resolution TTA throughput, for the benchmark table
    for fold, ckpt in by_fold.items():
        _, rows = fold_rows(index, folds, fold, folds_path,
                            "the data root (train/, train_masks/)")
        if rows.empty:
            continue
        ensemble = load_ensemble([ckpt], engine)
        check_ensemble(ensemble, rows, f"fold {fold} of {folds_path}", dist.is_main)
        key = fold_key(ensemble, data_root, rows, out_shape)
        cached = _load_cached(report_dir, fold, key)
        if cached is None:
            start = time.perf_counter()
            scores, worst = score_distributed(ensemble, rows, dist, out_shape, worst_k,
                                              f"fold {fold}" if progress else False)
            predicted, seconds = predicted + len(rows), seconds + time.perf_counter() - start
            if dist.is_main:
                _save_cached(report_dir, fold, key, scores, worst)
        else:
            scores, worst = cached
        all_scores.append(scores)
        all_worst.extend(worst)
    scores = pd.concat(all_scores, ignore_index=True).sort_values("img", ignore_index=True)
    return EvalResult(scores, sorted(all_worst)[:worst_k], summary("oof", model.label, engine, {
        "data_root": str(data_root), "folds_file": str(folds_path),
        **summarize_dice(scores), "checkpoints": {str(k): str(v) for k, v in by_fold.items()},
        "skipped_folds": [k for k in range(n_folds) if k not in by_fold],
        "images_per_s": predicted / seconds if seconds else None}))


def evaluate_all_images(
    predict: PredictConfig,
    label: str,
    data_root: str | Path,
    checkpoints: Sequence[str | Path],
    *,
    worst_k: int = 6,
    dist: DistInfo | None = None,
    progress: bool = True,
) -> EvalResult:
    """The ensemble of ``checkpoints`` on every labelled image of ``data_root``; refused when
    a model learnt from any of them."""
    dist = dist or DistInfo()
    index = labelled_index(data_root)
    out_shape = image_shape(index["image_path"].iloc[0])
    engine = prepare_engine(predict, dist.device, announce=dist.is_main)
    ensemble = load_ensemble(checkpoints, engine)
    check_ensemble(ensemble, index, f"the labelled images of {data_root}", dist.is_main)
    start = time.perf_counter()
    scores, worst = score_distributed(ensemble, index, dist, out_shape, worst_k,
                                      "evaluate" if progress else False)
    seconds = time.perf_counter() - start
    scores = scores.sort_values("img", ignore_index=True)
    return EvalResult(scores, worst, summary("all-images", label, engine, {
        "data_root": str(data_root), **summarize_dice(scores),
        "checkpoints": [str(c) for c in checkpoints],
        "images_per_s": len(scores) / seconds if seconds else None}))


def summary(mode: str, label: str, engine: Engine, fields: dict) -> CVSummary:
    """The summary record of an evaluation (checked against its schema)."""
    return build(CVSummary, {"mode": mode, "label": label, **fields,
                             "predict": engine.settings()}, f"the {mode} summary")
