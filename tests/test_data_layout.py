"""Kaggle layout: names, the train index and the test names."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.data import layout as layout_mod
from pipeline.data.layout import Layout, image_name, mask_name, parse_name, train_index
from pipeline.errors import PipelineError


def test_names_round_trip():
    assert parse_name("00087a6bd4dc_03.jpg") == ("00087a6bd4dc", 3)
    assert mask_name("00087a6bd4dc_03.jpg") == "00087a6bd4dc_03_mask.gif"
    assert image_name(mask_name("00087a6bd4dc_16.jpg")) == "00087a6bd4dc_16.jpg"
    for bad in ("00087a6bd4dc_3.jpg", "00087A6BD4DC_03.jpg", "car_01.jpg", "00087a6bd4dc_03.png"):
        with pytest.raises(PipelineError, match=bad.replace(".", r"\.")):
            parse_name(bad)

def test_train_index_and_test_names(tiny_data):
    index = train_index(tiny_data)
    assert list(index.columns) == [
        "img",
        "car_id",
        "angle",
        "image_path",
        "mask_path",
        "make",
        "model",
    ]
    assert len(index) == 64 and index["img"].is_monotonic_increasing
    assert (
        index.groupby("car_id")["angle"].apply(sorted).map(lambda a: a == list(range(1, 17))).all()
    )
    assert all(Path(p).is_file() for p in index["mask_path"])
    assert (index["make"] != "unknown").all()
    names = layout_mod.submission_names(tiny_data)
    assert len(names) == 32
    assert names == sorted(p.name for p in Layout(tiny_data).test_dir.iterdir())
