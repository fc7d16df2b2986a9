"""The training dataset and its augmentations: cached and uncached items agree, samples are uint8
(normalised later, on the device), full-resolution masks, per-(seed, epoch, image) augmentation
that keeps the mask aligned, random crops."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from pipeline.config import TrainConfig, default
from pipeline.data.cache import build_cache
from pipeline.data.dataset import SegmentationDataset, build_transform, crop_size
from pipeline.data.io import read_image, read_mask, write_image, write_mask_gif
from pipeline.data.layout import train_index
from pipeline.data.transforms import resize_image, resize_mask
from pipeline.errors import PipelineError


@pytest.fixture()
def rows(tiny_data):
    return train_index(tiny_data).head(6)


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
        assert x1.shape == (32, 48, 3) and x1.dtype == torch.uint8
        assert y1.shape == (32, 48) and y1.dtype == torch.uint8
        assert set(y1.unique().tolist()) <= {0, 1}
        torch.testing.assert_close(x1, x2)
        torch.testing.assert_close(y1, y2)
    assert sum(float(cached[i][1].float().mean()) for i in range(len(rows))) > 0  # a car


def test_items_are_the_resized_source_without_augmentation(rows):
    # the uint8 sample is exactly the shared resize of the source: nothing is normalised in
    # the worker (the device does it, pipeline.train.loop.to_input)
    x, y = SegmentationDataset(rows, 32, 48)[2]
    rec = rows.iloc[2]
    assert np.array_equal(x.numpy(), resize_image(read_image(rec["image_path"]), 32, 48))
    assert np.array_equal(y.numpy(), resize_mask(read_mask(rec["mask_path"]), 32, 48))


def test_full_res_returns_the_source_mask(rows, tmp_path):
    ds = SegmentationDataset(rows, 32, 48, full_res=True)
    _, _, full = ds[0]
    assert full.shape == (64, 96) and full.dtype == torch.uint8
    assert np.array_equal(full.numpy(), read_mask(rows.iloc[0]["mask_path"]))


def test_augmentation_is_seeded_per_epoch_and_image(rows, tmp_path):
    ds = SegmentationDataset(rows, 32, 48, build_transform(default(TrainConfig)), seed=3)
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
    cfg = default(TrainConfig, aug_hflip=1.0, aug_affine=1.0, aug_shift=0.1, aug_scale=0.2,
                      aug_rotate=15.0, aug_color=0.0)
    ds = SegmentationDataset([{"image_path": tmp_path / "a.png", "mask_path": tmp_path /
                               "a_mask.gif"}], 48, 64, build_transform(cfg), seed=rng.integers(9))
    moved = 0
    for epoch in range(5):
        ds.set_epoch(epoch)
        x, y = ds[0]
        red = x[..., 0].float()
        from_image = (red > red.min() + 0.5 * (red.max() - red.min())).to(torch.uint8)
        assert (from_image == y).float().mean() > 0.97
        moved += int((y.numpy() != mask).mean() > 0.01)
    assert moved >= 4  # the transform really moved the mask


def test_no_augmentation_when_disabled():
    assert build_transform(default(TrainConfig, augment=False)) is None


@pytest.mark.parametrize("augment", [True, False])
def test_crop_cuts_an_aligned_window_of_the_resized_pair(tmp_path, augment):
    # pixels encode their own (row, col): a crop must be one contiguous window of the resized
    # image, the same window of the mask, and move between epochs
    h, w = 40, 60
    rows_, cols = np.mgrid[0:h, 0:w]
    image = np.stack([rows_ * 5, cols * 4, np.full_like(rows_, 7)], axis=2).astype(np.uint8)
    mask = ((rows_ + cols) % 3 == 0).astype(np.uint8)
    write_image(tmp_path / "a.png", image)
    write_mask_gif(tmp_path / "a_mask.gif", mask)
    cfg = default(TrainConfig, height=h, width=w, crop=[16, 32], augment=augment, aug_hflip=0.0,
                      aug_affine=0.0, aug_color=0.0)
    ds = SegmentationDataset([{"image_path": tmp_path / "a.png",
                               "mask_path": tmp_path / "a_mask.gif"}], h, w,
                             build_transform(cfg), seed=1)
    corners = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        x, y = ds[0]
        assert x.shape == (16, 32, 3) and y.shape == (16, 32)
        top, left = int(x[0, 0, 0]) // 5, int(x[0, 0, 1]) // 4
        assert np.array_equal(x.numpy(), image[top:top + 16, left:left + 32])
        assert np.array_equal(y.numpy(), mask[top:top + 16, left:left + 32])
        corners.add((top, left))
    assert len(corners) > 2  # random positions, seeded per epoch


def test_crop_settings_are_checked():
    assert crop_size(default(TrainConfig)) is None
    assert crop_size(default(TrainConfig, height=64, width=96, crop=[32, 96])) == (32, 96)
    for bad in ([32], [0, 32], [65, 32], [32, 97], [1, 2, 3]):
        with pytest.raises(PipelineError, match="train.crop"):
            crop_size(default(TrainConfig, height=64, width=96, crop=bad))
