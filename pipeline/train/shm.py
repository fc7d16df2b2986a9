"""Whether /dev/shm holds the batches the DataLoader workers send, checked before training.

Each worker puts its finished batches in shared memory (/dev/shm on Linux) for the main process
to pick up. Docker gives a container 64 MiB of it by default; when the workers need more, a
worker dies with "bus error" or "No space left on device" deep into the first epoch. So the
need is estimated from the settings and compared with the free space before anything starts:

    per loader   batch_size x pixels per sample x bytes per pixel
                 x prefetch_factor batches per worker x num_workers
    needed       the larger of the training and validation loaders (they never run together)
                 x the processes of the run on this machine x SAFETY

A sample is uint8 (:mod:`pipeline.data.dataset`): an RGB image and a mask, 4 bytes a pixel at
the training size (or ``train.crop``); validation with ``train.full_res_val`` adds the
1280 x 1918 source mask.
"""

from __future__ import annotations

import math
import os

from pipeline.config import FULL_HEIGHT, FULL_WIDTH, TrainConfig
from pipeline.errors import PipelineError

SHM = "/dev/shm"
BYTES_PER_PIXEL = 3 + 1  # uint8 RGB image + uint8 mask, as the training dataset returns them
FULL_MASK_BYTES = FULL_HEIGHT * FULL_WIDTH  # uint8 source mask of a full_res_val sample
PREFETCH_FACTOR = 2  # DataLoader's default, which make_loaders keeps
# Beyond the prefetched batches: the one the loop trains on, the one being pinned, and the
# per-tensor overhead of shared-memory files.
SAFETY = 1.5
MIB = 2**20


def loader_bytes(batch_size: int, sample_bytes: int, num_workers: int,
                 prefetch_factor: int = PREFETCH_FACTOR) -> int:
    """Shared memory one loader's workers fill: ``prefetch_factor`` batches per worker."""
    return batch_size * sample_bytes * prefetch_factor * num_workers


def needed_bytes(tc: TrainConfig, sample_shape: tuple[int, int], processes: int = 1) -> int:
    """The /dev/shm the DataLoader workers of ``processes`` ranks need, with :data:`SAFETY`.
    ``sample_shape``: (h, w) of a training sample (the crop when there is one)."""
    train = sample_shape[0] * sample_shape[1] * BYTES_PER_PIXEL
    val = tc.height * tc.width * BYTES_PER_PIXEL + (FULL_MASK_BYTES if tc.full_res_val else 0)
    per_process = loader_bytes(tc.batch_size, max(train, val), tc.num_workers)
    return math.ceil(per_process * processes * SAFETY)


def check_shm(tc: TrainConfig, sample_shape: tuple[int, int], processes: int = 1,
              path: str = SHM) -> None:
    """Raise one line naming ``path``, the free and needed MiB and the fixes when the workers'
    batches would not fit. Nothing to check without workers or without ``path`` (macOS)."""
    if tc.num_workers <= 0:
        return
    try:
        stat = os.statvfs(path)
    except (OSError, AttributeError):  # no /dev/shm (macOS), no statvfs (Windows)
        return
    free, total = stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize
    need = needed_bytes(tc, sample_shape, processes)
    if need <= free:
        return
    # a size that holds what others already use plus this run, rounded up to 256 MiB
    size = math.ceil((total - free + need) / (256 * MIB)) * 256
    raise PipelineError(
        f"{path} has {free / MIB:.0f} MiB free but the DataLoader workers need about "
        f"{need / MIB:.0f} MiB (train.num_workers={tc.num_workers}, "
        f"train.batch_size={tc.batch_size}, {sample_shape[0]}x{sample_shape[1]} samples"
        f"{f', {processes} processes' if processes > 1 else ''}); in Docker start the "
        f"container with --shm-size={size}m (docker run --shm-size=...), or lower "
        "train.num_workers (0: no workers, no shared memory) or train.batch_size")
