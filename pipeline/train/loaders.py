"""From the folds file to DataLoaders: which images train and validate, the cache, sharding."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from pipeline import distributed
from pipeline.config import FULL_HEIGHT, FULL_WIDTH, DataConfig, TrainConfig
from pipeline.data.cache import build_cache
from pipeline.data.dataset import SegmentationDataset, build_transform
from pipeline.data.layout import train_index
from pipeline.distributed import DistInfo
from pipeline.folds.splits import fold_rows, load_folds


def run_rows(data: DataConfig, fold: int, folds_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train rows, validation rows) of the train index of ``data.root`` for ``fold`` of
    ``folds_path``."""
    return fold_rows(train_index(data.root), load_folds(folds_path), fold, folds_path,
                     f"{data.root}/train")


def cache_dir(tc: TrainConfig, data: DataConfig) -> str | None:
    """The resized-image cache, or None at Kaggle's own 1280x1918: a full-size PNG copy would
    decode no faster than the JPEG and double the data on disk."""
    full = (tc.height, tc.width) == (FULL_HEIGHT, FULL_WIDTH)
    return None if full else data.cache_dir


def cache_rows(tc: TrainConfig, cache: str | None, rows: pd.DataFrame, info: DistInfo,
               progress: bool) -> None:
    """Build the resized cache up front, each rank its share, in the main process: an
    unreadable image fails here, as one line, before any worker or output exists."""
    if cache is None:
        return
    mine = rows.iloc[info.rank::info.world_size]
    distributed.run_on_all_ranks(
        lambda: build_cache(mine, tc.height, tc.width, cache, workers=max(1, tc.num_workers),
                            progress=progress), info)
    distributed.barrier(info)


def _worker_init(_: int) -> None:
    # the main process already uses every core for the model; workers decode one image each
    torch.set_num_threads(1)


def make_loaders(tc: TrainConfig, cache: str | None, train_rows: pd.DataFrame,
                 val_rows: pd.DataFrame, info: DistInfo) -> tuple[DataLoader, DataLoader | None]:
    """Training loader (shuffled, seeded per epoch, sharded across ranks) and validation loader
    (in order, sharded without padding so no image is counted twice).

    Workers are not persistent: each epoch's workers get a fresh copy of the dataset, which is
    how they learn the epoch that seeds the augmentation. With the disk cache, starting them
    costs far less than one training step."""
    common = {"num_workers": tc.num_workers, "pin_memory": info.device.type == "cuda",
              "worker_init_fn": _worker_init if tc.num_workers else None}
    train_ds = SegmentationDataset(train_rows, tc.height, tc.width, build_transform(tc),
                                   cache, seed=tc.seed)
    per_step = tc.batch_size * info.world_size
    drop_last = len(train_ds) >= 2 * per_step  # a ragged last batch only adds BatchNorm noise
    if info.enabled:
        sampler = DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank,
                                     shuffle=True, seed=tc.seed, drop_last=drop_last)
    else:
        sampler = RandomSampler(train_ds, generator=torch.Generator())
    train_loader = DataLoader(train_ds, batch_size=tc.batch_size, sampler=sampler,
                              drop_last=drop_last, **common)
    if len(val_rows) == 0:
        return train_loader, None
    val_ds = SegmentationDataset(val_rows, tc.height, tc.width, None, cache,
                                 full_res=tc.full_res_val)
    shard = list(range(info.rank, len(val_ds), info.world_size))
    val_loader = DataLoader(val_ds, batch_size=tc.batch_size, sampler=shard, **common)
    return train_loader, val_loader


def set_epoch(loader: DataLoader, epoch: int, seed: int) -> None:
    """Make the shuffle and the augmentation of ``epoch`` independent of earlier epochs."""
    loader.dataset.set_epoch(epoch)
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    else:
        loader.sampler.generator.manual_seed(seed + epoch)
