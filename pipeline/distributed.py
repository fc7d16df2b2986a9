"""Several processes under ``torchrun``: rank info, the process group, reductions, and how a
list of items is split into contiguous per-rank blocks.

torchrun exports ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; without them (or with a world of
one) everything here degrades to a single process. NCCL on GPUs, gloo on CPU. Only rank 0
writes shared files; metrics are sums that ranks add together before dividing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from pipeline.device import pick_device
from pipeline.errors import PipelineError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` and the device it computes on."""

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


def setup(device: str | None = None) -> DistInfo:
    """Join the process group when launched by torchrun and pick this process's device: its
    local GPU, else ``device`` (one process only), else the first GPU or the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if world > 1 or not device:
        chosen = torch.device("cuda", local % torch.cuda.device_count()) if cuda \
            else torch.device("cpu")
    else:
        chosen = pick_device(device)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=chosen)


def local_world_size(info: DistInfo) -> int:
    """The processes of this run on this machine (torchrun's ``LOCAL_WORLD_SIZE``), which
    share its memory and its /dev/shm."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))


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


def mean_over_ranks(value: float, info: DistInfo) -> float:
    """The mean of a Python float over ranks (a pace, an epoch time)."""
    total = all_reduce_sum(torch.tensor([value], dtype=torch.float64), info)
    return float(total[0]) / info.world_size


def gather(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` on every rank, in rank order (just ``[obj]`` on one process)."""
    if not info.enabled:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


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


def block_range(n: int, rank: int, world: int, align: int = 1) -> tuple[int, int]:
    """Rank ``rank``'s contiguous [start, stop) of ``n`` items; block sizes are multiples of
    ``align`` (the batch size) except the last, so batches match a single-process run."""
    per_rank = -(-n // world)  # ceil
    per_rank = -(-per_rank // align) * align
    start = min(n, rank * per_rank)
    return start, min(n, start + per_rank)
