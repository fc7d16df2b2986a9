"""Predicted car masks drawn on any photo (a Kaggle image or a photo from anywhere), at the
photo's own size: the photo is shrunk to fit the size the model was trained at (keeping its
aspect ratio), predicted with flip TTA, and the probabilities are upsampled back to the photo.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from pipeline.atomic import write_png
from pipeline.data.io import read_image
from pipeline.data.transforms import resize_image
from pipeline.errors import PipelineError
from pipeline.inference.engine import (
    Ensemble,
    load_ensemble,
    predict_probs,
    prepare_engine,
    to_masks,
)
from pipeline.models.checkpoint import checkpoint_config, load_checkpoint

TINT = (0, 200, 80)  # RGB of the mask tint
OUTLINE = (255, 40, 40)  # RGB of the mask outline


def fit_size(height: int, width: int, train_height: int, train_width: int) -> tuple[int, int]:
    """The size a ``height`` x ``width`` photo is resized to before the model sees it.

    It fits inside the training size with the photo's aspect ratio, so a car keeps its shape;
    a photo with Carvana's aspect ratio lands exactly on the training size.
    """
    scale = min(train_height / height, train_width / width)
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    if abs(h - train_height) <= 1 and abs(w - train_width) <= 1:
        return train_height, train_width
    return h, w


def predict_probability(ensemble: Ensemble, image: np.ndarray) -> np.ndarray:
    """Car probability (H, W) float32 in [0, 1] for an RGB uint8 photo of any size H x W.

    The inference engine (:func:`pipeline.inference.engine.predict_probs`: flip TTA, probabilities
    averaged over views and models, bilinear upsampling) with one change: each model sees the
    photo at :func:`fit_size` of its training size instead of stretched to it, so a photo with
    another aspect ratio keeps its shape. Carvana photos get exactly the engine's input.
    """
    height, width = image.shape[:2]
    device = ensemble.engine.device
    fitted = Ensemble([dataclasses.replace(m, size=fit_size(height, width, *m.size))
                       for m in ensemble.members], ensemble.engine, ensemble.key)
    batches = {
        size: torch.from_numpy(resize_image(image, *size))[None].to(device)
        for size in fitted.sizes
    }
    photos = torch.from_numpy(image)[None].to(device) if fitted.refined else None
    probs = predict_probs(fitted, batches, out_shape=(height, width), photos=photos)
    return probs[0].clamp(0, 1).cpu().numpy()


def overlay(
    image: np.ndarray, mask: np.ndarray, alpha: float = 0.45, thickness: int | None = None
) -> np.ndarray:
    """The photo with ``mask`` (H, W, nonzero = car) tinted and outlined; RGB uint8, same size.

    Pixels outside the mask and away from its outline keep their value.
    """
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape[:2]} differ in size")
    out = image.copy()
    car = mask.astype(bool)
    tint = np.asarray(TINT, dtype=np.float32)
    out[car] = ((1 - alpha) * image[car].astype(np.float32) + alpha * tint).round().astype(np.uint8)
    if thickness is None:  # about 2 px on a 1918 x 1280 photo, 1 px on small ones
        thickness = max(1, round(min(image.shape[:2]) / 600))
    contours, _ = cv2.findContours(car.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, OUTLINE, thickness)
    return out


def overlay_images(
    checkpoints: Sequence[str | Path],
    images: Sequence[str | Path],
    out_dir: str | Path,
    threshold: float | None = None,
    tta: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[Path]:
    """Write ``<out_dir>/<photo stem>_overlay.png`` for each photo; returns the paths.

    The checkpoints' predictions are averaged (an ensemble); ``threshold`` and ``tta`` default
    to the first checkpoint's ``predict`` settings. A pixel is car when its probability is
    above the threshold, as in the submission.
    """
    if not checkpoints:
        raise PipelineError("overlay needs at least one --checkpoint")
    if not images:
        raise PipelineError("overlay needs at least one photo")
    cfg = checkpoint_config(load_checkpoint(checkpoints[0])).predict
    cfg = dataclasses.replace(
        cfg,
        threshold=cfg.threshold if threshold is None else threshold,
        tta=list(cfg.tta if tta is None else tta),
        channels_last=cfg.channels_last and torch.device(device).type == "cuda",
    )
    ensemble = load_ensemble(checkpoints, prepare_engine(cfg, device))
    written = []
    for path in tqdm(images, desc="overlays", unit="img", disable=not progress):
        image = read_image(path)
        prob = predict_probability(ensemble, image)
        out = Path(out_dir) / f"{Path(path).stem}_overlay.png"
        mask = to_masks(torch.from_numpy(prob)[None], cfg.threshold, cfg.largest_component)[0]
        written.append(write_png(out, overlay(image, mask.numpy())))
    return written
