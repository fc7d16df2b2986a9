"""Resumable shards of a submission and their merge.

Shards are written as a sequence of **gzip members**, one per chunk of rows, so a shard can grow
by appending and be cut back to the last finished chunk after a crash. Chunks are compressed and
written by a background thread while the next batches are predicted. Under torchrun each rank
writes its own shard; rank 0 merges them in order into one gzip stream (a multi-member gzip is
valid, but not every reader takes it).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from pipeline import faults
from pipeline.atomic import WRITE_ERRNOS, atomic_path, write_bytes, write_json
from pipeline.errors import PipelineError
from pipeline.submit.format import check_submission


def gzip_member(text: str) -> bytes:
    """One deterministic gzip member (no timestamp, no file name) holding ``text``."""
    return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)


class ShardWriter:
    """Append rows to ``path`` as gzip members, one per chunk, with a resume stamp.

    The stamp ``<path>.json`` holds ``key`` (what the rows were computed from), the number of
    rows written and the file size after them; it is rewritten atomically after each chunk. On
    start, a stamp with the same key resumes: the file is cut back to the stamped size (dropping
    a chunk a crash left half-written), its content is checked (it must decompress to the
    stamped number of lines), and ``rows_done`` rows are skipped by the caller. Any other state
    (another key, a damaged shard) starts the shard afresh. ``header`` is written first when
    given. :meth:`flush` hands a chunk to a writer thread; :meth:`close` waits for it, and a
    write error surfaces at the next :meth:`flush` or :meth:`close`.
    """

    def __init__(self, path: str | Path, key: str, header: str | None = None,
                 on_written: Callable[[int], None] | None = None):
        self.path = Path(path)
        self.stamp = self.path.with_name(self.path.name + ".json")
        self.key = key
        self.buffer: list[str] = []
        self.pending = 0  # rows queued in buffer
        self.rows_done = 0  # rows durably written
        self.resumed = False  # continued an earlier run
        self.discarded = False  # an earlier shard with another key (or damaged) was replaced
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._inflight: Future | None = None
        self._failed = False
        self._on_written = on_written  # called with rows_done after each durable chunk
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = self._read_stamp()
        lines = int(state["rows"]) + (1 if header else 0) if state else -1
        if state and state.get("key") == key and self._size() >= state["bytes"] \
                and _line_count(self.path, int(state["bytes"])) == lines:
            with open(self.path, "r+b") as fh:
                fh.truncate(state["bytes"])
            self.rows_done, self.bytes = int(state["rows"]), int(state["bytes"])
            self.resumed = True
        else:
            self.discarded = self.path.is_file() and self._size() > 0
            write_bytes(self.path, gzip_member(header + "\n") if header else b"")
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
        """Hand the queued rows to the writer thread (after the previous chunk is written).
        After a failed write nothing more is written: the shard ends at its last good chunk."""
        if self._failed:
            return
        try:
            self._wait()
        except BaseException:
            self._failed = True
            raise
        if not self.pending:
            return
        text, rows = "".join(self.buffer), self.pending
        self.buffer, self.pending = [], 0
        self._inflight = self._thread.submit(self._append, text, rows)

    def close(self) -> None:
        """Wait until every chunk handed over is durably written (raises its write error)."""
        try:
            self._wait()
        finally:
            self._thread.shutdown(wait=True)

    def _wait(self) -> None:
        if self._inflight is not None:
            future, self._inflight = self._inflight, None
            future.result()

    def _append(self, text: str, rows: int) -> None:
        """Append one chunk as a gzip member, make it durable, then advance the stamp."""
        data = gzip_member(text)
        try:
            with open(self.path, "ab") as fh:
                half = len(data) // 2
                fh.write(data[:half])
                faults.reached("shard.append")  # a crash here leaves half a member
                fh.write(data[half:])
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            if exc.errno not in WRITE_ERRNOS:
                raise
            with contextlib.suppress(OSError), open(self.path, "r+b") as fh:
                fh.truncate(self.bytes)  # drop the half chunk: the file ends on a whole one
            raise PipelineError(
                f"{self.path}: could not be written ({exc.strerror}); the {self.rows_done} "
                "rows written before are kept: free space and re-run to resume") from None
        self.bytes += len(data)
        self.rows_done += rows
        self._write_stamp()
        if self._on_written:
            self._on_written(self.rows_done)

    def remove(self) -> None:
        for p in (self.path, self.stamp):
            if p.exists():
                p.unlink()


def _line_count(path: Path, size: int) -> int:
    """Lines in the first ``size`` bytes of a gzip shard; -1 when they do not decompress."""
    try:
        with open(path, "rb") as raw:
            data = raw.read(size)
        return gzip.decompress(data).count(b"\n") if data else 0
    except (OSError, EOFError, zlib.error):
        return -1


def recompress(parts: Iterable[str | Path], out: str | Path, block: int = 1 << 22) -> None:
    """Decompress the gzip ``parts`` in order and write them to ``out`` as one gzip stream
    (deterministic: no time stamp, no file name)."""
    with open(out, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as dst:
        for part in parts:
            with gzip.open(part, "rb") as src:
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
                    stall_s: float = 1800.0, poll_s: float = 2.0) -> None:
    """Block until every shard is complete; raise one line when none of the pending shards
    has grown for ``stall_s`` seconds (a shard on another machine's disk never appears here).
    (torchrun stops all ranks when one fails.)"""
    announced, last, seen = False, time.monotonic(), None
    while pending := [s for s, k, n in zip(shards, keys, rows) if not shard_done(s, k, n)]:
        state = [_progress(s) for s in pending]
        if state != seen:
            seen, last = state, time.monotonic()
        elif time.monotonic() - last > stall_s:
            raise PipelineError(
                f"{pending[0]}: no progress for {stall_s:g} s from {len(pending)} other rank(s); "
                "every rank must write its shard to a folder all of them share (--out-dir) "
                "and still be running; the finished shards are kept, re-run to resume")
        if not announced:
            print(f"waiting for {len(pending)} other rank(s) to finish their shards",
                  file=sys.stderr)
            announced = True
        time.sleep(poll_s)


def _progress(shard: Path) -> tuple:
    """What changes while a rank writes ``shard``: its stamp's size and time."""
    try:
        stat = shard.with_name(shard.name + ".json").stat()
        return stat.st_size, stat.st_mtime_ns
    except OSError:
        return ()


def merge_shards(
    shards: Sequence[Path], out: Path, names: Sequence[str], shape: tuple[int, int], world: int
) -> None:
    """Merge the finished shards into ``out`` (one gzip stream), validate it, rename it into
    place, then delete every part file of ``out`` (also those of runs with another number of
    processes, never another submission's). On any problem the shards stay and ``out`` is
    untouched."""
    for shard in shards:
        if not shard.is_file():
            raise PipelineError(
                f"{shard}: shard not found; with {world} processes every rank must write to a "
                "folder all of them share (--out-dir)"
            )
    with atomic_path(out) as tmp:
        recompress(shards, tmp)
        check_submission(tmp, names, shape)
    for path in part_files(out):
        path.unlink()


def part_files(out: Path) -> list[Path]:
    """Every part file and stamp of submission ``out``: ``.<name>.part[.json]`` and
    ``.<name>.rank<r>-of-<w>.part[.json]``, nothing of another name."""
    stem = re.escape(shard_path(out, 0, 1).name.removesuffix(".part"))
    pattern = re.compile(rf"^{stem}(\.rank\d+-of-\d+)?\.part(\.json)?$")
    return sorted(p for p in out.parent.iterdir() if pattern.match(p.name))
