"""The U-Net feature-map grid: its size and tile layout, per-channel min-max normalisation,
the maps of a real U-Net, and the one-line error for any other model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import ModelConfig, default
from pipeline.errors import PipelineError
from pipeline.models.factory import build_model
from pipeline.visualize.features import (
    FEATURE_KEYS,
    GAP,
    TITLE_H,
    feature_grid,
    feature_maps,
    grid_size,
    require_unet,
)


def test_feature_grid_has_the_expected_size_and_tiles():
    rng = np.random.default_rng(0)
    step = np.full((4, 32, 48), -3.0, np.float32)
    step[..., 24:] = 5.0  # left half -3, right half 5
    maps = {
        "first_double_conv": step,
        "bottleneck": rng.random((16, 8, 12), dtype=np.float32),
        "first_up": rng.random((8, 16, 24), dtype=np.float32),
    }
    image = np.zeros((32, 48, 3), np.uint8)
    grid = feature_grid(maps, image, np.full((32, 48), 0.5), channels=6, columns=4,
                        tile_width=30)
    # tiles are 30 x 20; rows: photo 1, first conv 4 ch -> 1, bottleneck 6 ch -> 2, first up -> 2
    tile_h, tile_w = 20, 30
    rows = 1 + 1 + 2 + 2
    assert grid.shape == (
        GAP + 4 * TITLE_H + rows * (tile_h + GAP),
        GAP + 4 * (tile_w + GAP),
        3,
    )
    assert grid.shape[:2] == grid_size([4, 6, 6], 4, tile_h, tile_w)
    # A channel is min-max normalised on its own: -3 -> 0 on the left, 5 -> 255.
    top = GAP + TITLE_H + (tile_h + GAP) + TITLE_H
    first_tile = grid[top : top + tile_h, GAP : GAP + tile_w, 0]
    assert first_tile[:, 0].max() == 0 and first_tile[:, -1].min() == 255


def test_feature_maps_of_a_tiny_unet():
    torch.manual_seed(0)
    model = build_model(default(ModelConfig, arch="unet", base_width=4, depth=2)).eval()
    image = np.random.default_rng(0).integers(0, 256, (50, 130, 3), dtype=np.uint8)
    maps, prob = feature_maps(model, image, (32, 48))
    # fitted to 18x48 (the photo's aspect ratio); 4 channels, 16 at the bottleneck, 8 up;
    # the maps are at the size padded to a multiple of 2**depth, the probability is not
    assert list(maps) == list(FEATURE_KEYS)
    assert [m.shape[0] for m in maps.values()] == [4, 16, 8]
    assert maps["first_double_conv"].shape[1:] == (20, 48) and prob.shape == (18, 48)
    assert maps["bottleneck"].shape[1:] == (5, 12)
    assert 0 <= prob.min() and prob.max() <= 1
    with pytest.raises(PipelineError, match="no feature map nope"):
        feature_maps(model, image, (32, 48), keys=["nope"])


def test_require_unet_error():
    with pytest.raises(PipelineError, match="feature maps need the hand-written U-Net"):
        require_unet(torch.nn.Conv2d(3, 1, 1), "x.pt")
