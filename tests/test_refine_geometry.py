"""Where the edge refiner looks (pipeline.refine.geometry), against hand-made masks: the band
along an edge, the grid tiles it touches, windows cut out and pasted back, a coarse model's
blur."""

from __future__ import annotations

import torch

from pipeline.refine.geometry import (
    band_tiles,
    coarse_probability,
    edge_band,
    extract_tiles,
    paste_tiles,
)


def square(size: int = 12, lo: int = 3, hi: int = 9) -> torch.Tensor:
    """1 x size x size float mask: ones on [lo, hi) x [lo, hi)."""
    mask = torch.zeros(1, size, size)
    mask[0, lo:hi, lo:hi] = 1
    return mask


def ring(size: int, outer: tuple[int, int], inner: tuple[int, int]) -> torch.Tensor:
    """Bool size x size: the square [outer) minus the square [inner)."""
    out = torch.zeros(size, size, dtype=torch.bool)
    out[outer[0]:outer[1], outer[0]:outer[1]] = True
    out[inner[0]:inner[1], inner[0]:inner[1]] = False
    return out


def test_a_sharp_edge_gets_the_pixels_on_both_sides_then_the_margin():
    mask = square()  # 6 x 6 car in a 12 x 12 photo, probabilities exactly 0 or 1
    # no pixel is undecided: the band is the car's outer ring and the background ring around it
    assert torch.equal(edge_band(mask, 0)[0], ring(12, (2, 10), (4, 8)))
    assert torch.equal(edge_band(mask, 1)[0], ring(12, (1, 11), (5, 7)))
    assert edge_band(mask, 3)[0].all()


def test_the_margin_is_a_square_around_each_seed_pixel():
    torch.manual_seed(0)
    probs = (torch.rand(2, 30, 40) > 0.97).float()  # scattered one-pixel cars
    seed = edge_band(probs, 0)
    for margin in (1, 4):
        square_max = torch.nn.functional.max_pool2d(seed[:, None].float(), 2 * margin + 1, 1,
                                                    margin)[:, 0] > 0
        assert torch.equal(edge_band(probs, margin), square_max)


def test_undecided_pixels_are_in_the_band_wherever_they_are():
    probs = torch.zeros(1, 12, 12)
    probs[0, 1, 10] = 0.5  # a lone undecided pixel, no mask edge anywhere
    probs[0, 8, 2] = 0.99  # confident (> 0.98): not undecided, and below 0.5 nowhere around
    band = edge_band(probs, 0)[0]
    expected = torch.zeros(12, 12, dtype=torch.bool)
    expected[1, 10] = True
    expected[8, 2] = True  # ... but it is a one-pixel mask, so its own edge
    expected[7:10, 1:4] = True  # and the background pixels around it
    assert torch.equal(band, expected)
    assert torch.equal(edge_band(probs, 1)[0], torch.nn.functional.max_pool2d(
        expected[None, None].float(), 3, 1, 1)[0, 0] > 0)
    assert not edge_band(torch.ones(2, 12, 12), 2).any()  # all car: no edge
    assert not edge_band(torch.zeros(2, 12, 12), 2).any()  # no car


def test_band_tiles_name_each_grid_square_holding_a_band_pixel():
    band = torch.zeros(2, 10, 10, dtype=torch.bool)  # a 4 px grid: 3 x 3 squares, the last ragged
    band[0, 5, 9] = True  # row 1, column 2 (the ragged one)
    band[1, 0, 0] = True
    band[1, 9, 4] = True  # row 2, column 1
    assert band_tiles(band, 4).tolist() == [[0, 1, 2], [1, 0, 0], [1, 2, 1]]
    assert band_tiles(torch.zeros(1, 10, 10, dtype=torch.bool), 4).shape == (0, 3)


def test_tiles_cut_out_and_pasted_back_rebuild_the_image():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 10, 14)  # neither side a multiple of the tile
    tile, margin = 4, 2
    where = band_tiles(torch.ones(2, 10, 14, dtype=torch.bool), tile)
    assert len(where) == 2 * 3 * 4
    windows = extract_tiles(images, where, tile, margin)
    assert windows.shape == (24, 3, tile + 2 * margin, tile + 2 * margin)
    centres = windows[:, 0, margin:margin + tile, margin:margin + tile]
    rebuilt = paste_tiles(torch.zeros(2, 10, 14), centres, where, tile,
                          torch.ones(2, 10, 14, dtype=torch.bool))
    torch.testing.assert_close(rebuilt, images[:, 0], rtol=0, atol=0)
    # the context past the photo's border repeats its edge pixels
    first = windows[0, 0]  # image 0, tile (0, 0)
    torch.testing.assert_close(first[:margin, margin:], images[0, 0, :1, :tile + margin]
                               .expand(margin, -1), rtol=0, atol=0)
    torch.testing.assert_close(first[margin:, :margin], images[0, 0, :tile + margin, :1]
                               .expand(-1, margin), rtol=0, atol=0)


def test_paste_writes_only_inside_the_band():
    target = torch.zeros(1, 8, 8)
    band = torch.zeros(1, 8, 8, dtype=torch.bool)
    band[0, 1, 2] = band[0, 6, 7] = True
    where = torch.tensor([[0, 0, 0], [0, 1, 1]])
    out = paste_tiles(target, torch.ones(2, 4, 4), where, 4, band)
    assert out is target and torch.equal(out.bool(), band)


def test_the_coarse_probability_blurs_only_the_edge():
    mask = torch.zeros(1, 32, 48, dtype=torch.uint8)
    mask[0, 8:24, 13:37] = 1  # edges off the coarse grid of 8 x 12 (4 px per coarse pixel)
    soft = coarse_probability(mask, (8, 12))
    assert soft.shape == mask.shape and soft.dtype == torch.float32
    assert soft.min() >= 0 and soft.max() <= 1
    assert torch.all(soft[0, 12:20, 20:30] == 1) and torch.all(soft[0, :4] == 0)
    blurred = (soft > 0) & (soft < 1)
    assert blurred.any() and torch.all(edge_band(mask.float(), 4) | ~blurred)
    assert abs(float(soft.sum() - mask.sum())) < 0.05 * float(mask.sum())  # area kept
