"""Mask overlays on any photo: the size a photo is fitted to, the tint and outline, the
probability at the photo's own size averaged over flips, and one PNG per photo."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from pipeline.config import PredictConfig, default
from pipeline.inference.engine import Ensemble, Member, prepare_engine
from pipeline.visualize.overlay import (
    OUTLINE,
    TINT,
    fit_size,
    overlay,
    overlay_images,
    predict_probability,
)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two synthetic photos of unusual sizes: a bright car-like ellipse on a grey background."""
    root = tmp_path_factory.mktemp("photos")
    paths = []
    for name, (h, w) in {"wide.jpg": (50, 130), "tall.png": (90, 60)}.items():
        img = np.full((h, w, 3), 90, np.uint8)
        cv2.ellipse(img, (w // 2, h // 2), (w // 3, h // 4), 0, 0, 360, (200, 40, 40), -1)
        path = root / name
        cv2.imwrite(str(path), img[..., ::-1])
        paths.append(path)
    return paths


def test_fit_size_keeps_aspect_and_hits_the_training_size():
    assert fit_size(1280, 1918, 128, 192) == (128, 192)  # Carvana aspect: exact
    assert fit_size(1000, 1000, 128, 192) == (128, 128)  # square photo: fits, not stretched
    assert fit_size(300, 1200, 128, 192) == (48, 192)


def test_overlay_tints_inside_and_keeps_the_rest():
    image = np.full((40, 60, 3), 100, np.uint8)
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:40] = 1
    out = overlay(image, mask, alpha=0.5, thickness=1)
    assert out.shape == image.shape and out.dtype == np.uint8
    expected = np.round(0.5 * 100 + 0.5 * np.array(TINT)).astype(np.uint8)
    assert (out[15:25, 25:35] == expected).all()  # inside, away from the outline
    assert (out[:5] == 100).all() and (out[:, :15] == 100).all()  # far outside: untouched
    assert (out[10, 20:40] == OUTLINE).all()  # the outline is drawn on the mask's edge
    with pytest.raises(ValueError):
        overlay(image, mask[:-1])


def test_predict_probability_is_at_photo_size_and_averages_flips():
    class Left(torch.nn.Module):  # logit +10 on the left half of its input, -10 on the right
        def forward(self, x):
            w = x.shape[-1]
            out = torch.full_like(x[:, :1], -10.0)
            out[..., : w // 2] = 10.0
            return out

    image = np.zeros((30, 70, 3), np.uint8)
    cfg = default(PredictConfig, tta=[], precision="fp32", channels_last=False)
    plain = predict_probability(Ensemble([Member(Left(), (16, 24))], prepare_engine(cfg)), image)
    assert plain.shape == (30, 70)
    assert plain[:, :30].min() > 0.99 and plain[:, 40:].max() < 0.01
    # hflip TTA: the flipped view says "right half"; the average is 0.5 everywhere.
    flips = prepare_engine(dataclasses.replace(cfg, tta=["hflip"]))
    both = predict_probability(Ensemble([Member(Left(), (16, 24))], flips), image)
    assert np.allclose(both, 0.5, atol=1e-4)


def test_overlay_images_writes_one_png_per_photo_at_its_size(tiny_trained, photos, tmp_path):
    ckpt = tiny_trained.best
    out = overlay_images([ckpt, ckpt], photos, tmp_path / "ov", progress=False)
    assert [p.name for p in out] == ["wide_overlay.png", "tall_overlay.png"]
    for png, photo in zip(out, photos):
        assert cv2.imread(str(png)).shape[:2] == cv2.imread(str(photo)).shape[:2]
