"""Apply the edge refiner: replace the probabilities along each coarse mask's edge with the
refiner's, computed on full-resolution windows of the photo. Pixels away from the edge keep
the ensemble's probability.

Per batch: the undecided band of the full-size probabilities (:func:`edge_band`), the grid
tiles it touches, one window per tile with ``refine.context`` px of context on each side, the
refiner on all windows in chunks, and the windows' centres written back inside the band.
"""

from __future__ import annotations

import torch

from pipeline.config import RefineConfig
from pipeline.data.transforms import normalize_batch
from pipeline.device import FP32, Precision, autocast
from pipeline.refine.geometry import band_tiles, edge_band, extract_tiles, paste_tiles
from pipeline.refine.net import EdgeRefiner

CHUNK = 64  # windows per refiner call: bounds the memory of a batch with long edges


@torch.inference_mode()
def refine_probs(refiner: EdgeRefiner, cfg: RefineConfig, images: torch.Tensor,
                 probs: torch.Tensor, precision: Precision = FP32) -> torch.Tensor:
    """``probs`` (N x H x W, the ensemble's full-size probabilities) refined along their edges
    using ``images`` (uint8 N x H x W x 3, the photos at the same size); a new tensor."""
    band = edge_band(probs, cfg.band_margin)
    where = band_tiles(band, cfg.tile)
    out = probs.clone()
    if len(where) == 0:
        return out
    x = normalize_batch(images).contiguous()  # N x 3 x H x W
    windows = extract_tiles(torch.cat([x, probs[:, None]], dim=1), where, cfg.tile,
                            cfg.context)
    c = cfg.context
    centres = []
    for chunk in windows.split(CHUNK):
        with autocast(precision, probs.device):
            logits = refiner(chunk[:, :3], chunk[:, 3])
        centres.append(torch.sigmoid(logits.float())[:, c:c + cfg.tile, c:c + cfg.tile])
    return paste_tiles(out, torch.cat(centres), where, cfg.tile, band)
