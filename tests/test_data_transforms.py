"""The preprocessing contract: ImageNet normalisation per image and per batch, and the resizes
of images and masks."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from pipeline.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    normalize,
    normalize_batch,
    resize_image,
    resize_mask,
)


def test_normalize_matches_torchvision_convention():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    x = normalize(image)
    assert x.shape == (3, 5, 7) and x.dtype == torch.float32
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    reference = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(x, reference, rtol=1e-5, atol=1e-5)


def test_normalize_batch_is_normalize_of_each_image():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(3, 6, 9, 3), dtype=np.uint8)
    batch = normalize_batch(torch.from_numpy(images))
    assert batch.shape == (3, 3, 6, 9) and batch.dtype == torch.float32
    assert batch.is_contiguous(memory_format=torch.channels_last)
    expected = torch.stack([normalize(im) for im in images])
    assert torch.equal(batch.contiguous(), expected)  # the very same float32 constants


def test_resize_mask_keeps_pixels_at_least_half_covered():
    mask = np.zeros((4, 4), np.uint8)
    mask[:2, :2] = 1  # top-left block: fully covered
    mask[2, 2:] = 1  # bottom-right block: half covered
    mask[0, 2] = 1  # top-right block: a quarter covered
    out = resize_mask(mask, 2, 2)
    assert out.tolist() == [[1, 0], [0, 1]]
    assert out.dtype == np.uint8


def test_resize_mask_at_its_own_size_is_the_mask():
    mask = np.array([[0, 1], [1, 0]], dtype=bool)
    out = resize_mask(mask, 2, 2)
    assert out.dtype == np.uint8 and out.tolist() == [[0, 1], [1, 0]]


def test_resize_image_averages_when_shrinking_and_interpolates_when_growing():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(8, 12, 3), dtype=np.uint8)
    assert resize_image(image, 8, 12) is image  # already the size: untouched
    small = resize_image(image, 4, 6)
    assert np.array_equal(small, cv2.resize(image, (6, 4), interpolation=cv2.INTER_AREA))
    big = resize_image(image, 16, 24)
    assert big.shape == (16, 24, 3)
    assert np.array_equal(big, cv2.resize(image, (24, 16), interpolation=cv2.INTER_LINEAR))
    # a 2x2 block of one colour averages to that colour
    flat = np.full((4, 4, 3), 77, np.uint8)
    assert (resize_image(flat, 2, 2) == 77).all()
