"""The resized-image cache: built once per size, matching its sources, rebuilt when a source
changes, and one-line errors for an unreadable image."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data.cache import build_cache, cache_item, cache_paths, records_of
from pipeline.data.io import read_image, read_mask, write_image
from pipeline.data.layout import train_index
from pipeline.data.transforms import resize_mask
from pipeline.errors import PipelineError


@pytest.fixture()
def rows(tiny_data):
    return train_index(tiny_data).head(6)


def test_cache_builds_once_and_matches_sources(rows, tmp_path):
    cache = tmp_path / "cache"
    assert build_cache(rows, 32, 48, cache, workers=2, progress=False) == len(rows)
    for rec in rows.to_dict("records"):
        image_png, mask_png = cache_paths(rec["img"], 32, 48, cache)
        assert image_png.parent == cache / "32x48" / "images"
        assert mask_png.parent == cache / "32x48" / "masks"
        image, mask = read_image(image_png), read_mask(mask_png)
        assert image.shape == (32, 48, 3) and mask.shape == (32, 48)
        source = cv2.resize(read_image(rec["image_path"]), (48, 32), interpolation=cv2.INTER_AREA)
        assert np.array_equal(image, source)  # PNG is lossless
        assert np.array_equal(mask, resize_mask(read_mask(rec["mask_path"]), 32, 48))
    assert build_cache(rows, 32, 48, cache, progress=False) == 0  # reused
    # another size is another cache; the first one is untouched
    assert build_cache(rows, 16, 24, cache, progress=False) == len(rows)
    assert build_cache(rows, 32, 48, cache, progress=False) == 0


def test_cache_rebuilds_an_item_whose_source_changed(rows, tmp_path):
    cache = tmp_path / "cache"
    build_cache(rows, 32, 48, cache, progress=False)
    rec = rows.iloc[0]
    source = Path(rec["image_path"])
    copy = tmp_path / "data" / "train" / source.name
    copy.parent.mkdir(parents=True)
    write_image(copy, np.zeros((64, 96, 3), np.uint8))  # a new, black source
    os.utime(copy, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    changed = rows.copy()
    changed.loc[changed.index[0], "image_path"] = str(copy)
    assert build_cache(changed, 32, 48, cache, progress=False) == 1
    assert read_image(cache_paths(rec["img"], 32, 48, cache)[0]).max() == 0


def test_cache_item_stamps_each_file_with_its_source_time(rows, tmp_path):
    rec = rows.iloc[1]
    assert cache_item(rec["image_path"], rec["mask_path"], 16, 24, tmp_path)
    image_png, mask_png = cache_paths(rec["img"], 16, 24, tmp_path)
    assert image_png.stat().st_mtime_ns == Path(rec["image_path"]).stat().st_mtime_ns
    assert mask_png.stat().st_mtime_ns == Path(rec["mask_path"]).stat().st_mtime_ns
    assert not cache_item(rec["image_path"], rec["mask_path"], 16, 24, tmp_path)  # fresh
    assert not list(image_png.parent.glob(".*.tmp"))  # written atomically


def test_unreadable_image_is_one_line_naming_the_file(rows, tmp_path):
    bad = tmp_path / "train" / Path(rows.iloc[0]["image_path"]).name
    bad.parent.mkdir()
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    broken = rows.copy()
    broken.loc[broken.index[0], "image_path"] = str(bad)
    with pytest.raises(PipelineError) as info:
        build_cache(broken, 32, 48, tmp_path / "cache", progress=False)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_records_need_a_mask_each(rows):
    records = records_of(rows)
    assert len(records) == len(rows) and records[0]["img"] == rows.iloc[0]["img"]
    assert records_of([{"image_path": "a.jpg", "mask_path": "a_mask.gif"}])[0]["image_path"] \
        == "a.jpg"
    with pytest.raises(PipelineError, match="a.jpg: no mask in train_masks/"):
        records_of([{"image_path": "a.jpg", "mask_path": ""}])
