"""Resumable shards of a submission and their merge.

Shards are written as a sequence of **gzip members**, one per chunk of rows. Concatenated gzip
members form a valid gzip stream, so a shard can grow by appending, be cut back to the last
finished chunk after a crash, and shards are merged by concatenating their bytes. Under
torchrun each rank writes its own shard; rank 0 merges them in order.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from pipeline.atomic import atomic_path, write_json
from pipeline.errors import PipelineError
from pipeline.submission.format import check_submission


def gzip_member(text: str) -> bytes:
    """One deterministic gzip member (no timestamp, no file name) holding ``text``."""
    return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)


class ShardWriter:
    """Append rows to ``path`` as gzip members, one per chunk, with a resume stamp.

    The stamp ``<path>.json`` holds ``key`` (what the rows were computed from), the number of
    rows written and the file size after them; it is rewritten atomically after each chunk. On
    start, a stamp with the same key resumes: the file is cut back to the stamped size (dropping
    a chunk a crash left half-written) and ``rows_done`` rows are skipped by the caller. Any
    other state starts the shard afresh. ``header`` is written first when given.
    """

    def __init__(self, path: str | Path, key: str, header: str | None = None):
        self.path = Path(path)
        self.stamp = self.path.with_name(self.path.name + ".json")
        self.key = key
        self.buffer: list[str] = []
        self.pending = 0  # rows queued in buffer
        self.rows_done = 0  # rows durably written
        self.resumed = False  # continued an earlier run
        self.discarded = False  # an earlier shard with another key was replaced
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = self._read_stamp()
        if state and state.get("key") == key and self._size() >= state["bytes"]:
            with open(self.path, "r+b") as fh:
                fh.truncate(state["bytes"])
            self.rows_done, self.bytes = int(state["rows"]), int(state["bytes"])
            self.resumed = True
        else:
            self.discarded = self.path.is_file() and self._size() > 0
            self.path.write_bytes(gzip_member(header + "\n") if header else b"")
            self.bytes = self._size()
            self._write_stamp()

    def _size(self) -> int:
        return self.path.stat().st_size if self.path.is_file() else -1

    def _read_stamp(self) -> dict | None:
        try:
            state = json.loads(self.stamp.read_text())
            return state if {"key", "rows", "bytes"} <= set(state) else None
        except (OSError, ValueError):
            return None

    def _write_stamp(self) -> None:
        write_json(self.stamp, {"key": self.key, "rows": self.rows_done, "bytes": self.bytes})

    def add(self, lines: str, count: int) -> None:
        """Queue ``count`` rows (``lines``: their CSV text) for the next :meth:`flush`."""
        self.buffer.append(lines)
        self.pending += count

    def flush(self) -> None:
        """Append the queued rows as one gzip member, make it durable, then advance the stamp."""
        if not self.pending:
            return
        data = gzip_member("".join(self.buffer))
        with open(self.path, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        self.bytes += len(data)
        self.rows_done += self.pending
        self.buffer, self.pending = [], 0
        self._write_stamp()

    def remove(self) -> None:
        for p in (self.path, self.stamp):
            if p.exists():
                p.unlink()


def concat_files(parts: Iterable[str | Path], out: str | Path, block: int = 1 << 22) -> None:
    """Byte-concatenate ``parts`` into ``out`` (gzip members concatenate into one stream)."""
    with open(out, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                while chunk := src.read(block):
                    dst.write(chunk)




def shard_path(out: Path, rank: int, world: int) -> Path:
    """Hidden part file of ``rank`` beside the final ``out`` (``.<name>.part``)."""
    stem = out.name.removesuffix(".gz").removesuffix(".csv")
    suffix = "" if world == 1 else f".rank{rank}-of-{world}"
    return out.with_name(f".{stem}{suffix}.part")


def shard_done(shard: Path, key: str, rows: int) -> bool:
    """Whether ``shard``'s stamp says all ``rows`` rows for ``key`` are written."""
    try:
        state = json.loads(shard.with_name(shard.name + ".json").read_text())
    except (OSError, ValueError):
        return False
    return state.get("key") == key and state.get("rows") == rows


def wait_for_shards(shards: Sequence[Path], keys: Sequence[str], rows: Sequence[int],
                    poll_s: float = 2.0) -> None:
    """Block until every shard is complete. (torchrun stops all ranks when one fails.)"""
    announced = False
    while pending := [s for s, k, n in zip(shards, keys, rows) if not shard_done(s, k, n)]:
        if not announced:
            print(f"waiting for {len(pending)} other rank(s) to finish their shards",
                  file=sys.stderr)
            announced = True
        time.sleep(poll_s)


def merge_shards(
    shards: Sequence[Path], out: Path, names: Sequence[str], shape: tuple[int, int], world: int
) -> None:
    """Concatenate the finished shards into ``out``, validate it, rename it into place, then
    delete every part file of ``out`` (also those of runs with another number of processes).
    On any problem the shards stay and ``out`` is untouched."""
    for shard in shards:
        if not shard.is_file():
            raise PipelineError(
                f"{shard}: shard not found; with {world} processes every rank must write to a "
                "folder all of them share (--out-dir)"
            )
    with atomic_path(out) as tmp:
        concat_files(shards, tmp)
        check_submission(tmp, names, shape)
    stem = shard_path(out, 0, 1).name  # .<name>.part
    for path in out.parent.glob(f"{stem.removesuffix('.part')}.*"):
        if path.name.startswith(stem) or (".rank" in path.name and ".part" in path.name):
            path.unlink()
