"""DistributedDataParallel plumbing for ``torchrun --nproc_per_node N -m pipeline.train``.

torchrun exports ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; without them (or with a world of
one) everything here degrades to a single process. NCCL on GPUs, gloo on CPU. Only rank 0
writes files; metrics are sums that ranks add together before dividing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup() -> DistInfo:
    """Join the process group when launched by torchrun; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over ranks (returned on its original device); identity on one process."""
    if not info.enabled:
        return tensor
    # NCCL reduces on the GPU, gloo on the CPU
    work = tensor.to(info.device if info.device.type == "cuda" else "cpu").clone()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(tensor.device)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def run_on_all_ranks(fn, info: DistInfo):
    """Call ``fn()`` on every rank; if any rank raises ``PipelineError``, every rank raises
    (the failing one with its own message), so no rank waits forever at the next collective."""
    error = None
    try:
        result = fn()
    except PipelineError as exc:
        error, result = exc, None
    failed = all_reduce_sum(torch.tensor([0.0 if error is None else 1.0]), info)
    if error is not None:
        raise error
    if failed.item() > 0:
        raise PipelineError("another rank failed while preparing data (see its error line)")
    return result
