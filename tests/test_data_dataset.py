"""The training dataset and its augmentations: cached and uncached items agree, full-resolution
masks, per-(seed, epoch, image) augmentation that keeps the mask aligned."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from pipeline.config import TrainConfig
from pipeline.data.cache import build_cache
from pipeline.data.dataset import SegmentationDataset, build_transform
from pipeline.data.io import read_mask, write_image, write_mask_gif
from pipeline.data.layout import train_index
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
