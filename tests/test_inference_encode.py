"""Probabilities to RLE strings from the row runs alone (against the reference encoder and the
device clean-up), and the encoding overlapped with the next batch: same strings in the same
order, a bounded look-ahead, earlier batches kept when the source fails, errors raised."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from pipeline import rle
from pipeline.config import PredictConfig, default
from pipeline.inference import encode
from pipeline.inference.encode import DEPTH, iter_rles, masks_to_rle
from pipeline.inference.engine import Prediction, prepare_engine, to_masks

OVERLAP = prepare_engine(default(PredictConfig, threshold=0.5, largest_component=True,
                                 overlap=True))
INLINE = dataclasses.replace(OVERLAP, cfg=dataclasses.replace(OVERLAP.cfg, overlap=False))


def blobs(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Probabilities with several regions per image (rectangles, some touching the image's
    sides, and a one-pixel speck apart in the last corner), and one empty image."""
    rng = np.random.default_rng(seed)
    probs = rng.random((n, h, w)).astype(np.float32) * 0.4
    for i in range(n - 1):
        for _ in range(int(rng.integers(1, 6))):
            r, c = rng.integers(0, h - 3), rng.integers(0, w - 3)
            probs[i, r : min(r + int(rng.integers(1, h // 2)), h - 3),
                  c : min(c + int(rng.integers(1, w // 2)), w - 3)] = 0.9
        probs[i, -1, -1] = 0.9
    return torch.from_numpy(probs)


def predictions(probs: torch.Tensor, batch: int) -> list[Prediction]:
    return [Prediction(list(range(a, a + len(p))), [f"img{j}" for j in range(a, a + len(p))], p)
            for a, p in zip(range(0, len(probs), batch), probs.split(batch), strict=True)]


# --------------------------------------------------------------------------- masks_to_rle


def test_masks_to_rle_matches_the_reference_encoder():
    probs = torch.rand(3, 20, 30)
    probs[1] = 0  # an empty mask
    probs[2] = 1  # a full one
    got = masks_to_rle(probs, 0.3)
    assert got == [rle.encode_reference((p > 0.3).numpy().astype(np.uint8)) for p in probs]
    assert got[1] == "" and got[2] == "1 600"


@pytest.mark.parametrize("seed", range(5))
def test_clean_up_from_runs_equals_the_masks_cleaned_on_the_device(seed):
    """The host path (labelling and RLE from the runs) gives the strings of the masks the
    device path rebuilds (fill_runs), which the clean-up tests hold to OpenCV's labelling."""
    probs = blobs(4, 17, 23, seed)
    kept = to_masks(probs, 0.5, largest_component=True)
    assert masks_to_rle(probs, 0.5, largest_component=True) == [
        rle.encode_reference(m.numpy().astype(np.uint8)) for m in kept]
    assert masks_to_rle(probs, 0.5) != masks_to_rle(probs, 0.5, largest_component=True)


def test_masks_to_rle_rejects_a_single_image():
    with pytest.raises(ValueError, match="N x H x W"):
        masks_to_rle(torch.zeros(4, 5))


# --------------------------------------------------------------------------- iter_rles


def test_overlapped_encoding_equals_the_main_thread_in_order():
    probs = blobs(11, 16, 24, seed=7)
    inline = list(iter_rles(predictions(probs, 3), INLINE))
    overlapped = list(iter_rles(predictions(probs, 3), OVERLAP))
    assert [b.names for b in overlapped] == [b.names for b in inline] == [
        [f"img{j}" for j in range(a, min(a + 3, 11))] for a in range(0, 11, 3)]
    assert [b.indices for b in overlapped] == [b.indices for b in inline]
    assert [b.rles for b in overlapped] == [b.rles for b in inline]
    assert [r for b in inline for r in b.rles] == masks_to_rle(probs, 0.5, True)


@pytest.mark.parametrize("cfg", [OVERLAP, INLINE], ids=["overlap", "inline"])
def test_encoding_runs_on_a_background_thread_only_with_overlap(cfg, monkeypatch):
    threads = []

    def spy(*args):
        threads.append(threading.current_thread())
        return masks_to_rle(*args)

    monkeypatch.setattr(encode, "masks_to_rle", spy)
    list(iter_rles(predictions(blobs(4, 8, 8, 0), 2), cfg))
    assert len(threads) == 2
    main = threading.main_thread()
    assert all((t is not main) == cfg.cfg.overlap for t in threads)


def test_look_ahead_is_bounded():
    """The source is read at most DEPTH batches ahead of what was yielded, so at most DEPTH
    batches of probabilities are alive however long the run."""
    batches = predictions(blobs(20, 8, 8, 1), 2)
    taken = 0

    def source():
        nonlocal taken
        for b in batches:
            taken += 1
            yield b

    for got, _ in enumerate(iter_rles(source(), OVERLAP), start=1):
        assert taken - got <= DEPTH - 1
    assert taken == len(batches) == 10


@pytest.mark.parametrize("cfg", [OVERLAP, INLINE], ids=["overlap", "inline"])
def test_batches_before_a_failing_source_are_still_yielded(cfg):
    batches = predictions(blobs(8, 8, 8, 2), 2)

    def source():
        yield from batches[:3]
        raise RuntimeError("image 6 is unreadable")

    got = []
    with pytest.raises(RuntimeError, match="unreadable"):
        got.extend(iter_rles(source(), cfg))
    assert [b.names for b in got] == [b.names for b in batches[:3]]
    assert [b.rles for b in got] == [masks_to_rle(b.probs, 0.5, True) for b in batches[:3]]


def test_an_encoding_error_reaches_the_caller():
    bad = [Prediction([0], ["a"], torch.zeros(1, 4, 4)), Prediction([1], ["b"], torch.zeros(4, 4))]
    with pytest.raises(ValueError, match="N x H x W"):
        list(iter_rles(bad, OVERLAP))


def test_stopping_early_leaves_no_thread_running():
    before = {t for t in threading.enumerate() if t.name.startswith("rle")}
    rles = iter_rles(predictions(blobs(12, 8, 8, 3), 2), OVERLAP)
    next(rles)
    rles.close()
    assert {t for t in threading.enumerate() if t.name.startswith("rle")} <= before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_overlapped_encoding_on_a_cuda_stream_equals_the_main_thread():
    probs = blobs(9, 64, 96, seed=4).cuda()
    preds = predictions(probs, 4)
    inline = list(iter_rles(preds, dataclasses.replace(INLINE, device=torch.device("cuda"))))
    overlapped = list(iter_rles(preds, dataclasses.replace(OVERLAP,
                                                           device=torch.device("cuda"))))
    assert [b.rles for b in overlapped] == [b.rles for b in inline]
