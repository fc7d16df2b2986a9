"""Grouped folds: no car in two folds, every image once, balance, determinism, the rows each
fold trains and validates on, and clear errors."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from pipeline.config import FoldsConfig, default, load_config
from pipeline.data.layout import train_index
from pipeline.errors import PipelineError
from pipeline.folds.splits import (
    FOLD_COLUMNS,
    fold_rows,
    fold_summary,
    load_folds,
    make_folds,
    select_rows,
    split,
    stratified_group_folds,
    write_folds,
)

MAKES = ["Audi", "Ford", "Kia", "BMW"]


def fake_index(n_cars: int = 23, angles: int = 16) -> pd.DataFrame:
    rows = []
    for c in range(n_cars):
        car = f"{c:012x}"
        for a in range(1, angles + 1):
            rows.append({"img": f"{car}_{a:02d}.jpg", "car_id": car, "angle": a,
                         "make": MAKES[c % len(MAKES)]})
    return pd.DataFrame(rows)


def test_cars_stay_together_and_every_image_once():
    index = fake_index()
    folds = make_folds(index, default(FoldsConfig, n_folds=5, seed=1))
    assert sorted(folds["img"]) == sorted(index["img"])
    assert folds["img"].is_unique
    assert (folds.groupby("car_id")["fold"].nunique() == 1).all()
    assert set(folds["fold"]) == set(range(5))
    assert list(folds.columns) == FOLD_COLUMNS


def test_balanced_within_one_car():
    folds = make_folds(fake_index(23), default(FoldsConfig, n_folds=5, seed=3))
    counts = folds.groupby("fold").size()
    assert counts.max() - counts.min() <= 16


def test_stratified_by_make():
    folds = make_folds(fake_index(40), default(FoldsConfig, n_folds=5, seed=0, stratify="make"))
    per_fold = folds.drop_duplicates("car_id").groupby(["fold", "make"]).size().unstack()
    # 10 cars of each make over 5 folds: exactly 2 per fold when stratified.
    assert (per_fold == 2).all().all()


def random_groups(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows of 6-40 groups of 1-20 rows each, one to four strata, sometimes mixed within a
    group; 2-6 folds."""
    n_groups = int(rng.integers(6, 41))
    sizes = rng.integers(1, 21, n_groups)
    groups = np.repeat([f"car{g:03d}" for g in rng.permutation(n_groups)], sizes)
    labels = np.array(["Audi", "BMW", "Kia", "_rare"])[:int(rng.integers(1, 5))]
    strata = np.repeat(rng.choice(labels, n_groups), sizes)
    mixed = rng.random(len(strata)) < rng.choice([0.0, 0.2])
    strata[mixed] = rng.choice(labels, int(mixed.sum()))
    return strata, groups, int(rng.integers(2, min(6, n_groups) + 1))


def test_stratified_group_folds_equal_scikit_learns_fixed_splitter():
    # scikit-learn >= 1.8 is the independent reference (before 1.8 its shuffle mixed up the
    # groups' class counts); our own copy of the greedy must give its folds row for row.
    sklearn = pytest.importorskip("sklearn")
    if tuple(int(v) for v in sklearn.__version__.split(".")[:2]) < (1, 8):
        pytest.skip(f"scikit-learn {sklearn.__version__} < 1.8 shuffles StratifiedGroupKFold "
                    "wrongly: no reference")
    from sklearn.model_selection import StratifiedGroupKFold

    rng = np.random.default_rng(0)
    for case in range(60):
        strata, groups, n_folds = random_groups(rng)
        seed = int(rng.integers(0, 2**31))
        expected = np.full(len(strata), -1)
        splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():  # "the least populated class has only N members"
            warnings.simplefilter("ignore", UserWarning)
            for k, (_, val) in enumerate(splitter.split(strata, strata, groups)):
                expected[val] = k
        got = stratified_group_folds(strata, groups, n_folds, seed)
        assert np.array_equal(got, expected), f"case {case}: {n_folds} folds, seed {seed}"


def test_stratified_group_folds_keep_groups_whole_and_each_stratum_even():
    rng = np.random.default_rng(1)
    for _ in range(40):
        n_cars, n_folds = int(rng.integers(5, 60)), int(rng.integers(2, 6))
        n_folds = min(n_folds, n_cars)
        make = rng.choice(["Audi", "BMW", "Kia"], n_cars)
        groups = np.repeat([f"c{i}" for i in range(n_cars)], 16)
        strata = np.repeat(make, 16)
        fold = stratified_group_folds(strata, groups, n_folds, int(rng.integers(0, 1000)))
        cars = pd.DataFrame({"car": groups, "make": strata, "fold": fold}).drop_duplicates()
        assert cars["car"].is_unique  # one fold per car
        assert set(cars["fold"]) == set(range(n_folds))
        per_fold = cars.groupby(["make", "fold"]).size().unstack(fill_value=0)
        per_fold = per_fold.reindex(columns=range(n_folds), fill_value=0)
        # Equal-sized cars of one make each: every make is dealt out within one car per fold.
        assert (per_fold.max(axis=1) - per_fold.min(axis=1)).max() <= 1


def test_unknown_stratification_is_rejected():
    index = fake_index()
    with pytest.raises(PipelineError, match="must be make or none, got 'area'"):
        make_folds(index, default(FoldsConfig, n_folds=2, stratify="area"))


def test_same_seed_same_folds_different_seed_different():
    index = fake_index()
    a = make_folds(index, default(FoldsConfig, seed=7))
    b = make_folds(index.sample(frac=1, random_state=0), default(FoldsConfig, seed=7))
    c = make_folds(index, default(FoldsConfig, seed=8))
    pd.testing.assert_frame_equal(a, b)
    assert not a["fold"].equals(c["fold"])


def test_more_folds_than_cars_is_a_clear_error():
    with pytest.raises(PipelineError, match="larger than the number of cars"):
        make_folds(fake_index(3), default(FoldsConfig, n_folds=5))


def test_split_and_its_errors(tmp_path):
    folds = make_folds(fake_index(10), default(FoldsConfig, n_folds=5))
    train, val = split(folds, 2)
    assert len(train) + len(val) == len(folds) and not set(train) & set(val)
    all_train, none = split(folds, -1)
    assert len(all_train) == len(folds) and none == []
    with pytest.raises(PipelineError, match="fold 5 does not exist"):
        split(folds, 5)

    broken = folds.copy()
    broken.loc[0, "fold"] = (broken.loc[0, "fold"] + 1) % 5  # one angle moved to another fold
    path = write_folds(broken, tmp_path / "folds.csv")
    with pytest.raises(PipelineError, match="more than one fold"):
        load_folds(path)
    with pytest.raises(PipelineError, match="not found"):
        load_folds(tmp_path / "nope.csv")


def test_load_folds_rejects_a_file_without_the_columns(tmp_path):
    path = tmp_path / "folds.csv"
    path.write_text("img,fold\na.jpg,0\n")
    with pytest.raises(PipelineError, match=r"missing column\(s\) \['car_id'\]"):
        load_folds(path)


def test_fold_rows_gives_each_side_with_its_fold(tiny_data, tiny_folds):
    index, folds = train_index(tiny_data), load_folds(tiny_folds)
    train, val = fold_rows(index, folds, 0, tiny_folds, str(tiny_data))
    assert len(train) == len(val) == 32  # 2 of the 4 cars on each side
    assert set(val["fold"]) == {0} and set(train["fold"]) == {1}
    assert not set(train["car_id"]) & set(val["car_id"])
    assert {"image_path", "mask_path"} <= set(train.columns)
    assert val["img"].tolist() == folds.loc[folds["fold"] == 0, "img"].tolist()  # folds order
    everything, none = fold_rows(index, folds, -1, tiny_folds, str(tiny_data))
    assert len(everything) == 64 and sorted(set(everything["fold"])) == [0, 1]
    assert len(none) == 0


def test_folds_of_other_data_are_rejected(tiny_data, tmp_path):
    index = train_index(tiny_data)
    folds = make_folds(fake_index(4), default(FoldsConfig, n_folds=2, stratify="none"))
    path = tmp_path / "folds.csv"
    with pytest.raises(PipelineError, match="are not in .*the folds file belongs to other data"):
        fold_rows(index, folds, 0, path, str(tiny_data))
    imgs = index["img"].tolist()[:3][::-1]
    assert select_rows(index, imgs, path, str(tiny_data))["img"].tolist() == imgs


def test_the_summary_line(tiny_folds):
    assert fold_summary(load_folds(tiny_folds)) == "0: 2 cars/32 imgs, 1: 2 cars/32 imgs"


@pytest.mark.real_data
def test_real_cars_five_folds(real_root):
    folds = make_folds(train_index(real_root), default(FoldsConfig, n_folds=5))
    cars = folds.groupby("fold")["car_id"].nunique()
    assert cars.sum() == 97 and cars.max() - cars.min() <= 1


@pytest.mark.real_data
def test_committed_real_folds_are_remade_byte_for_byte(real_root, tmp_path):
    # Every real-data figure is measured on folds/real_folds.csv: the folds stage must write
    # that file again on any machine, whatever scikit-learn (if any) is installed.
    cfg = load_config([REPO / "configs/base.yaml", REPO / "configs/profiles/cpu_real.yaml"])
    out = write_folds(make_folds(train_index(real_root), cfg.folds), tmp_path / "folds.csv")
    assert out.read_bytes() == (REPO / "folds/real_folds.csv").read_bytes()
