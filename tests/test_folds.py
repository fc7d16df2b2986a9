"""Grouped folds: no car in two folds, every image once, balance, determinism, clear errors."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.config import FoldsConfig
from pipeline.errors import PipelineError
from pipeline.folds import app, load_folds, make_folds, split, write_folds

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
    folds = make_folds(index, FoldsConfig(n_folds=5, seed=1))
    assert sorted(folds["img"]) == sorted(index["img"])
    assert folds["img"].is_unique
    assert (folds.groupby("car_id")["fold"].nunique() == 1).all()
    assert set(folds["fold"]) == set(range(5))


def test_balanced_within_one_car():
    folds = make_folds(fake_index(23), FoldsConfig(n_folds=5, seed=3))
    counts = folds.groupby("fold").size()
    assert counts.max() - counts.min() <= 16


def test_stratified_by_make():
    folds = make_folds(fake_index(40), FoldsConfig(n_folds=5, seed=0, stratify="make"))
    per_fold = folds.drop_duplicates("car_id").groupby(["fold", "make"]).size().unstack()
    # 10 cars of each make over 5 folds: exactly 2 per fold when stratified.
    assert (per_fold == 2).all().all()


def test_same_seed_same_folds_different_seed_different():
    index = fake_index()
    a = make_folds(index, FoldsConfig(seed=7))
    b = make_folds(index.sample(frac=1, random_state=0), FoldsConfig(seed=7))
    c = make_folds(index, FoldsConfig(seed=8))
    pd.testing.assert_frame_equal(a, b)
    assert not a["fold"].equals(c["fold"])


def test_more_folds_than_cars_is_a_clear_error():
    with pytest.raises(PipelineError, match="larger than the number of cars"):
        make_folds(fake_index(3), FoldsConfig(n_folds=5))


def test_split_and_its_errors(tmp_path):
    folds = make_folds(fake_index(10), FoldsConfig(n_folds=5))
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


def test_cli_on_tiny_data(tiny_data, tmp_path):
    out = tmp_path / "folds.csv"
    result = CliRunner().invoke(app, ["--out", str(out), "--data-root", str(tiny_data),
                                      "folds.n_folds=2"])
    assert result.exit_code == 0, result.output
    folds = load_folds(out)
    assert len(folds) == 4 * 16 and folds["fold"].nunique() == 2
    bad = CliRunner().invoke(app, ["--out", str(out), "--data-root", str(tiny_data),
                                   "folds.n_folds=9"])
    assert bad.exit_code == 1 and "larger than the number of cars" in bad.output


@pytest.mark.real_data
def test_real_cars_five_folds(real_root):
    from pipeline.data.layout import train_index

    folds = make_folds(train_index(real_root), FoldsConfig(n_folds=5))
    cars = folds.groupby("fold")["car_id"].nunique()
    assert cars.sum() == 97 and cars.max() - cars.min() <= 1
