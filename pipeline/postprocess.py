"""Mask clean-up after thresholding: one car per photo.

Every Carvana photo shows exactly one car, and its mask is one connected region. A model from
scratch sometimes marks a few blobs of background as car (a dark floor edge, a pale turntable
rim) well away from the car; keeping only the largest 8-connected region removes them without
touching the car itself. ``predict.largest_component``: off in the config dataclass, on in
``configs/base.yaml``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def largest_component(masks: torch.Tensor) -> torch.Tensor:
    """N x H x W bool masks -> the same with each mask reduced to its largest 8-connected
    region of True pixels (ties: the region met first in row-major order). An empty mask stays
    empty. Labelling runs on the CPU (OpenCV); the result is on the input's device."""
    if masks.ndim != 3:
        raise ValueError(f"masks must be N x H x W, got shape {tuple(masks.shape)}")
    host = masks.detach().to("cpu", torch.uint8).numpy()
    out = np.zeros(host.shape, dtype=bool)
    for i, mask in enumerate(host):
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if n <= 1:  # background only
            continue
        keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        out[i] = labels == keep
    return torch.from_numpy(out).to(masks.device)
