"""A pseudo-label folder as training rows: only its kept images, the columns of a fold's
training rows, paths inside the folder, fold -1; refused when unfinished or when a name is
also a labelled training image of the fold."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config

from pipeline.data.cache import build_cache, read_cached
from pipeline.data.io import read_mask
from pipeline.data.layout import Layout
from pipeline.data.pseudo import PSEUDO_FOLD, pseudo_rows, read_pseudo_report
from pipeline.data.splits import load_folds, split
from pipeline.data.transforms import resize_mask
from pipeline.errors import PipelineError
from pipeline.pseudo_labels.make import make_pseudo_labels, unlabelled_images
from pipeline.training.loaders import run_rows


@pytest.fixture(scope="module")
def pseudo_root(tiny_data, tiny_cache, tiny_trained, tmp_path_factory) -> Path:
    """A pseudo-label folder of the tiny test photos that keeps some and drops others."""
    cfg = tiny_config(tiny_data, tiny_cache)
    out = tmp_path_factory.mktemp("pseudo_rows") / "pseudo"
    photos = unlabelled_images(Layout(tiny_data).test_dir)
    make_pseudo_labels(cfg, [tiny_trained.best], photos, out, progress=False)
    fractions = sorted(e["uncertain_fraction"] for e in read_pseudo_report(out)["images"].values()
                       if e["uncertain_fraction"] is not None)
    cfg = dataclasses.replace(cfg, pseudo=dataclasses.replace(
        cfg.pseudo, max_uncertain=fractions[len(fractions) // 2]))
    make_pseudo_labels(cfg, [tiny_trained.best], photos, out, progress=False)
    return out


def test_rows_are_the_kept_images_with_the_columns_of_a_fold(pseudo_root, tiny_data, tiny_cache,
                                                              tiny_folds):
    report = read_pseudo_report(pseudo_root)
    kept = sorted(n for n, e in report["images"].items() if e["kept"])
    assert 0 < len(kept) < len(report["images"])
    rows = pseudo_rows(pseudo_root)
    assert rows["img"].tolist() == kept
    train, _ = run_rows(tiny_config(tiny_data, tiny_cache), 0, tiny_folds)
    assert list(rows.columns) == list(train.columns)
    assert (rows["fold"] == PSEUDO_FOLD).all()
    layout = Layout(pseudo_root)
    assert rows["image_path"].tolist() == [str(layout.image_path(n)) for n in kept]
    assert rows["mask_path"].tolist() == [str(layout.mask_path(n)) for n in kept]
    # the test photos are no labelled training image of the fold
    assert len(pseudo_rows(pseudo_root, training=train["img"])) == len(kept)


def test_refused_when_unfinished_or_already_a_training_image(pseudo_root, tmp_path):
    kept = pseudo_rows(pseudo_root)["img"].tolist()
    with pytest.raises(PipelineError, match="also labelled training images") as err:
        pseudo_rows(pseudo_root, training=["x.jpg", kept[0]])
    assert "\n" not in str(err.value)
    with pytest.raises(PipelineError, match="not a finished pseudo-label folder"):
        pseudo_rows(tmp_path)


def test_a_held_out_photo_keeps_its_real_mask_in_validation(tiny_data, tiny_cache, tiny_folds,
                                                            tiny_trained, tmp_path):
    # The transductive check: fold 1's held-out photos pseudo-labelled and added to fold 1's
    # training rows; validation must still read the real masks (the cache is keyed by folder).
    cfg = tiny_config(tiny_data, tiny_cache)
    cfg = dataclasses.replace(cfg, pseudo=dataclasses.replace(cfg.pseudo, max_uncertain=1e9))
    held_out = split(load_folds(tiny_folds), 1)[1]
    photos = unlabelled_images(Layout(tiny_data).train_dir, held_out)
    make_pseudo_labels(cfg, [tiny_trained.best], photos, tmp_path / "p", progress=False)
    train, val = run_rows(cfg, 1, tiny_folds)
    extra = pseudo_rows(tmp_path / "p", training=train["img"])
    assert set(extra["img"]) <= set(val["img"]) and len(extra) > 0
    h, w, cache = cfg.train.height, cfg.train.width, tmp_path / "cache"
    build_cache(pd.concat([val, extra]), h, w, cache, workers=1, progress=False)
    differ = 0
    for rows in (val, extra):
        for rec in rows[rows["img"].isin(extra["img"])].to_dict("records"):
            _, cached = read_cached(rec["image_path"], rec["mask_path"], h, w, cache)
            assert np.array_equal(cached, resize_mask(read_mask(rec["mask_path"]), h, w))
            differ += rows is extra and not np.array_equal(
                read_mask(rec["mask_path"]), read_mask(Layout(tiny_data).mask_path(rec["img"])))
    assert differ > 0  # the predicted masks are not the real ones, and each read its own
