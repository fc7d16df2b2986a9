"""Train the edge refiner of a run, on full-resolution windows along the car's edge of the
run's training images.

The coarse input is synthetic (:func:`pipeline.refine.geometry.coarse_probability` of the true
mask at the run's training size), not the trained model's output: it depends on no model, cannot
leak validation images, and is exactly the blur a model at that input size cannot avoid. To also
cover a real model's small errors, each image draws (seeded by seed, epoch and index) a coarse
size within ``1 +- refine.jitter`` of the training size and shifts the true mask by up to one
coarse pixel before the blur.

Training is a fixed number of optimiser steps (seeded, so the same commit gives the same
refiner), AdamW with cosine decay, and a binary cross-entropy that counts the band along the
edge fully and the rest of each window at ``refine.outside_weight``.

:func:`train_refiner` is the core of ``python -m pipeline.refine`` and of ``refine.train``: fold
K's training images only (never its validation images), the coarse size of the fold's best.pt,
and ``refiner.pt`` written beside it, recording the images it learnt from.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pipeline.config import Config, RefineConfig
from pipeline.data.cache import records_of
from pipeline.data.io import read_image, read_mask
from pipeline.data.layout import train_index
from pipeline.data.transforms import normalize_batch
from pipeline.device import autocast, resolve_precision, seed_everything
from pipeline.errors import PipelineError
from pipeline.folds.splits import fold_rows, load_folds
from pipeline.keys import output_key, result_settings
from pipeline.models.checkpoint import checkpoint_config, load_checkpoint
from pipeline.refine.geometry import coarse_probability, edge_band
from pipeline.refine.net import EdgeRefiner
from pipeline.refine.store import save_refiner
from pipeline.runs import RunPaths
from pipeline.schedule import lr_at


def window_starts(centres: np.ndarray, size: int, limit: int) -> np.ndarray:
    """Top-left coordinates of ``size`` windows centred on ``centres``, kept inside
    ``[0, limit)``."""
    return np.clip(centres - size // 2, 0, max(0, limit - size))


class EdgePatches(Dataset):
    """Item i: ``refine.patches_per_image`` windows of training image i, as
    (rgb uint8 K x S x S x 3, coarse float32 K x S x S, target uint8 K x S x S), the coarse
    probability that of a model at input size ``coarse`` (h, w)."""

    def __init__(self, rows: Iterable[Any] | pd.DataFrame, cfg: RefineConfig,
                 coarse: tuple[int, int]):
        self.items = records_of(rows)
        self.cfg = cfg
        self.coarse = coarse
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        cfg, rec = self.cfg, self.items[i]
        rng = np.random.default_rng([cfg.seed, self.epoch, i])
        image = read_image(rec["image_path"])
        mask = torch.from_numpy(np.array(read_mask(rec["mask_path"]), dtype=np.uint8))
        h, w = mask.shape
        scale = 1.0 + rng.uniform(-cfg.jitter, cfg.jitter)
        coarse_size = (max(8, round(self.coarse[0] * scale)),
                       max(8, round(self.coarse[1] * scale)))
        step = max(1, round(h / coarse_size[0]))  # one coarse pixel, in full-size pixels
        dy, dx = (int(v) for v in rng.integers(-step, step + 1, size=2))
        shifted = torch.roll(mask, shifts=(dy, dx), dims=(0, 1))
        coarse = coarse_probability(shifted[None], coarse_size)[0]
        band = edge_band(coarse[None], cfg.band_margin)[0].numpy()
        ys, xs = np.nonzero(band)
        if len(ys) == 0:  # no car edge at all: windows anywhere
            ys, xs = rng.integers(0, h, 1), rng.integers(0, w, 1)
        pick = rng.integers(0, len(ys), cfg.patches_per_image)
        size = cfg.patch
        top, left = window_starts(ys[pick], size, h), window_starts(xs[pick], size, w)
        rgb = np.stack([image[t:t + size, x:x + size] for t, x in zip(top, left)])
        soft = torch.stack([coarse[t:t + size, x:x + size] for t, x in zip(top, left)])
        target = torch.stack([mask[t:t + size, x:x + size] for t, x in zip(top, left)])
        return torch.from_numpy(rgb), soft, target


def collate_patches(items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate the windows of several images into one batch."""
    return tuple(torch.cat([it[k] for it in items]) for k in range(3))


def refiner_loss(logits: torch.Tensor, target: torch.Tensor, coarse: torch.Tensor,
                 cfg: RefineConfig) -> torch.Tensor:
    """BCE over each window's centre (``refine.context`` px trimmed: the apply step never uses
    the border), the undecided band weighted 1 and the rest ``refine.outside_weight``."""
    c = cfg.context
    if c:
        logits, target, coarse = (t[:, c:-c, c:-c] for t in (logits, target, coarse))
    weights = edge_band(coarse, cfg.band_margin).float()
    weights = weights + cfg.outside_weight * (1 - weights)
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target.float(),
                                                   reduction="none")
    return (per_pixel * weights).sum() / weights.sum()


def fit_refiner(cfg: RefineConfig, rows: pd.DataFrame, coarse: tuple[int, int],
                device: torch.device, precision: str = "auto",
                progress: bool = True) -> tuple[EdgeRefiner, list]:
    """Train a refiner for a model of input size ``coarse`` on windows of ``rows``
    (image_path, mask_path); returns it (eval mode) and the loss every ``refine.log_every``
    steps."""
    if cfg.patch % 2 or cfg.patch <= 2 * cfg.context:
        raise PipelineError(f"refine.patch must be even and larger than 2 * refine.context, "
                            f"got {cfg.patch} and {cfg.context}")
    if min(cfg.steps, cfg.images_per_batch, cfg.patches_per_image) < 1:
        raise PipelineError("refine.steps, refine.images_per_batch and "
                            "refine.patches_per_image must be >= 1")
    seed_everything(cfg.seed)
    prec = resolve_precision(precision, device, what="train.precision")
    if prec.warning:
        print(prec.warning, file=sys.stderr, flush=True)
    model = EdgeRefiner(cfg.width).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    dataset = EdgePatches(rows, cfg, coarse)
    history, step, epoch, start = [], 0, 0, time.perf_counter()
    bar = tqdm(total=cfg.steps, desc="refiner", disable=not progress, leave=False)
    while step < cfg.steps:
        dataset.set_epoch(epoch)
        loader = DataLoader(
            dataset, batch_size=cfg.images_per_batch, num_workers=cfg.num_workers,
            shuffle=True, generator=torch.Generator().manual_seed(cfg.seed + epoch),
            collate_fn=collate_patches, drop_last=len(dataset) >= 2 * cfg.images_per_batch)
        for rgb, soft, target in loader:
            if step >= cfg.steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg.steps, cfg.steps // 20, cfg.lr, cfg.lr / 100)
            rgb, soft, target = (t.to(device) for t in (rgb, soft, target))
            with autocast(prec, device):
                logits = model(normalize_batch(rgb).contiguous(), soft)
            loss = refiner_loss(logits, target, soft, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            bar.update()
            if step % cfg.log_every == 0 or step == cfg.steps:
                history.append({"step": step, "loss": float(loss.detach()),
                                "seconds": time.perf_counter() - start})
                bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
        epoch += 1
    bar.close()
    return model.eval(), history


def refiner_key(cfg: Config, best: Path) -> str:
    """What a refiner is trained from: the model's checkpoint (its input size and training
    images) and the settings that change the refiner (``refine.train`` says whether, not how)."""
    settings = result_settings(cfg.refine)
    del settings["train"]
    return output_key([best], settings, cfg.train.precision)


@dataclass
class RefinerResult:
    """What :func:`train_refiner` wrote and how long it took."""

    path: Path
    images: int
    coarse: tuple[int, int]
    history: list
    seconds: float


def train_refiner(cfg: Config, fold: int, folds_path: Path, run: RunPaths,
                  device: torch.device, progress: bool = True) -> RefinerResult:
    """Train the edge refiner of ``run``'s best.pt on fold ``fold``'s training images of
    ``folds_path`` at that checkpoint's input size, and write ``run.refiner``."""
    if not run.best.is_file():
        raise PipelineError(f"{run.best}: no checkpoint for fold {fold}; train it first "
                            f"(python -m pipeline.train --fold {fold}) or pass the "
                            "--checkpoints root and -m model of a trained run")
    ckpt = load_checkpoint(run.best)
    trained = checkpoint_config(ckpt).train
    coarse = (trained.height, trained.width)
    rows, _ = fold_rows(train_index(cfg.data.root), load_folds(folds_path), fold, folds_path,
                        f"{cfg.data.root}/train")
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    start = time.perf_counter()
    model, history = fit_refiner(cfg.refine, rows, coarse, device, cfg.train.precision,
                                 progress)
    seconds = time.perf_counter() - start
    save_refiner(run.refiner, model, cfg.refine, history, rows["img"], coarse,
                 source=refiner_key(cfg, run.best))
    return RefinerResult(run.refiner, len(rows), coarse, history, seconds)
