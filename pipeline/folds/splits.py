"""Grouped, stratified K-fold splits (written by ``python -m pipeline.folds``) and the rows each
fold trains and validates on.

All 16 angles of a car share one fold (a car's angles are near-duplicates: splitting them would
leak the validation car into training and inflate CV Dice). Folds are balanced in image count
(within one car) and stratified by make from ``metadata.csv`` by the greedy of
scikit-learn's ``StratifiedGroupKFold`` (:func:`stratified_group_folds`, written here: the split
must not depend on the installed scikit-learn); the assignment is deterministic for a seed.

Output: ``folds/folds.csv`` with columns ``img, car_id, angle, make, fold``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.atomic import atomic_path
from pipeline.config import FoldsConfig
from pipeline.errors import PipelineError

FOLD_COLUMNS = ["img", "car_id", "angle", "make", "fold"]


def _strata(index: pd.DataFrame, stratify: str, n_folds: int) -> np.ndarray:
    """One label per image to stratify on; rare labels are pooled so every stratum can be split."""
    if stratify == "none":
        return np.zeros(len(index), dtype=int)
    if stratify != "make":
        raise PipelineError(f"folds.stratify must be make or none, got '{stratify}'")
    labels = index["make"].fillna("unknown").astype(str)
    cars_per_label = index.groupby(labels)["car_id"].nunique()
    rare = cars_per_label[cars_per_label < n_folds].index
    return np.where(labels.isin(rare), "_rare", labels)


def stratified_group_folds(strata: np.ndarray, groups: np.ndarray, n_folds: int,
                           seed: int) -> np.ndarray:
    """The fold (0..n_folds-1) of every row: rows of one group share a fold, and each stratum's
    rows spread over the folds in proportion.

    The greedy of scikit-learn's ``StratifiedGroupKFold(shuffle=True, random_state=seed)``, whose
    folds it reproduces for scikit-learn >= 1.8 (tested): the groups, in a seeded random order
    and then most uneven stratum mix first, each go to the fold that keeps every stratum's share
    most even over the folds. Written here because the split must be the same on every machine:
    before 1.8 that class shuffled the groups' stratum counts without their ids, so its folds
    differ by version and were not stratified. NumPy's legacy ``RandomState`` draws the order:
    its stream is frozen across NumPy versions.
    """
    _, stratum, stratum_rows = np.unique(strata, return_inverse=True, return_counts=True)
    _, group = np.unique(groups, return_inverse=True)
    group_counts = np.zeros((group.max() + 1, len(stratum_rows)))
    np.add.at(group_counts, (group, stratum), 1)
    order = np.arange(len(group_counts))
    np.random.RandomState(seed).shuffle(order)
    # A stable sort keeps the random order among groups of equally uneven mix.
    order = order[np.argsort(-group_counts[order].std(axis=1), kind="stable")]
    fold_counts = np.zeros((n_folds, len(stratum_rows)))
    fold_of_group = np.empty(len(group_counts), dtype=int)
    for g in order:
        fold = _best_fold(fold_counts, stratum_rows, group_counts[g])
        fold_counts[fold] += group_counts[g]
        fold_of_group[g] = fold
    return fold_of_group[group]


def _best_fold(fold_counts: np.ndarray, stratum_rows: np.ndarray, adding: np.ndarray) -> int:
    """The fold that, given the rows ``adding``, leaves the strata most evenly shared: the
    lowest mean over strata of the standard deviation of each fold's share of the stratum.
    Near-equal spreads (``np.isclose``) go to the fold with fewer rows, then to the first."""
    best, best_spread, best_rows = 0, np.inf, np.inf
    for fold in range(len(fold_counts)):
        trial = fold_counts.copy()
        trial[fold] += adding
        spread = np.std(trial / stratum_rows, axis=0).mean()
        rows = fold_counts[fold].sum()
        if spread < best_spread or (np.isclose(spread, best_spread) and rows < best_rows):
            best, best_spread, best_rows = fold, spread, rows
    return best


def make_folds(index: pd.DataFrame, cfg: FoldsConfig) -> pd.DataFrame:
    """Assign a fold to every image of ``index`` (columns img, car_id, angle, make[, area]).

    Cars are shuffled with ``cfg.seed`` before splitting, so a different seed gives a different
    but equally balanced split.
    """
    n_cars = index["car_id"].nunique()
    if cfg.n_folds < 2:
        raise PipelineError(f"folds.n_folds must be at least 2, got {cfg.n_folds}")
    if cfg.n_folds > n_cars:
        raise PipelineError(
            f"folds.n_folds={cfg.n_folds} is larger than the number of cars ({n_cars}); "
            f"use at most {n_cars} folds or add cars"
        )
    # Shuffle whole cars (not images): the splitter below sees a seed-dependent row order.
    rng = np.random.default_rng(cfg.seed)
    cars = index["car_id"].unique()
    order = {car: i for i, car in enumerate(rng.permutation(cars))}
    shuffled = index.assign(_order=index["car_id"].map(order)).sort_values(["_order", "angle"])
    shuffled = shuffled.reset_index(drop=True)

    strata = _strata(shuffled, cfg.stratify, cfg.n_folds)
    fold = stratified_group_folds(strata, shuffled["car_id"].to_numpy(), cfg.n_folds, cfg.seed)
    out = shuffled.assign(fold=fold)
    out = out.sort_values("img").reset_index(drop=True)
    if "make" not in out:
        out["make"] = "unknown"
    return out[FOLD_COLUMNS]


def load_folds(path: str | Path) -> pd.DataFrame:
    """Read ``folds.csv`` and check it: required columns, one fold per car."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: folds file not found; run `python -m pipeline.folds` first")
    try:
        folds = pd.read_csv(path, dtype={"car_id": str, "img": str})
    except Exception as exc:  # noqa: BLE001 -- pandas raises many types for a broken CSV
        raise PipelineError(f"{path}: cannot be parsed as CSV ({exc})") from None
    missing = {"img", "car_id", "fold"} - set(folds.columns)
    if missing:
        raise PipelineError(f"{path}: missing column(s) {sorted(missing)}; re-run pipeline.folds")
    shared = folds.groupby("car_id")["fold"].nunique()
    if (shared > 1).any():
        raise PipelineError(
            f"{path}: car {shared[shared > 1].index[0]} appears in more than one fold; "
            "its angles would leak into validation. Re-run pipeline.folds"
        )
    return folds


def split(folds: pd.DataFrame, fold: int) -> tuple[list[str], list[str]]:
    """(train images, validation images) for ``fold``; ``fold == -1`` trains on every image and
    validates on none."""
    n = int(folds["fold"].max()) + 1
    if fold == -1:
        return folds["img"].tolist(), []
    if not 0 <= fold < n:
        raise PipelineError(f"fold {fold} does not exist: the folds file has folds 0..{n - 1} "
                            "(or -1 for all images)")
    is_val = folds["fold"] == fold
    train, val = folds.loc[~is_val], folds.loc[is_val]
    leaked = set(train["car_id"]) & set(val["car_id"])
    if leaked:
        raise PipelineError(
            f"fold {fold}: car {min(leaked)} is in both train and validation; "
            "re-run pipeline.folds"
        )
    return train["img"].tolist(), val["img"].tolist()


def select_rows(index: pd.DataFrame, imgs: list[str], folds_path: Path, root: str) -> pd.DataFrame:
    """Rows of the train index for ``imgs``, in that order; every image must exist."""
    rows = index.set_index("img")
    missing = [img for img in imgs if img not in rows.index]
    if missing:
        raise PipelineError(
            f"{folds_path}: {len(missing)} image(s) (e.g. {missing[0]}) are not in {root}; "
            "the folds file belongs to other data: re-run `python -m pipeline.folds`"
        )
    return rows.loc[imgs].reset_index()


def fold_rows(index: pd.DataFrame, folds: pd.DataFrame, fold: int, folds_path: Path,
              root: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, validation rows) of the train ``index`` for ``fold``, each with its
    ``fold`` column; :func:`split` refuses a car on both sides."""
    train, val = split(folds, fold)
    fold_of = folds.set_index("img")["fold"]
    return tuple(select_rows(index, imgs, folds_path, root).assign(
        fold=lambda r: r["img"].map(fold_of).astype(int)) for imgs in (train, val))


def check_unseen(trained_on: Collection[str] | None, held_out: Sequence[str],
                 weights: str | Path, why: str) -> str | None:
    """Refuse, in one line, weights whose ``trained_on`` (the images they learnt from) includes
    any of ``held_out`` (the images about to be scored, or validated on): ``why`` says what
    holds them out. Returns a warning for weights that do not record what they learnt from."""
    if trained_on is None:
        return (f"{weights}: records no training images (written by an older version); "
                f"cannot check that it never saw {why}")
    seen = sorted(set(held_out) & set(trained_on))
    if seen:
        raise PipelineError(
            f"{weights}: learnt from {len(seen)} of the {len(held_out)} images of {why} (e.g. "
            f"{seen[0]}), so it would be scored on its own training data; train it on this "
            "split (the folds file may have changed since), or use weights that never saw them")
    return None


def write_folds(folds: pd.DataFrame, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        folds.to_csv(tmp, index=False)
    return Path(path)




def fold_summary(folds: pd.DataFrame) -> str:
    """``"0: 20 cars/320 imgs, 1: ..."``: the one line the folds stage prints."""
    sizes = folds.groupby("fold").agg(images=("img", "size"), cars=("car_id", "nunique"))
    return ", ".join(f"{k}: {r.cars} cars/{r.images} imgs" for k, r in sizes.iterrows())
