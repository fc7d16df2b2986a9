"""Decoding speed for ``python -m pipeline.benchmark gpu``: the same JPEG files read into
device batches at the model's input size by the DataLoader workers (OpenCV decode and resize,
``predict.decode: workers``) and by the device (the workers read bytes, torchvision decodes the
batch there and resizes it, ``predict.decode: device``), with how far the two sets of pixels
differ. No model runs: this is the input side of prediction alone."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from pipeline.config import PredictConfig
from pipeline.device import synchronize
from pipeline.inference.engine import batch_on_device
from pipeline.inference.loader import ImageDataset, make_loader


def _decoded(paths: Sequence[Path], size: tuple[int, int], out_shape: tuple[int, int],
             cfg: PredictConfig, device: torch.device) -> tuple[list[torch.Tensor], float]:
    """Device batches of ``paths`` at ``size`` and the seconds it took (after one warm-up
    batch, so worker start-up and decoder initialisation stay out)."""
    def run(items: Sequence[Path]) -> list[torch.Tensor]:
        loader = make_loader(ImageDataset(items, [size], out_shape, decode=cfg.decode), cfg,
                             device)
        return [batch_on_device(batch, [size], False, device)[0][size] for batch in loader]

    run(paths[: cfg.batch_size])  # warm-up
    synchronize(device)
    start = time.perf_counter()
    out = run(paths)
    synchronize(device)
    return out, time.perf_counter() - start


def decode_rates(paths: Sequence[Path], size: tuple[int, int], out_shape: tuple[int, int],
                 cfg: PredictConfig, device: torch.device) -> dict:
    """Images/s of each way of decoding ``paths`` to device batches at ``size``, and the
    largest and the share of differing pixel values between them."""
    result = {"input_size": list(size), "num_workers": cfg.num_workers}
    batches = {}
    for decode in ("workers", "device"):
        out, seconds = _decoded(paths, size, out_shape, dataclasses.replace(cfg, decode=decode),
                                device)
        result[f"{decode}_img_per_s"] = len(paths) / seconds
        batches[decode] = torch.cat(out)
    diff = (batches["workers"].int() - batches["device"].int()).abs()
    result["max_pixel_difference"] = int(diff.max())
    result["differing_fraction"] = float((diff > 0).float().mean())
    result["device_over_workers"] = result["device_img_per_s"] / result["workers_img_per_s"]
    return result
