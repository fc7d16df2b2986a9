"""Several processes under torchrun, seen from one: contiguous per-rank blocks in whole batches,
the single-process behaviour of DistInfo, setup, the reductions and run_on_all_ranks, and
SyncBatchNorm (train.sync_bn): the conversion and its refusal on a CPU."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from pipeline import distributed as dist_mod
from pipeline.config import ModelConfig
from pipeline.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    block_range,
    check_sync_bn,
    cleanup,
    gather,
    local_world_size,
    mean_over_ranks,
    run_on_all_ranks,
    setup,
    sync_batchnorm,
)
from pipeline.errors import PipelineError
from pipeline.models import build_model


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


# --------------------------------------------------------------------------- train.sync_bn


def test_sync_batchnorm_swaps_every_batchnorm_and_keeps_the_state_dict():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="unet", base_width=4, depth=2))
    with torch.no_grad():  # non-default running statistics, so the copy below is checked
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_()
                m.running_var.uniform_(0.5, 2)
    plain = copy.deepcopy(model)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    synced = sync_batchnorm(model)
    kinds = [type(m) for m in synced.modules()]
    assert n_bn > 0 and kinds.count(nn.SyncBatchNorm) == n_bn and nn.BatchNorm2d not in kinds
    state = synced.state_dict()
    assert list(state) == list(plain.state_dict())
    fresh = build_model(ModelConfig(arch="unet", base_width=4, depth=2))
    fresh.load_state_dict(state)  # a checkpoint of the synced model loads into a plain one
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():  # eval mode: running statistics, no collective, runs on a CPU
        torch.testing.assert_close(fresh.eval()(x), plain.eval()(x))


def test_sync_bn_under_ddp_on_a_cpu_is_one_line_and_fine_elsewhere():
    with pytest.raises(PipelineError) as exc:
        check_sync_bn(DistInfo(rank=0, world_size=2, device=torch.device("cpu")))
    line = str(exc.value)
    assert "\n" not in line and line.startswith("train.sync_bn=true needs one CUDA GPU")
    assert "train.sync_bn=false" in line
    check_sync_bn(DistInfo())  # one process: nothing to synchronise, nothing refused
    check_sync_bn(DistInfo(rank=1, world_size=2, device=torch.device("cuda", 1)))


def test_local_world_size_is_torchruns_or_the_world(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert local_world_size(DistInfo(world_size=4)) == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # 2 nodes of 2 GPUs
    assert local_world_size(DistInfo(world_size=4)) == 2
