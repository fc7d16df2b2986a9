"""pipeline.train.shm: the shared memory the DataLoader workers need, by hand, and the check
against /dev/shm's free space (statvfs faked) that refuses a too small one in one line."""

from __future__ import annotations

import os

import pytest

from pipeline.config import TrainConfig, default
from pipeline.errors import PipelineError
from pipeline.train import shm
from pipeline.train.shm import SAFETY, check_shm, loader_bytes, needed_bytes

MIB = 2**20


def test_loader_bytes_is_batches_in_flight_times_batch_bytes():
    # 2 workers x 2 prefetched batches x 8 samples x 1 MB
    assert loader_bytes(8, 10**6, num_workers=2) == 32 * 10**6
    assert loader_bytes(8, 10**6, num_workers=3, prefetch_factor=4) == 96 * 10**6
    assert loader_bytes(8, 10**6, num_workers=0) == 0


def test_needed_bytes_by_hand():
    tc = default(TrainConfig, height=1024, width=1024, batch_size=8, num_workers=2)
    sample = 1024 * 1024 * (3 + 1)  # uint8 RGB + uint8 mask: 4 MiB
    assert shm.BYTES_PER_PIXEL == 4
    assert needed_bytes(tc, (1024, 1024)) == 8 * sample * 2 * 2 * SAFETY  # 192 MiB
    assert needed_bytes(tc, (1024, 1024), processes=4) == 4 * needed_bytes(tc, (1024, 1024))


def test_needed_bytes_takes_the_larger_of_training_crops_and_validation():
    tc = default(TrainConfig, height=1024, width=1024, batch_size=2, num_workers=1)
    whole = needed_bytes(tc, (1024, 1024))
    # training crops are smaller, but validation still ships whole images
    assert needed_bytes(tc, (256, 256)) == whole
    # with full_res_val each validation sample also carries the 1280x1918 source mask
    full = default(TrainConfig, height=1024, width=1024, batch_size=2, num_workers=1, full_res_val=True)
    per_sample = 1024 * 1024 * 4 + 1280 * 1918
    assert needed_bytes(full, (256, 256)) == 2 * per_sample * 2 * 1 * SAFETY


def fake_statvfs(monkeypatch, free_mib: int, total_mib: int = 64) -> list[str]:
    """/dev/shm with ``free_mib`` of ``total_mib`` free (4 KiB blocks); returns the paths
    asked for."""
    asked = []

    def statvfs(path):
        asked.append(path)
        block = 4096
        return os.statvfs_result((block, block, total_mib * MIB // block, free_mib * MIB // block,
                                  free_mib * MIB // block, 0, 0, 0, 0, 255))

    monkeypatch.setattr(shm.os, "statvfs", statvfs)
    return asked


def test_a_small_dev_shm_is_one_line_naming_free_needed_and_the_fixes(monkeypatch):
    asked = fake_statvfs(monkeypatch, free_mib=60)  # Docker's default 64 MiB, 4 used
    tc = default(TrainConfig, height=1024, width=1024, batch_size=8, num_workers=2)
    with pytest.raises(PipelineError) as exc:
        check_shm(tc, (1024, 1024))
    line = str(exc.value)
    assert asked == ["/dev/shm"] and "\n" not in line
    assert line.startswith("/dev/shm has 60 MiB free but the DataLoader workers need about "
                           "192 MiB (train.num_workers=2, train.batch_size=8, 1024x1024")
    # 4 MiB already used + 192 needed, rounded up to 256 MiB
    assert "--shm-size=256m" in line and "docker run" in line
    assert "lower train.num_workers" in line and "train.batch_size" in line


def test_enough_dev_shm_passes(monkeypatch):
    fake_statvfs(monkeypatch, free_mib=193, total_mib=256)
    check_shm(default(TrainConfig, height=1024, width=1024, batch_size=8, num_workers=2), (1024, 1024))
    # the demo's 128x192 batches need about 3 MiB: Docker's default is plenty
    fake_statvfs(monkeypatch, free_mib=60)
    check_shm(default(TrainConfig, height=128, width=192, batch_size=8, num_workers=2), (128, 192))


def test_no_workers_or_no_dev_shm_is_not_checked(monkeypatch):
    asked = fake_statvfs(monkeypatch, free_mib=0)
    check_shm(default(TrainConfig, height=1024, width=1024, num_workers=0), (1024, 1024))
    assert asked == []  # no workers: batches never go through shared memory

    def missing(path):  # macOS has no /dev/shm
        raise FileNotFoundError(path)

    monkeypatch.setattr(shm.os, "statvfs", missing)
    check_shm(default(TrainConfig, height=1024, width=1024, num_workers=2), (1024, 1024))
