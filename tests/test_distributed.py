"""Several processes under torchrun, seen from one: contiguous per-rank blocks in whole batches,
the single-process behaviour of DistInfo, setup, the reductions and run_on_all_ranks."""

from __future__ import annotations

import itertools

import pytest
import torch

from pipeline import distributed as dist_mod
from pipeline.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    block_range,
    cleanup,
    gather,
    mean_over_ranks,
    run_on_all_ranks,
    setup,
)
from pipeline.errors import PipelineError


def test_block_range_covers_everything_in_whole_batches():
    for n, world, align in [(10, 2, 4), (100064, 3, 8), (5, 4, 4), (7, 1, 3)]:
        blocks = [block_range(n, r, world, align) for r in range(world)]
        assert blocks[0][0] == 0 and blocks[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))
        assert all((stop - start) % align == 0 for start, stop in blocks if stop < n)


def test_block_range_by_hand():
    assert [block_range(10, r, 3) for r in range(3)] == [(0, 4), (4, 8), (8, 10)]
    assert [block_range(10, r, 2, 4) for r in range(2)] == [(0, 8), (8, 10)]
    assert [block_range(3, r, 4, 4) for r in range(4)] == [(0, 3), (3, 3), (3, 3), (3, 3)]
    assert block_range(0, 0, 2) == (0, 0)


def test_dist_info_defaults_to_one_process_on_the_cpu():
    info = DistInfo()
    assert (info.rank, info.world_size, info.local_rank) == (0, 1, 0)
    assert info.device == torch.device("cpu")
    assert info.is_main and not info.enabled
    two = DistInfo(rank=1, world_size=2)
    assert two.enabled and not two.is_main


def test_setup_without_torchrun_is_one_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    info = setup()
    assert info == DistInfo()
    assert setup("cpu").device == torch.device("cpu")
    with pytest.raises(PipelineError, match="--device cuda: no CUDA device is visible"):
        setup("cuda")
    cleanup(info)  # nothing to tear down
    barrier(info)  # nothing to wait for
    assert not torch.distributed.is_initialized()


def test_reductions_on_one_process_are_identities():
    info = DistInfo()
    t = torch.tensor([1.0, 2.0])
    assert all_reduce_sum(t, info) is t
    assert mean_over_ranks(2.5, info) == 2.5
    obj = {"rows": [1, 2]}
    assert gather(obj, info) == [obj] and gather(obj, info)[0] is obj


def test_run_on_all_ranks_returns_or_raises_the_ranks_own_error():
    info = DistInfo()
    assert run_on_all_ranks(lambda: 42, info) == 42

    def fails():
        raise PipelineError("data/x.jpg: unreadable")

    with pytest.raises(PipelineError, match="^data/x.jpg: unreadable$"):
        run_on_all_ranks(fails, info)

    def bug():
        raise ValueError("a bug, not a user error")

    with pytest.raises(ValueError):  # only PipelineError is shared with the other ranks
        run_on_all_ranks(bug, info)


def test_run_on_all_ranks_raises_when_another_rank_failed(monkeypatch):
    """Rank 0 of two succeeds, but the summed failure flag says another rank failed."""
    sent = []

    def other_rank_failed(tensor, info):
        sent.append(float(tensor.sum()))
        return tensor + 1.0  # the other rank's flag

    monkeypatch.setattr(dist_mod, "all_reduce_sum", other_rank_failed)
    with pytest.raises(PipelineError, match="another rank failed while preparing data"):
        run_on_all_ranks(lambda: 42, DistInfo(rank=0, world_size=2))
    assert sent == [0.0]  # this rank reported success before learning of the failure


