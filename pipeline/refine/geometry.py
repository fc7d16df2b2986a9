"""Where the edge refiner looks: the band along a coarse mask's edge, the tiles covering it, and
the coarse probability a low-resolution model gives a mask.

Conventions: masks and probabilities are (H, W) or (N, H, W) tensors at the photo's full size;
tiles are ``tile`` x ``tile`` squares of a grid anchored at (0, 0); a tile is addressed by
(image, row, column) of that grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def coarse_probability(mask: torch.Tensor, coarse: tuple[int, int]) -> torch.Tensor:
    """What a perfect model at input size ``coarse`` (h, w) predicts for the full-size
    ``mask`` (N x H x W {0, 1}): the mask area-averaged down to ``coarse`` and upsampled back
    bilinearly (``align_corners=False``), exactly as the inference engine upsamples. Float32
    N x H x W in [0, 1]; only the car's edge is blurred."""
    m = mask.float()[:, None]
    low = F.interpolate(m, size=coarse, mode="area")
    return F.interpolate(low, size=mask.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Bool N x H x W: the pixels within ``radius`` px (a square, Chebyshev distance) of a True
    pixel of ``mask``, inside the image. A 1-D max filter along the rows, then the columns,
    each row a batch item: on a full-size photo ten times faster than a square max-pool."""
    if radius <= 0:
        return mask.bool()
    n, h, w = mask.shape
    size = 2 * radius + 1
    rows = F.max_pool1d(mask.float().reshape(n * h, 1, w), size, 1, radius)
    cols = rows.reshape(n, h, w).transpose(1, 2).reshape(n * w, 1, h)
    return F.max_pool1d(cols, size, 1, radius).reshape(n, w, h).transpose(1, 2) > 0


def edge_band(probs: torch.Tensor, margin: int, low: float = 0.02,
              high: float = 0.98) -> torch.Tensor:
    """Bool N x H x W: the pixels whose probability is undecided (in (``low``, ``high``)) or
    within ``margin`` px of one, and the edge pixels of the thresholded mask with them (a
    confident but sharp edge still gets its margin)."""
    p = probs.float()
    undecided = (p > low) & (p < high)
    hard = p > 0.5
    edge = dilate(hard, 1) & dilate(~hard, 1)  # a car and a background pixel in its 3 x 3
    return dilate(undecided | edge, margin)


def band_tiles(band: torch.Tensor, tile: int) -> torch.Tensor:
    """(K, 3) long tensor of (image, row, column) of every ``tile`` grid square that holds a
    band pixel, in row-major order per image."""
    grid = F.max_pool2d(band[:, None].float(), tile, stride=tile, ceil_mode=True)[:, 0]
    return torch.nonzero(grid > 0)


def extract_tiles(images: torch.Tensor, where: torch.Tensor, tile: int,
                  margin: int) -> torch.Tensor:
    """The ``(tile + 2 margin)``-square windows centred on tiles ``where`` (from
    :func:`band_tiles`) of ``images`` (N x C x H x W), edge-replicated past the image border:
    K x C x (tile + 2 margin) x (tile + 2 margin)."""
    _, c, h, w = images.shape
    pad_h, pad_w = -h % tile, -w % tile
    padded = F.pad(images, (margin, margin + pad_w, margin, margin + pad_h), mode="replicate")
    size = tile + 2 * margin
    out = images.new_empty((len(where), c, size, size))
    for k, (i, r, col) in enumerate(where.tolist()):
        out[k] = padded[i, :, r * tile : r * tile + size, col * tile : col * tile + size]
    return out


def paste_tiles(target: torch.Tensor, tiles: torch.Tensor, where: torch.Tensor, tile: int,
                band: torch.Tensor) -> torch.Tensor:
    """Write each tile (K x tile x tile, the windows' centres) into ``target`` (N x H x W) where
    ``band`` is True; returns ``target``."""
    h, w = target.shape[-2:]
    for k, (i, r, col) in enumerate(where.tolist()):
        y0, x0 = r * tile, col * tile
        y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
        region = band[i, y0:y1, x0:x1]
        target[i, y0:y1, x0:x1] = torch.where(region, tiles[k, : y1 - y0, : x1 - x0],
                                              target[i, y0:y1, x0:x1])
    return target
