"""Preprocessing, the resized-image cache, augmentation and the training dataset."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.config import TrainConfig
from pipeline.data.dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegmentationDataset,
    build_cache,
    build_transform,
    cache_paths,
    normalize,
    resize_mask,
)
from pipeline.data.io import read_image, read_mask, write_image, write_mask_gif
from pipeline.data.layout import train_index
from pipeline.errors import PipelineError


@pytest.fixture()
def rows(tiny_data):
    return train_index(tiny_data).head(6)


def test_normalize_matches_torchvision_convention():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    x = normalize(image)
    assert x.shape == (3, 5, 7) and x.dtype == torch.float32
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    reference = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(x, reference, rtol=1e-5, atol=1e-5)


def test_resize_mask_keeps_pixels_at_least_half_covered():
    mask = np.zeros((4, 4), np.uint8)
    mask[:2, :2] = 1  # top-left block: fully covered
    mask[2, 2:] = 1  # bottom-right block: half covered
    mask[0, 2] = 1  # top-right block: a quarter covered
    out = resize_mask(mask, 2, 2)
    assert out.tolist() == [[1, 0], [0, 1]]
    assert out.dtype == np.uint8


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


def test_unreadable_image_is_one_line_naming_the_file(rows, tmp_path):
    bad = tmp_path / "train" / Path(rows.iloc[0]["image_path"]).name
    bad.parent.mkdir()
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    broken = rows.copy()
    broken.loc[broken.index[0], "image_path"] = str(bad)
    with pytest.raises(PipelineError) as info:
        build_cache(broken, 32, 48, tmp_path / "cache", progress=False)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_row_without_mask_is_rejected(rows):
    broken = rows.copy()
    broken.loc[broken.index[1], "mask_path"] = ""
    with pytest.raises(PipelineError, match="no mask"):
        SegmentationDataset(broken, 32, 48)


def test_dataset_items_cached_and_uncached_agree(rows, tmp_path):
    build_cache(rows, 32, 48, tmp_path, progress=False)
    cached = SegmentationDataset(rows, 32, 48, cache_dir=tmp_path)
    direct = SegmentationDataset(rows, 32, 48)
    assert len(cached) == len(rows)
    for i in range(len(rows)):
        (x1, y1), (x2, y2) = cached[i], direct[i]
        assert x1.shape == (3, 32, 48) and x1.dtype == torch.float32
        assert y1.shape == (1, 32, 48) and set(y1.unique().tolist()) <= {0.0, 1.0}
        torch.testing.assert_close(x1, x2)
        torch.testing.assert_close(y1, y2)
    assert sum(float(cached[i][1].mean()) for i in range(len(rows))) > 0  # masks hold a car


def test_full_res_returns_the_source_mask(rows, tmp_path):
    ds = SegmentationDataset(rows, 32, 48, full_res=True)
    _, _, full = ds[0]
    assert full.shape == (64, 96) and full.dtype == torch.uint8
    assert np.array_equal(full.numpy(), read_mask(rows.iloc[0]["mask_path"]))


def test_augmentation_is_seeded_per_epoch_and_image(rows, tmp_path):
    ds = SegmentationDataset(rows, 32, 48, build_transform(TrainConfig()), seed=3)
    a, b = ds[0], ds[0]
    torch.testing.assert_close(a[0], b[0])  # same (seed, epoch, index): same sample
    outputs = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        outputs.append(ds[0][0])
    assert any(not torch.equal(outputs[0], o) for o in outputs[1:])
    ds.set_epoch(0)
    torch.testing.assert_close(ds[0][0], outputs[0])  # history does not matter


def test_augmentation_keeps_mask_aligned_with_image(tmp_path):
    # an image whose pixels encode its mask: any misalignment shows as disagreement
    rng = np.random.default_rng(0)
    mask = np.zeros((48, 64), np.uint8)
    cv2.ellipse(mask, (32, 26), (20, 12), 15, 0, 360, 1, -1)
    image = np.repeat(mask[..., None] * 200 + 20, 3, axis=2).astype(np.uint8)
    write_image(tmp_path / "a.png", image)
    write_mask_gif(tmp_path / "a_mask.gif", mask)
    cfg = TrainConfig(aug_hflip=1.0, aug_affine=1.0, aug_shift=0.1, aug_scale=0.2,
                      aug_rotate=15.0, aug_color=0.0)
    ds = SegmentationDataset([{"image_path": tmp_path / "a.png", "mask_path": tmp_path /
                               "a_mask.gif"}], 48, 64, build_transform(cfg), seed=rng.integers(9))
    moved = 0
    for epoch in range(5):
        ds.set_epoch(epoch)
        x, y = ds[0]
        from_image = (x[0] > x[0].min() + 0.5 * (x[0].max() - x[0].min())).float()
        assert (from_image == y[0]).float().mean() > 0.97
        moved += int((y[0].numpy() != mask).mean() > 0.01)
    assert moved >= 4  # the transform really moved the mask


def test_no_augmentation_when_disabled():
    assert build_transform(TrainConfig(augment=False)) is None
