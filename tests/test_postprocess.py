"""Largest-connected-region clean-up, against a hand-written flood fill and OpenCV; the
host step (connected runs) on hand-made runs."""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np
import pytest
import torch

from pipeline.postprocess import fill_runs, largest_component, largest_run_component, row_runs


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


# --------------------------------------------------------------------------- against OpenCV


def opencv_largest(mask: np.ndarray) -> np.ndarray:
    """Independent oracle: OpenCV's 8-connected labelling of the whole mask, the largest area,
    on a tie the region whose first pixel comes first in row-major order. That first pixel is
    computed from the labels: OpenCV's default algorithm (Spaghetti) scans 2 x 2 blocks, so its
    label numbers are not in row-major order (a pixel at (1, 0) is labelled before one at
    (0, 5))."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(mask.shape, dtype=bool)
    present, first_pixel = np.unique(labels.reshape(-1), return_index=True)
    first = np.zeros(n, dtype=np.int64)
    first[present] = first_pixel
    area = stats[:, cv2.CC_STAT_AREA]
    best = 1 + np.lexsort((first[1:], -area[1:]))[0]
    return labels == best


def check_against_opencv(masks: np.ndarray) -> None:
    got = largest_component(torch.from_numpy(masks))
    assert got.dtype == torch.bool and got.shape == masks.shape
    for i, mask in enumerate(masks):
        np.testing.assert_array_equal(got[i].numpy(), opencv_largest(mask), err_msg=f"mask {i}")


def test_opencv_label_order_is_not_row_major():
    """Why the oracle finds ties by first pixel rather than by OpenCV's label number."""
    mask = np.zeros((2, 8), dtype=np.uint8)
    mask[0, 5] = mask[1, 0] = 1
    _, labels, _, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    assert labels[1, 0] < labels[0, 5]  # true of OpenCV 4.x/5.x's default (block-based) scan
    expected = np.zeros_like(mask, dtype=bool)
    expected[0, 5] = True  # first in row-major order
    np.testing.assert_array_equal(opencv_largest(mask), expected)
    check_against_opencv(mask[None].astype(bool))


@pytest.mark.parametrize("shape", [(37, 53), (1, 50), (50, 1), (1, 1), (2, 2), (64, 3)])
def test_matches_opencv_on_random_masks(shape):
    rng = np.random.default_rng(sum(shape))
    densities = [0.02, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.98]
    masks = np.stack([rng.random(shape) < d for d in densities for _ in range(3)])
    masks = np.concatenate([masks, np.zeros((1, *shape), bool), np.ones((1, *shape), bool)])
    check_against_opencv(masks)


def test_matches_opencv_on_diagonal_staircases_and_borders():
    r, c = np.indices((21, 30))
    masks = np.stack([
        (r + c) % 2 == 0,  # checkerboard: one region through corners only
        (r + c) % 3 == 0,  # anti-diagonal lines, one column apart: many regions
        r == c,  # one diagonal staircase
        (r == c) | (r == c + 5),  # two staircases, the lower one shorter
        (r // 2 == c // 2) & (r % 2 == c % 2),  # corner-to-corner steps of 1 x 1 blocks
        (r == 0) | (r == 20) | (c == 0) | (c == 29),  # a frame along all four borders
        (r < 3) | (c > 26),  # regions touching the borders
    ])
    check_against_opencv(masks)


def test_matches_opencv_on_a_full_size_car_with_specks():
    rng = np.random.default_rng(7)
    r, c = np.indices((1280, 1918))
    car = ((r - 700) / 330.0) ** 2 + ((c - 960) / 780.0) ** 2 < 1  # the body
    car |= ((r - 430) / 160.0) ** 2 + ((c - 900) / 420.0) ** 2 < 1  # the cabin
    car &= ~((((r - 420) / 70.0) ** 2 + ((c - 760) / 120.0) ** 2) < 1)  # a window
    mask = car | (r > 1270)  # a floor strip along the bottom edge, apart from the car
    mask[rng.integers(0, 1280, 300), rng.integers(0, 1918, 300)] = True  # specks
    noisy = mask & (rng.random(mask.shape) > 0.02)  # a ragged edge and pin holes
    check_against_opencv(np.stack([mask, noisy, np.zeros_like(mask)]))


def test_matches_opencv_on_ties_between_random_specks():
    rng = np.random.default_rng(3)
    masks = rng.random((60, 37, 53)) < 0.03  # mostly single pixels and pairs: many ties
    check_against_opencv(masks)


def test_ties_keep_the_region_whose_first_pixel_comes_first():
    mask = np.zeros((2, 6, 9), dtype=bool)
    mask[0, 3:5, 0:2] = True  # area 4, first pixel (3, 0)
    mask[0, 1:3, 6:8] = True  # area 4, first pixel (1, 6): wins
    mask[1, 0, 8] = mask[1, 1, 0] = True  # area 1 each: (0, 8) wins
    got = largest_component(torch.from_numpy(mask)).numpy()
    assert got[0].sum() == 4 and got[0, 1, 6] and not got[0, 3, 0]
    assert got[1].sum() == 1 and got[1, 0, 8]
    check_against_opencv(mask)


def test_images_of_a_batch_never_join():
    masks = np.zeros((3, 4, 5), dtype=bool)
    masks[0, 3] = True  # bottom row of image 0 ...
    masks[1, 0] = True  # ... above the top row of image 1
    masks[1, 2:4, 1] = True  # a smaller second region
    masks[2, 0, :2] = masks[2, 3, 3:] = True
    got = largest_component(torch.from_numpy(masks)).numpy()
    assert got[0].sum() == 5 and got[1].sum() == 5 and not got[1, 2:].any()
    assert got[2].sum() == 2 and got[2, 0, :2].all()


def test_empty_batch_and_device_dtype():
    empty = largest_component(torch.zeros(0, 5, 7, dtype=torch.bool))
    assert empty.shape == (0, 5, 7) and empty.dtype == torch.bool
    masks = torch.zeros(2, 5, 7, dtype=torch.bool)
    masks[1, 1:3, 2:4] = True
    got = largest_component(masks)
    assert got.device == masks.device and got.dtype == torch.bool and torch.equal(got, masks)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_stays_on_cuda():
    masks = torch.from_numpy(np.random.default_rng(0).random((3, 40, 50)) < 0.5)
    got = largest_component(masks.cuda())
    assert got.device.type == "cuda" and got.dtype == torch.bool
    torch.testing.assert_close(got.cpu(), largest_component(masks))


# --------------------------------------------------------------------------- the three steps


def test_row_runs_and_fill_runs_round_trip():
    masks = torch.zeros(2, 3, 6, dtype=torch.bool)
    masks[0, 0, 0:2] = masks[0, 0, 4:6] = masks[1, 2, 1:4] = True
    runs = row_runs(masks)
    assert runs.tolist() == [[0, 0, 0, 2], [0, 0, 4, 6], [1, 2, 1, 4]]
    assert runs.dtype == torch.int64
    assert torch.equal(fill_runs(runs, (2, 3, 6)), masks)
    assert row_runs(torch.zeros(0, 3, 6, dtype=torch.bool)).shape == (0, 4)


def test_runs_touching_at_a_corner_are_one_region():
    # (image, row, start, end), end exclusive: row 1 [2, 3) starts where row 0 [0, 2) ends
    runs = np.array([[0, 0, 0, 2], [0, 1, 2, 3], [0, 3, 0, 1]])
    assert largest_run_component(runs).tolist() == [True, True, False]
    # the same on the other side: row 1 [0, 1) ends where row 0 [1, 3) starts
    runs = np.array([[0, 0, 1, 3], [0, 1, 0, 1], [0, 3, 0, 1]])
    assert largest_run_component(runs).tolist() == [True, True, False]


def test_runs_one_column_apart_are_two_regions():
    # row 1 [3, 5) leaves column 2 empty between it and row 0 [0, 2)
    runs = np.array([[0, 0, 0, 2], [0, 1, 3, 5]])
    assert largest_run_component(runs).tolist() == [True, False]  # a tie: the first wins
    runs = np.array([[0, 0, 0, 2], [0, 1, 3, 6]])
    assert largest_run_component(runs).tolist() == [False, True]
    # a gap row between two runs separates them too
    runs = np.array([[0, 0, 0, 4], [0, 2, 0, 5]])
    assert largest_run_component(runs).tolist() == [False, True]


def test_a_run_can_join_several_runs_above_and_below():
    # a U shape: two arms joined by the bottom run, then one run below bridging nothing new
    runs = np.array([
        [0, 0, 0, 1], [0, 0, 4, 5], [0, 0, 7, 8],  # two arms and a speck (area 1 each)
        [0, 1, 0, 5],  # joins both arms
        [1, 0, 0, 1], [1, 0, 2, 3],  # another image: two specks, the first one wins
    ])
    assert largest_run_component(runs).tolist() == [True, True, False, True, True, False]
    assert largest_run_component(np.zeros((0, 4), np.int64)).shape == (0,)
