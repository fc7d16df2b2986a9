"""Torch datasets for training and the augmentations.

Each sample is the resized image and mask (from the disk cache of :mod:`pipeline.data.cache`,
or decoded and resized on the fly), augmented, then normalised
(:func:`pipeline.data.transforms.normalize`).
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
from pipeline.data.transforms import normalize, resize_image, resize_mask

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
        x = normalize(image)
        y = torch.from_numpy(np.array(mask, dtype=np.float32)).unsqueeze(0)  # a writable copy
        if self.full_res:
            full = torch.from_numpy(np.array(read_mask(self.items[i]["mask_path"])))
            return x, y, full
        return x, y
