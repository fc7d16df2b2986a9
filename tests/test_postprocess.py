"""Largest-connected-region clean-up, against a hand-written flood fill."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch

from pipeline.postprocess import largest_component


def flood_largest(mask: np.ndarray) -> np.ndarray:
    """Independent oracle: breadth-first flood fill over the 8 neighbours; the largest region,
    the first one met in row-major order on a tie."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    best: list[tuple[int, int]] = []
    for r0 in range(h):
        for c0 in range(w):
            if not mask[r0, c0] or seen[r0, c0]:
                continue
            region, queue = [], deque([(r0, c0)])
            seen[r0, c0] = True
            while queue:
                r, c = queue.popleft()
                region.append((r, c))
                for dr in (-1, 0, 1):
                    for dc in (-1, 0, 1):
                        rr, cc = r + dr, c + dc
                        if 0 <= rr < h and 0 <= cc < w and mask[rr, cc] and not seen[rr, cc]:
                            seen[rr, cc] = True
                            queue.append((rr, cc))
            if len(region) > len(best):
                best = region
    out = np.zeros_like(mask, dtype=bool)
    for r, c in best:
        out[r, c] = True
    return out


def test_keeps_the_car_and_drops_background_blobs():
    mask = np.zeros((40, 60), dtype=bool)
    mask[5:30, 10:45] = True  # the car
    mask[12:18, 20:26] = False  # a hole stays a hole: the region is not filled
    mask[35:39, 0:60] = True  # a dark floor strip along the bottom edge, apart from the car
    mask[2, 55] = True  # a speck
    got = largest_component(torch.from_numpy(mask)[None])[0].numpy()
    expected = np.zeros_like(mask)
    expected[5:30, 10:45] = True
    expected[12:18, 20:26] = False
    np.testing.assert_array_equal(got, expected)


def test_diagonal_neighbours_are_connected():
    mask = np.zeros((6, 6), dtype=bool)
    mask[0:2, 0:2] = True
    mask[2, 2] = mask[3, 3] = True  # joined to the block only through corners
    mask[5, 0] = True
    got = largest_component(torch.from_numpy(mask)[None])[0].numpy()
    assert got.sum() == 6 and got[3, 3] and not got[5, 0]


def test_matches_a_flood_fill_on_random_masks():
    rng = np.random.default_rng(0)
    masks = rng.random((12, 24, 31)) > 0.55  # many regions of many sizes
    masks[3] = False  # an empty mask stays empty
    masks[4] = True  # a full one stays full
    got = largest_component(torch.from_numpy(masks)).numpy()
    for i in range(len(masks)):
        np.testing.assert_array_equal(got[i], flood_largest(masks[i]), err_msg=f"mask {i}")
    assert not got[3].any() and got[4].all()


def test_keeps_dtype_and_device_and_rejects_other_shapes():
    got = largest_component(torch.ones(2, 3, 4, dtype=torch.bool))
    assert got.dtype == torch.bool and got.shape == (2, 3, 4) and got.device.type == "cpu"
    with pytest.raises(ValueError, match="N x H x W"):
        largest_component(torch.ones(3, 4, dtype=torch.bool))
