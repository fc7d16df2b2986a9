"""Predicted probabilities to Kaggle RLE strings, overlapped with the next batch's prediction.

:func:`masks_to_rle`: ``probs > threshold`` becomes the runs of each image row on the device
(:func:`pipeline.postprocess.row_runs`, one pass); only that K x 4 array crosses to the host,
where both the largest-region clean-up (:func:`pipeline.postprocess.largest_run_component`)
and the RLE strings (:func:`pipeline.rle.from_row_runs`) are computed from the runs alone. No
mask is rebuilt on the device and there is one host copy per batch.

:func:`iter_rles`: with ``predict.overlap``, that encoding runs on a background thread while the
main thread already queues the next batch's models. On CUDA the thread works on its own stream,
after an event that marks the batch's probabilities done, so the ``nonzero()`` synchronisation,
the labelling and the string formatting wait only for that batch: the GPU keeps the next one
queued instead of idling between batches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pipeline import rle
from pipeline.inference.engine import Engine, Prediction
from pipeline.postprocess import largest_run_component, row_runs

if TYPE_CHECKING:  # typing.Self is Python >= 3.11; annotations are never evaluated here
    from typing_extensions import Self

# Batches submitted before the oldest one's strings are awaited: 2 lets the main thread queue
# batch i+1 on the device while batch i is encoded, and keeps at most two batches of
# probabilities alive (2 x 8 x 1280 x 1918 float32 = 157 MB at full size, batch 8).
DEPTH = 2


def masks_to_rle(probs: torch.Tensor, threshold: float = 0.5,
                 largest_component: bool = False) -> list[str]:
    """N x H x W probabilities on any device -> N Kaggle RLE strings of ``probs > threshold``
    (row-major, 1-based starts); with ``largest_component`` only each mask's largest
    8-connected region (ties: the region whose first pixel comes first in row-major order)."""
    if probs.ndim != 3:
        raise ValueError(f"probs must be N x H x W, got shape {tuple(probs.shape)}")
    n, _, width = probs.shape
    runs = row_runs(probs > threshold).cpu().numpy()
    if largest_component:
        runs = runs[largest_run_component(runs)]
    return rle.from_row_runs(runs, n, width)


@dataclass
class Encoded:
    """One batch's positions in the input list, names and RLE strings."""

    indices: list[int]
    names: list[str]
    rles: list[str]


class _Encoder:
    """One background thread encoding batches in submission order; on CUDA, on its own
    stream."""

    def __init__(self, device: torch.device, threshold: float, largest_component: bool):
        self.args = (threshold, largest_component)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="rle")
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def submit(self, probs: torch.Tensor) -> Future:
        if self.stream is None:
            return self.pool.submit(self._encode, probs)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(probs.device))
        return self.pool.submit(self._encode_on_stream, probs, done)

    def _encode(self, probs: torch.Tensor) -> list[str]:
        with torch.inference_mode():  # thread-local: the thread does not inherit the caller's
            return masks_to_rle(probs, *self.args)

    def _encode_on_stream(self, probs: torch.Tensor, done: torch.cuda.Event) -> list[str]:
        # The caller's stream may already run the next batch; wait only for this one. The
        # thread holds ``probs`` until its copy to the host has synchronised this stream, so
        # the caching allocator cannot hand the memory out while this stream still reads it.
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(done)
            return self._encode(probs)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def iter_rles(preds: Iterable[Prediction], engine: Engine) -> Iterator[Encoded]:
    """The RLE strings of each predicted batch, in order (``predict.threshold``,
    ``predict.largest_component``).

    With ``predict.overlap`` the strings of batch i are computed on a background thread while
    ``preds`` produces batch i+1. If ``preds`` raises, the batches it gave before are still
    yielded, then the error is raised: a resumable writer keeps every finished row.
    """
    cfg = engine.cfg
    args = (cfg.threshold, cfg.largest_component)
    if not cfg.overlap:
        for p in preds:
            yield Encoded(p.indices, p.names, masks_to_rle(p.probs, *args))
        return
    with _Encoder(engine.device, *args) as encoder:
        pending: deque[tuple[list[int], list[str], Future]] = deque()

        def oldest() -> Encoded:
            indices, names, future = pending.popleft()
            return Encoded(indices, names, future.result())

        source = iter(preds)
        while True:
            try:
                p = next(source)
            except StopIteration:
                break
            except Exception:
                while pending:
                    yield oldest()
                raise
            pending.append((p.indices, p.names, encoder.submit(p.probs)))
            del p  # the thread holds the probabilities until their batch is encoded
            if len(pending) >= DEPTH:
                yield oldest()
        while pending:
            yield oldest()
