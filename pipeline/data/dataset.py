"""Torch datasets for training and the augmentations.

Each sample is the resized image and mask (from the disk cache of :mod:`pipeline.data.cache`,
or decoded and resized on the fly), augmented and, with ``train.crop``, cropped: still uint8.
Normalisation happens on the device, per batch (:func:`pipeline.train.loop.to_input`): a
worker ships 4 bytes per pixel (RGB + mask) through shared memory instead of the 16 of float32,
which is what lets full-resolution batches (1280x1918: 9.8 MB instead of 39 MB a sample) keep
up with a GPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pipeline.config import TrainConfig
from pipeline.data.cache import read_cached, records_of
from pipeline.data.io import read_image, read_mask
from pipeline.data.transforms import resize_image, resize_mask
from pipeline.errors import PipelineError

# --------------------------------------------------------------------------- augmentation


def crop_size(cfg: TrainConfig) -> tuple[int, int] | None:
    """``train.crop`` as (h, w), or None when off; it must fit in the training size."""
    if not cfg.crop:
        return None
    if len(cfg.crop) != 2 or not (0 < cfg.crop[0] <= cfg.height and 0 < cfg.crop[1] <= cfg.width):
        raise PipelineError(f"train.crop must be [] or [h, w] with 0 < h <= train.height "
                            f"({cfg.height}) and 0 < w <= train.width ({cfg.width}), "
                            f"got {cfg.crop}")
    return cfg.crop[0], cfg.crop[1]


def build_transform(cfg: TrainConfig) -> A.Compose | None:
    """Training augmentations (None when ``cfg.augment`` is off and there is no crop):
    horizontal flip, a small shift/scale/rotate (image bilinear, mask nearest, reflected
    borders), brightness/contrast and hue/saturation, then with ``train.crop`` a random crop
    (the 4th-place Carvana recipe: 1024x1024 crops of the full image). Validation and
    prediction see the whole image: the model is fully convolutional."""
    crop = crop_size(cfg)
    cropping = [A.RandomCrop(*crop)] if crop else []
    if not cfg.augment:
        return A.Compose(cropping) if cropping else None
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
            *cropping,
        ]
    )


# --------------------------------------------------------------------------- datasets


class SegmentationDataset(Dataset):
    """(image uint8 HxWx3 RGB, mask uint8 HxW in {0, 1}) for rows of the train index.

    ``items``: rows with ``image_path`` and ``mask_path`` (a DataFrame or dicts). With
    ``cache_dir`` the resized copies from :func:`build_cache` are read (build it first: a
    missing or damaged copy is rebuilt on access, one at a time); without, sources are decoded
    and resized on every access.

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
        self.items = records_of(items)
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
        return read_cached(rec["image_path"], rec["mask_path"], self.height, self.width,
                           self.cache_dir)

    def __getitem__(self, i: int):
        image, mask = self.load(i)
        if self.transform is not None:
            seed = np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(1)[0]
            self.transform.set_random_seed(int(seed))
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        x = torch.from_numpy(np.ascontiguousarray(image))
        y = torch.from_numpy(np.array(mask, dtype=np.uint8))  # a writable copy
        if self.full_res:
            full = torch.from_numpy(np.array(read_mask(self.items[i]["mask_path"])))
            return x, y, full
        return x, y
