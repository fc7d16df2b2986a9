"""The feature maps of the hand-written U-Net for one photo (the first double conv, the
bottleneck and the first up block, as the seeds show them), as a PNG grid: a row with the photo
and the predicted probability, then the first channels of each map as greyscale tiles, each
channel min-max normalised on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from pipeline.atomic import write_png
from pipeline.data.io import read_image
from pipeline.data.transforms import normalize, resize_image
from pipeline.errors import PipelineError
from pipeline.models.checkpoint import unwrap
from pipeline.models.unet import UNet
from pipeline.visualize.overlay import fit_size

FEATURE_KEYS = ("first_double_conv", "bottleneck", "first_up")
TITLE_H = 20  # pixels of the caption band above each row group of the feature grid
GAP = 2  # pixels between tiles
BACKGROUND = 24


def require_unet(model: nn.Module, source: str) -> nn.Module:
    """The bare hand-written U-Net inside ``model``, or a one-line error naming ``source``."""
    bare = unwrap(model)
    if not isinstance(bare, UNet):
        raise PipelineError(
            f"{source}: feature maps need the hand-written U-Net (model.arch: unet), this is "
            f"{type(bare).__name__}; pass a U-Net checkpoint or --model configs/models/unet.yaml"
        )
    return bare


@torch.no_grad()
def feature_maps(
    model: nn.Module,
    image: np.ndarray,
    size: tuple[int, int],
    keys: Sequence[str] = FEATURE_KEYS,
    device: str | torch.device = "cpu",
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({key: C x h x w float32 map}, probability at the model's input size) for one photo."""
    h, w = fit_size(*image.shape[:2], *size)
    x = normalize(resize_image(image, h, w))[None].to(device)
    feats = model.forward_features(x)
    missing = [k for k in keys if k not in feats]
    if missing:
        raise PipelineError(f"the U-Net has no feature map {missing[0]}; known: {', '.join(feats)}")
    maps = {k: feats[k][0].float().cpu().numpy() for k in keys}
    prob = torch.sigmoid(feats["logits"][0, 0].float()).cpu().numpy()
    return maps, prob


def _norm01(a: np.ndarray) -> np.ndarray:
    """Min-max to 0..255 uint8; a constant map is black."""
    lo, hi = float(a.min()), float(a.max())
    if hi - lo < 1e-12:
        return np.zeros(a.shape, dtype=np.uint8)
    return ((a - lo) / (hi - lo) * 255).round().astype(np.uint8)


def grid_size(
    n_channels: Sequence[int], columns: int, tile_h: int, tile_w: int
) -> tuple[int, int]:
    """(height, width) in pixels of :func:`feature_grid` for maps with ``n_channels`` tiles each
    (the photo/prediction row comes first and has 2 tiles)."""
    rows = [math.ceil(2 / columns)] + [math.ceil(n / columns) for n in n_channels]
    height = GAP + sum(TITLE_H + r * (tile_h + GAP) for r in rows)
    width = GAP + columns * (tile_w + GAP)
    return height, width


def feature_grid(
    maps: dict[str, np.ndarray],
    image: np.ndarray,
    probability: np.ndarray,
    channels: int = 16,
    columns: int = 8,
    tile_width: int = 128,
) -> np.ndarray:
    """An RGB uint8 grid: the photo and its probability, then the first ``channels`` channels of
    each map in ``maps`` (nearest-neighbour upsampled, so a coarse map shows its resolution),
    each group under a caption with its name, channel count and spatial size."""
    columns = max(2, columns)
    tile_h = max(8, round(tile_width * image.shape[0] / image.shape[1]))
    tile_w = tile_width
    counts = [min(channels, m.shape[0]) for m in maps.values()]
    height, width = grid_size(counts, columns, tile_h, tile_w)
    grid = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)

    def tile(a: np.ndarray, interp: int) -> np.ndarray:
        t = cv2.resize(a, (tile_w, tile_h), interpolation=interp)
        return t if t.ndim == 3 else np.repeat(t[..., None], 3, axis=2)

    groups = [
        ("photo | probability", [
            tile(image, cv2.INTER_AREA),
            tile((np.clip(probability, 0, 1) * 255).round().astype(np.uint8), cv2.INTER_LINEAR),
        ]),
    ]
    for (key, m), n in zip(maps.items(), counts):
        caption = f"{key}: {n} of {m.shape[0]} channels, {m.shape[1]}x{m.shape[2]}"
        groups.append((caption, [tile(_norm01(m[c]), cv2.INTER_NEAREST) for c in range(n)]))

    y = GAP
    for caption, tiles in groups:
        cv2.putText(grid, caption, (GAP + 2, y + TITLE_H - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (235, 235, 235), 1, cv2.LINE_AA)
        y += TITLE_H
        for i, t in enumerate(tiles):
            r, c = divmod(i, columns)
            top, left = y + r * (tile_h + GAP), GAP + c * (tile_w + GAP)
            grid[top : top + tile_h, left : left + tile_w] = t
        y += math.ceil(len(tiles) / columns) * (tile_h + GAP)
    return grid


def render_features(
    model: nn.Module,
    size: tuple[int, int],
    image_path: str | Path,
    out: str | Path,
    channels: int = 16,
    columns: int = 8,
    source: str = "model",
    device: str | torch.device = "cpu",
) -> Path:
    """Write the feature-map grid of ``model`` (a hand-written U-Net) for one photo."""
    unet = require_unet(model, source).to(device).eval()
    image = read_image(image_path)
    maps, prob = feature_maps(unet, image, size, device=device)
    return write_png(out, feature_grid(maps, image, prob, channels, columns))
