"""pipeline.train.loaders: which images a run trains and validates on (run_rows), the cache
rule, and the loaders' sharding and per-epoch shuffle."""

from __future__ import annotations

import torch
from conftest import tiny_config

from pipeline.distributed import DistInfo
from pipeline.train import loaders


def test_no_cache_at_kaggle_resolution(tiny_data, tiny_cache):
    cfg = tiny_config(tiny_data, tiny_cache)
    assert loaders.cache_dir(cfg.train, cfg.data) == str(tiny_cache)
    full = tiny_config(tiny_data, tiny_cache, height=1280, width=1918)
    assert loaders.cache_dir(full.train, full.data) is None


def test_run_rows_split_by_car(tiny_data, tiny_cache, tiny_folds):
    cfg = tiny_config(tiny_data, tiny_cache)
    train_rows, val_rows = loaders.run_rows(cfg.data, 0, tiny_folds)
    assert len(train_rows) == len(val_rows) == 32  # 2 cars of 16 angles on each side
    assert set(train_rows["fold"]) == {1} and set(val_rows["fold"]) == {0}
    assert not set(train_rows["car_id"]) & set(val_rows["car_id"])
    assert all(str(p).startswith(str(tiny_data / "train")) for p in train_rows["image_path"])
    every, none = loaders.run_rows(cfg.data, -1, tiny_folds)  # fold -1: every image, no validation
    assert len(every) == 64 and len(none) == 0


def test_loaders_shard_and_reshuffle_per_epoch(tiny_data, tiny_cache, tiny_folds):
    cfg = tiny_config(tiny_data, tiny_cache)
    train_rows, val_rows = loaders.run_rows(cfg.data, 0, tiny_folds)
    one = DistInfo()
    cache = str(tiny_cache)
    train_loader, val_loader = loaders.make_loaders(cfg.train, cache, train_rows, val_rows, one)
    assert len(train_loader) == 8  # 32 images in batches of 4
    assert list(val_loader.sampler) == list(range(32))  # every image once, in order

    def order(epoch: int) -> list[int]:
        loaders.set_epoch(train_loader, epoch, cfg.train.seed)
        assert train_loader.dataset.epoch == epoch  # seeds the augmentation
        return list(train_loader.sampler)

    first = order(0)
    assert sorted(first) == list(range(32))
    assert order(1) != first and order(0) == first  # seeded by the epoch alone

    # two ranks: validation split without padding, training shards disjoint
    shards = [loaders.make_loaders(cfg.train, cache, train_rows, val_rows,
                                   DistInfo(rank=r, world_size=2, device=torch.device("cpu")))
              for r in range(2)]
    vals = [list(v.sampler) for _, v in shards]
    assert sorted(vals[0] + vals[1]) == list(range(32)) and not set(vals[0]) & set(vals[1])
    trains = []
    for t, _ in shards:
        loaders.set_epoch(t, 0, cfg.train.seed)
        trains.append(list(t.sampler))
    assert sorted(trains[0] + trains[1]) == list(range(32))


def test_fold_minus_one_has_no_validation_loader(tiny_data, tiny_cache, tiny_folds):
    cfg = tiny_config(tiny_data, tiny_cache)
    train_rows, val_rows = loaders.run_rows(cfg.data, -1, tiny_folds)
    train_loader, val_loader = loaders.make_loaders(cfg.train, str(tiny_cache), train_rows,
                                                    val_rows, DistInfo())
    assert val_loader is None and len(train_loader) == 16
