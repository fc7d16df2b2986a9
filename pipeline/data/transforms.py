"""The preprocessing contract shared by training and prediction (import it, never re-implement
it): resizing images and masks, and ImageNet normalisation, per image on the CPU or per batch on
the device.

    normalize(RGB uint8 (H, W, 3)) -> float32 (3, H, W) = (x / 255 - IMAGENET_MEAN) / IMAGENET_STD
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

# ImageNet statistics (RGB, on 0..1 pixels): the convention every pretrained encoder expects.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32) * 255.0
_INV_STD = 1.0 / (np.asarray(IMAGENET_STD, dtype=np.float32) * 255.0)


def normalize(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> float32 tensor (3, H, W) normalised with ImageNet mean/std."""
    x = (np.asarray(image, dtype=np.float32) - _MEAN) * _INV_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def normalize_batch(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W x 3 RGB -> float32 N x 3 x H x W, ``(x / 255 - mean) / std``.

    The batched, on-device twin of :func:`normalize` with the very same float32 constants. The
    result is a channels_last view (the permute of an NHWC tensor); callers make it contiguous
    when they do not want that layout.
    """
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=images.device) * 255.0
    inv_std = 1.0 / (torch.tensor(IMAGENET_STD, dtype=torch.float32, device=images.device) * 255.0)
    x = (images.to(torch.float32) - mean) * inv_std  # N x H x W x 3
    return x.permute(0, 3, 1, 2)


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
