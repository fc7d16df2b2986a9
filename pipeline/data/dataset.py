"""Torch datasets for training, the augmentations, and the resized-image disk cache.

Preprocessing contract shared by training and prediction (import it, never re-implement it):

    normalize(RGB uint8 (H, W, 3)) -> float32 tensor (3, H, W) = (x / 255 - IMAGENET_MEAN) / IMAGENET_STD

The cache. Decoding a 1918x1280 JPEG costs far more than a training step needs at 320x480, so
every image and mask is resized once and stored as a lossless PNG under

    <cache_dir>/<H>x<W>/images/<car>_<NN>.png   RGB uint8, cv2.INTER_AREA (area average)
    <cache_dir>/<H>x<W>/masks/<car>_<NN>.png    uint8 {0, 1}: INTER_AREA on the float mask, then
                                                >= 0.5 (a pixel is car when at least half of
                                                the source area it covers is car)

Each file is written atomically and stamped with its source's modification time; a cached file
whose stamp differs from its source's (a newer source, or a different data root with the same
names) is rebuilt, all others are reused.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from pipeline.atomic import atomic_path
from pipeline.config import TrainConfig
from pipeline.data.io import read_image, read_mask
from pipeline.errors import PipelineError

# ImageNet statistics (RGB, on 0..1 pixels): the convention every pretrained encoder expects.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32) * 255.0
_INV_STD = 1.0 / (np.asarray(IMAGENET_STD, dtype=np.float32) * 255.0)


def normalize(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> float32 tensor (3, H, W) normalised with ImageNet mean/std."""
    x = (np.asarray(image, dtype=np.float32) - _MEAN) * _INV_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


# --------------------------------------------------------------------------- resizing


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """RGB uint8 -> (height, width, 3); area averaging when shrinking, bilinear when growing."""
    if image.shape[:2] == (height, width):
        return image
    shrink = height <= image.shape[0] and width <= image.shape[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """{0, 1} uint8 -> (height, width) {0, 1}: area-average the float mask, keep pixels >= 0.5."""
    if mask.shape[:2] == (height, width):
        return mask.astype(np.uint8, copy=False)
    area = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    return (area >= 0.5).astype(np.uint8)


# --------------------------------------------------------------------------- the disk cache


def cache_paths(img: str, height: int, width: int, cache_dir: str | Path) -> tuple[Path, Path]:
    """(cached image, cached mask) for image name ``img`` at size ``height`` x ``width``."""
    root = Path(cache_dir) / f"{height}x{width}"
    stem = Path(img).stem
    return root / "images" / f"{stem}.png", root / "masks" / f"{stem}.png"


def _is_fresh(cached: Path, source: Path) -> bool:
    try:
        return cached.stat().st_mtime_ns == source.stat().st_mtime_ns
    except FileNotFoundError:
        return False


def _write_png(path: Path, array: np.ndarray, source: Path) -> None:
    """Atomic PNG write, stamped with the source's mtime (the freshness key)."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    stat = source.stat()
    with atomic_path(path) as tmp:
        ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise PipelineError(f"{path}: could not encode the cached PNG")
        tmp.write_bytes(buf.tobytes())
        os.utime(tmp, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def cache_item(
    image_path: str | Path, mask_path: str | Path, height: int, width: int, cache_dir: str | Path
) -> bool:
    """Make sure one image (and its mask) is cached at ``height`` x ``width``; True if written."""
    image_path, mask_path = Path(image_path), Path(mask_path)
    image_png, mask_png = cache_paths(image_path.name, height, width, cache_dir)
    wrote = False
    if not _is_fresh(image_png, image_path):
        _write_png(image_png, resize_image(read_image(image_path), height, width), image_path)
        wrote = True
    if not _is_fresh(mask_png, mask_path):
        _write_png(mask_png, resize_mask(read_mask(mask_path), height, width), mask_path)
        wrote = True
    return wrote


def _records(items: Iterable[Any] | pd.DataFrame) -> list[dict]:
    records = items.to_dict("records") if isinstance(items, pd.DataFrame) else list(items)
    for rec in records:
        if not rec.get("mask_path"):
            raise PipelineError(
                f"{rec.get('image_path')}: no mask in train_masks/; training needs one mask per "
                "image (run `python -m pipeline.data` to validate the data)"
            )
    return records


def build_cache(
    index_rows: Iterable[Any] | pd.DataFrame,
    height: int,
    width: int,
    cache_dir: str | Path,
    workers: int = 2,
    progress: bool = True,
) -> int:
    """Resize every (image_path, mask_path) row into the cache; returns how many were written.

    Runs in the calling process with threads (OpenCV releases the GIL while decoding), so an
    unreadable image stops the build with one line naming the file.
    """
    records = _records(index_rows)

    def one(rec: dict) -> bool:
        return cache_item(rec["image_path"], rec["mask_path"], height, width, cache_dir)

    written = 0
    bar = tqdm(total=len(records), desc=f"cache {height}x{width}", disable=not progress,
               unit="img", leave=False)
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        for wrote in pool.map(one, records):
            written += int(wrote)
            bar.update()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return written


# --------------------------------------------------------------------------- augmentation


def build_transform(cfg: TrainConfig) -> A.Compose | None:
    """Training augmentations (None when ``cfg.augment`` is off): horizontal flip, a small
    shift/scale/rotate (image bilinear, mask nearest, reflected borders), brightness/contrast
    and hue/saturation. Validation uses no transform beyond the cached resize."""
    if not cfg.augment:
        return None
    return A.Compose(
        [
            A.HorizontalFlip(p=cfg.aug_hflip),
            A.Affine(
                scale=(1 - cfg.aug_scale, 1 + cfg.aug_scale),
                translate_percent=(-cfg.aug_shift, cfg.aug_shift),
                rotate=(-cfg.aug_rotate, cfg.aug_rotate),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_REFLECT_101,
                p=cfg.aug_affine,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=cfg.aug_color),
            A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=0,
                                 p=cfg.aug_color),
        ]
    )


# --------------------------------------------------------------------------- datasets


class SegmentationDataset(Dataset):
    """(image float 3xHxW normalised, mask float 1xHxW in {0, 1}) for rows of the train index.

    ``items``: rows with ``image_path`` and ``mask_path`` (a DataFrame or dicts). With
    ``cache_dir`` the resized copies from :func:`build_cache` are read (build it first);
    without, sources are decoded and resized on every access.

    Augmentation is seeded per sample from (``seed``, epoch, index), so it does not depend on
    worker count, rank or history: a resumed run sees the same images as an uninterrupted one.
    Call :meth:`set_epoch` before each epoch.

    ``full_res=True`` adds a third item, the source-resolution mask (uint8 H0xW0), for
    validating upsampled logits against the original mask.
    """

    def __init__(
        self,
        items: Iterable[Any] | pd.DataFrame,
        height: int,
        width: int,
        transform: A.Compose | None = None,
        cache_dir: str | Path | None = None,
        *,
        full_res: bool = False,
        seed: int = 0,
    ):
        self.items = _records(items)
        self.height, self.width = height, width
        self.transform = transform
        self.cache_dir = cache_dir
        self.full_res = full_res
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Resized (image uint8 HxWx3, mask uint8 HxW) before augmentation."""
        rec = self.items[i]
        if self.cache_dir is None:
            image = resize_image(read_image(rec["image_path"]), self.height, self.width)
            mask = resize_mask(read_mask(rec["mask_path"]), self.height, self.width)
            return image, mask
        image_png, mask_png = cache_paths(
            Path(rec["image_path"]).name, self.height, self.width, self.cache_dir
        )
        return read_image(image_png), read_mask(mask_png)

    def __getitem__(self, i: int):
        image, mask = self.load(i)
        if self.transform is not None:
            seed = np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(1)[0]
            self.transform.set_random_seed(int(seed))
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        x = normalize(image)
        y = torch.from_numpy(np.array(mask, dtype=np.float32)).unsqueeze(0)  # a writable copy
        if self.full_res:
            full = torch.from_numpy(np.array(read_mask(self.items[i]["mask_path"])))
            return x, y, full
        return x, y
