"""Applying the edge refiner (pipeline.refine.apply): it changes probabilities only inside the
band along the coarse mask's edge, an untrained one changes nothing, and a batch equals its
images refined one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import RefineConfig, default
from pipeline.refine.apply import refine_probs
from pipeline.refine.geometry import edge_band
from pipeline.refine.net import EdgeRefiner

CFG = default(RefineConfig, tile=8, context=4, band_margin=2, width=4)


def soft_car(n: int = 2, h: int = 40, w: int = 56) -> torch.Tensor:
    """N x H x W probabilities: a blurred rectangle (0 and 1 far from its edge)."""
    probs = torch.zeros(n, h, w)
    for i in range(n):
        probs[i, 10 + i:30, 12:44 - i] = 1
    kernel = torch.ones(1, 1, 5, 5) / 25
    return torch.nn.functional.conv2d(probs[:, None], kernel, padding=2)[:, 0].clamp(0, 1)


def photos(n: int = 2, h: int = 40, w: int = 56) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8))


def trained_looking(seed: int = 0) -> EdgeRefiner:
    """A refiner whose last layer is not zero, so it does change probabilities."""
    torch.manual_seed(seed)
    refiner = EdgeRefiner(CFG.width)
    torch.nn.init.normal_(refiner.out.weight, std=0.5)
    return refiner.eval()


def test_the_refiner_changes_only_pixels_inside_the_band():
    probs, images = soft_car(), photos()
    band = edge_band(probs, CFG.band_margin)
    assert band.any() and not band.all()
    out = refine_probs(trained_looking(), CFG, images, probs)
    assert out.shape == probs.shape and out is not probs
    changed = (out - probs).abs() > 1e-6
    assert changed.any()
    assert not (changed & ~band).any()
    assert out.min() >= 0 and out.max() <= 1


def test_an_untrained_refiner_changes_nothing():
    probs = soft_car()
    out = refine_probs(EdgeRefiner(CFG.width).eval(), CFG, photos(), probs)
    torch.testing.assert_close(out, probs, rtol=0, atol=1e-5)


def test_a_batch_is_its_images_refined_one_by_one():
    probs, images, refiner = soft_car(), photos(), trained_looking()
    batch = refine_probs(refiner, CFG, images, probs)
    single = torch.cat([refine_probs(refiner, CFG, images[i:i + 1], probs[i:i + 1])
                        for i in range(2)])
    torch.testing.assert_close(batch, single)


@pytest.mark.parametrize("probs", [torch.zeros(1, 40, 56), torch.ones(1, 40, 56)])
def test_no_edge_means_nothing_to_refine(probs):
    assert torch.equal(refine_probs(trained_looking(), CFG, photos(1), probs), probs)
