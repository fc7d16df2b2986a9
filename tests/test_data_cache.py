"""The resized-image cache: built once per size and source, matching its sources, rebuilt when a
source, the data root or the resize code changes, a damaged cached file rebuilt when read, and
one-line errors for an unreadable source."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data import cache as cache_mod
from pipeline.data.cache import (
    build_cache,
    cache_item,
    cache_key,
    cache_paths,
    read_cached,
    records_of,
)
from pipeline.data.io import read_image, read_mask, write_image
from pipeline.data.layout import train_index
from pipeline.data.transforms import resize_image, resize_mask
from pipeline.errors import PipelineError


@pytest.fixture()
def rows(tiny_data):
    return train_index(tiny_data).head(6)


@pytest.fixture()
def own_rows(tiny_data, tmp_path):
    """Rows of a private copy of the tiny data (times kept, like ``cp -a``), free to damage."""
    shutil.copytree(tiny_data, tmp_path / "data")
    return train_index(tmp_path / "data").head(6)


def paths_of(rec, height: int, width: int, cache: Path) -> tuple[Path, Path]:
    key = cache_key(rec["image_path"], rec["mask_path"])
    return cache_paths(rec["img"], height, width, cache, key)


def keep_time(path: Path, stat: os.stat_result) -> None:
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_cache_builds_once_and_matches_sources(rows, tmp_path):
    cache = tmp_path / "cache"
    assert build_cache(rows, 32, 48, cache, workers=2, progress=False) == len(rows)
    for rec in rows.to_dict("records"):
        image_png, mask_png = paths_of(rec, 32, 48, cache)
        key = cache_key(rec["image_path"], rec["mask_path"])
        assert len(key) == 10
        assert image_png.parent == cache / f"32x48-{key}" / "images"
        assert mask_png.parent == cache / f"32x48-{key}" / "masks"
        image, mask = read_image(image_png), read_mask(mask_png)
        assert image.shape == (32, 48, 3) and mask.shape == (32, 48)
        source = cv2.resize(read_image(rec["image_path"]), (48, 32), interpolation=cv2.INTER_AREA)
        assert np.array_equal(image, source)  # PNG is lossless
        assert np.array_equal(mask, resize_mask(read_mask(rec["mask_path"]), 32, 48))
    assert build_cache(rows, 32, 48, cache, progress=False) == 0  # reused
    # another size is another cache; the first one is untouched
    assert build_cache(rows, 16, 24, cache, progress=False) == len(rows)
    assert build_cache(rows, 32, 48, cache, progress=False) == 0


def test_cache_rebuilds_an_item_whose_source_changed(own_rows, tmp_path):
    cache = tmp_path / "cache"
    build_cache(own_rows, 32, 48, cache, progress=False)
    rec = own_rows.iloc[0]
    source = Path(rec["image_path"])
    before = source.stat()
    write_image(source, np.zeros((64, 96, 3), np.uint8))  # a new, black source
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    assert build_cache(own_rows, 32, 48, cache, progress=False) == 1
    assert read_image(paths_of(rec, 32, 48, cache)[0]).max() == 0


def test_another_root_copied_with_its_times_gets_its_own_cache(rows, own_rows, tmp_path):
    """``cp -a`` keeps names and times: with the old (size, name, time) key the copy was served
    the first root's images. Here the copy's images differ, its times do not."""
    cache = tmp_path / "cache"
    build_cache(rows, 32, 48, cache, progress=False)
    first = paths_of(rows.iloc[0], 32, 48, cache)[0]
    for rec in own_rows.to_dict("records"):
        source = Path(rec["image_path"])
        stat = source.stat()
        write_image(source, np.full((64, 96, 3), 9, np.uint8))
        keep_time(source, stat)
    assert build_cache(own_rows, 32, 48, cache, progress=False) == len(own_rows)
    copy_png = paths_of(own_rows.iloc[0], 32, 48, cache)[0]
    assert copy_png.parent.parent != first.parent.parent
    assert np.array_equal(read_image(copy_png), np.full((32, 48, 3), 9, np.uint8))
    # the first root's folder of this size is stale now and removed; other sizes stay
    assert not first.exists()
    assert [p.name for p in cache.iterdir()] == [copy_png.parent.parent.name]


def test_changed_resize_code_gets_a_new_cache(rows, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    build_cache(rows, 32, 48, cache, progress=False)
    old = paths_of(rows.iloc[0], 32, 48, cache)[0]
    (cache / "32x48").mkdir()  # the unkeyed folder of older versions: stale too

    def nearest(image, height, width):
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST)

    monkeypatch.setattr(cache_mod, "resize_image", nearest)
    cache_mod.resize_version.cache_clear()
    cache_mod._folders_key.cache_clear()
    try:
        assert build_cache(rows, 32, 48, cache, progress=False) == len(rows)
        new = paths_of(rows.iloc[0], 32, 48, cache)[0]
        assert new != old and not old.exists() and not (cache / "32x48").exists()
        assert np.array_equal(read_image(new), nearest(read_image(rows.iloc[0]["image_path"]),
                                                       32, 48))
    finally:
        monkeypatch.undo()
        cache_mod.resize_version.cache_clear()
        cache_mod._folders_key.cache_clear()


def test_cache_item_stamps_each_file_with_its_source_time(rows, tmp_path):
    rec = rows.iloc[1]
    assert cache_item(rec["image_path"], rec["mask_path"], 16, 24, tmp_path)
    image_png, mask_png = paths_of(rec, 16, 24, tmp_path)
    assert image_png.stat().st_mtime_ns == Path(rec["image_path"]).stat().st_mtime_ns
    assert mask_png.stat().st_mtime_ns == Path(rec["mask_path"]).stat().st_mtime_ns
    assert not cache_item(rec["image_path"], rec["mask_path"], 16, 24, tmp_path)  # fresh
    assert not list(image_png.parent.glob(".*.tmp"))  # written atomically


@pytest.mark.parametrize("which", ["image", "mask"])
def test_a_damaged_cached_file_is_rebuilt_when_read(rows, tmp_path, which):
    """Truncated by a full disk or a killed copy, its time kept: the next read rebuilds it."""
    cache = tmp_path / "cache"
    build_cache(rows, 32, 48, cache, progress=False)
    rec = rows.iloc[2]
    image_png, mask_png = paths_of(rec, 32, 48, cache)
    damaged = image_png if which == "image" else mask_png
    stat = damaged.stat()
    damaged.write_bytes(damaged.read_bytes()[: stat.st_size // 2])
    keep_time(damaged, stat)
    image, mask = read_cached(rec["image_path"], rec["mask_path"], 32, 48, cache)
    assert np.array_equal(image, resize_image(read_image(rec["image_path"]), 32, 48))
    assert np.array_equal(mask, resize_mask(read_mask(rec["mask_path"]), 32, 48))
    assert np.array_equal(read_image(image_png), image)  # whole again on disk
    assert np.array_equal(read_mask(mask_png), mask)


def test_read_cached_builds_a_missing_item(rows, tmp_path):
    rec = rows.iloc[3]
    image, _ = read_cached(rec["image_path"], rec["mask_path"], 16, 24, tmp_path)
    assert np.array_equal(read_image(paths_of(rec, 16, 24, tmp_path)[0]), image)


def test_a_damaged_cached_file_of_a_damaged_source_is_one_line(own_rows, tmp_path):
    cache = tmp_path / "cache"
    build_cache(own_rows, 32, 48, cache, progress=False)
    rec = own_rows.iloc[0]
    for path in (paths_of(rec, 32, 48, cache)[0], Path(rec["image_path"])):
        stat = path.stat()
        path.write_bytes(path.read_bytes()[:50])
        keep_time(path, stat)
    with pytest.raises(PipelineError) as info:
        read_cached(rec["image_path"], rec["mask_path"], 32, 48, cache)
    assert rec["image_path"] in str(info.value) and "\n" not in str(info.value)


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
