"""The edge refiner network: a small two-level U-Net on full-resolution windows that sees the
photo and the coarse probability, and returns a correction to the coarse logit.

    input   N x 4 x S x S: the RGB window normalised as for the models, and 2p - 1 of the coarse
            probability p
    output  N x S x S logits = logit(p) + correction, so an untrained refiner (correction 0,
            the last layer starts at zero) changes nothing
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.unet_parts import DoubleConv

LOGIT_CLAMP = 12.0  # logit(p) of a saturated coarse probability, kept finite


class EdgeRefiner(nn.Module):
    """Refined car logits for windows of the photo along the coarse mask's edge."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.width = width
        self.inc = DoubleConv(4, width)
        self.down = nn.Sequential(nn.MaxPool2d(2), DoubleConv(width, 2 * width))
        self.up = nn.ConvTranspose2d(2 * width, width, kernel_size=2, stride=2)
        self.dec = DoubleConv(2 * width, width)
        self.out = nn.Conv2d(width, 1, kernel_size=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, rgb: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """rgb: N x 3 x S x S normalised, coarse: N x S x S probabilities; S even -> N x S x S."""
        p = coarse.clamp(0, 1)[:, None]
        x = torch.cat([rgb, 2 * p - 1], dim=1)
        skip = self.inc(x)
        y = self.dec(torch.cat([skip, self.up(self.down(skip))], dim=1))
        logit = torch.logit(p, eps=1e-6).clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
        return (logit + self.out(y).float())[:, 0]
