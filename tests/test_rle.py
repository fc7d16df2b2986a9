"""RLE against hand cases, the common Kaggle reference, a naive decoder and the real files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import rle
from pipeline.config import FULL_SHAPE
from pipeline.data.io import read_mask
from pipeline.data.layout import Layout, mask_name, parse_name, submission_names
from pipeline.postprocess import row_runs


def naive_decode(text: str, shape: tuple[int, int]) -> np.ndarray:
    """Independent oracle: walk the runs pixel by pixel over a row-major, 1-based numbering."""
    _, w = shape
    out = np.zeros(shape, dtype=np.uint8)
    values = [int(v) for v in text.split()]
    for start, length in zip(values[::2], values[1::2]):
        for pixel in range(start, start + length):
            row, col = divmod(pixel - 1, w)
            out[row, col] = 1
    return out


def test_hand_case_from_the_issue():
    mask = np.array([[0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]])
    assert rle.encode(mask) == "7 2 11 2"
    np.testing.assert_array_equal(rle.decode("7 2 11 2", (4, 4)), mask)


def test_row_major_not_column_major():
    mask = np.zeros((3, 4), dtype=np.uint8)
    mask[0, 1] = mask[0, 2] = 1  # one horizontal run: row-major gives a single run
    assert rle.encode(mask) == "2 2"
    assert rle.encode(mask.T.copy()) == "4 1 7 1"  # column-major would split it


@pytest.mark.parametrize(
    "cells, expected",
    [
        ([(0, 0)], "1 1"),  # first pixel: 1-based start
        ([(2, 4)], "15 1"),  # last pixel of a 3x5 image
        ([(0, 4), (1, 0)], "5 2"),  # a run wraps from the end of one row to the next
    ],
)
def test_edges(cells, expected):
    mask = np.zeros((3, 5), dtype=np.uint8)
    for r, c in cells:
        mask[r, c] = 1
    assert rle.encode(mask) == expected
    np.testing.assert_array_equal(rle.decode(expected, (3, 5)), mask)


def test_empty_and_full():
    assert rle.encode(np.zeros((4, 6), dtype=np.uint8)) == ""
    assert rle.encode(np.ones((4, 6), dtype=np.uint8)) == "1 24"
    assert rle.decode("", (4, 6)).sum() == 0
    assert rle.decode("1 24", (4, 6)).all()


@pytest.mark.parametrize("dtype", [np.uint8, bool, np.int64, np.float32])
def test_random_round_trips_match_reference_and_naive_decoder(dtype):
    rng = np.random.default_rng(0)
    for _ in range(100):
        shape = (int(rng.integers(1, 12)), int(rng.integers(1, 12)))
        mask = rng.random(shape) < rng.random()
        text = rle.encode(mask.astype(dtype))
        assert text == rle.encode_reference(mask.astype(np.uint8))
        np.testing.assert_array_equal(naive_decode(text, shape), mask)
        np.testing.assert_array_equal(rle.decode(text, shape), mask)


def test_non_binary_labels_count_as_foreground():
    mask = np.array([[0, 255, 255, 0]], dtype=np.uint8)
    assert rle.encode(mask) == "2 2"


def test_torch_encoder_matches_numpy_on_a_batch():
    rng = np.random.default_rng(1)
    masks = rng.random((5, 7, 9)) < 0.4
    masks[0] = False
    masks[1] = True
    expected = [rle.encode(m) for m in masks]
    assert rle.encode_torch(torch.from_numpy(masks)) == expected
    assert rle.encode_torch(torch.from_numpy(masks.astype(np.uint8))) == expected


@pytest.mark.parametrize("kind", ["probabilities", "uint8 255", "bool", "int8 -1"])
def test_numpy_and_torch_encoders_agree_that_nonzero_is_foreground(kind):
    """The torch encoder cast to int8 first: 255 became -1 (its runs still found) but 0.7
    became 0 (runs lost). Both encoders now agree with the reference on the binary mask."""
    rng = np.random.default_rng(2)
    binary = rng.random((4, 6, 11)) < 0.5
    binary[0] = False
    binary[1, :, -3:] = True  # runs touching the last pixel
    masks = {
        "probabilities": np.where(binary, rng.uniform(0.01, 0.99, binary.shape), 0.0)
        .astype(np.float32),
        "uint8 255": binary.astype(np.uint8) * 255,
        "bool": binary,
        "int8 -1": -binary.astype(np.int8),
    }[kind]
    expected = [rle.encode_reference(m.astype(np.uint8)) for m in binary]
    assert [rle.encode(m) for m in masks] == expected
    assert rle.encode_torch(torch.from_numpy(masks)) == expected


def _row_runs(masks: np.ndarray) -> np.ndarray:
    """An independent K x 4 (image, row, start, end) list: a pixel loop, no torch."""
    out = []
    for i, mask in enumerate(masks):
        for r, line in enumerate(mask):
            c = 0
            while c < len(line):
                if line[c]:
                    s = c
                    while c < len(line) and line[c]:
                        c += 1
                    out.append((i, r, s, c))
                c += 1
    return np.array(out, dtype=np.int64).reshape(-1, 4)


def test_row_runs_to_rle_merges_runs_across_row_ends():
    # rows 1-2 of image 0: a run to the last column continues on the next row's first column
    masks = np.array([[[0, 0, 1, 1], [1, 1, 1, 1], [1, 0, 0, 0]],
                      [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
                      [[1, 0, 0, 1], [0, 0, 0, 0], [1, 0, 0, 1]]], dtype=bool)
    got = rle.from_row_runs(_row_runs(masks), 3, 4)
    assert got == ["3 7", "", "1 1 4 1 9 1 12 1"]
    assert got == [rle.encode_reference(m.astype(np.uint8)) for m in masks]


def test_row_runs_to_rle_matches_the_reference_on_random_masks():
    rng = np.random.default_rng(5)
    for _ in range(200):
        n, h, w = (int(v) for v in rng.integers(1, 6, size=3))
        masks = rng.random((n, h, w)) < rng.random()
        expected = [rle.encode_reference(m.astype(np.uint8)) for m in masks]
        assert rle.from_row_runs(_row_runs(masks), n, w) == expected


def test_row_runs_to_rle_of_a_subset_of_runs():
    """Dropping runs (the clean-up keeps one region's) encodes exactly the runs kept, also
    where a dropped run sat between two that would otherwise look adjacent."""
    masks = np.array([[[1, 1, 0, 1], [1, 0, 1, 1], [1, 1, 1, 1]]], dtype=bool)
    runs = _row_runs(masks)  # (0,0,0,2) (0,0,3,4) (0,1,0,1) (0,1,2,4) (0,2,0,4)
    keep = np.array([True, False, False, True, True])
    kept = np.zeros_like(masks)
    for _, r, a, b in runs[keep]:
        kept[0, r, a:b] = True
    assert rle.from_row_runs(runs[keep], 1, 4) == [rle.encode_reference(kept[0].astype(np.uint8))]
    assert rle.from_row_runs(np.zeros((0, 4)), 2, 4) == ["", ""]


def test_decode_rejects_runs_outside_the_image():
    with pytest.raises(ValueError, match="outside"):
        rle.decode("20 5", (4, 5))
    with pytest.raises(ValueError, match="odd"):
        rle.decode("1 2 3", (4, 5))
    with pytest.raises(ValueError, match="overlap"):
        rle.decode("1 3 2 2", (4, 5))
    with pytest.raises(ValueError, match="overlap"):
        rle.decode("9 1 2 2", (4, 5))  # starts not ascending


@pytest.mark.real_data
def test_known_kaggle_prefix(real_root):
    """The README's verified prefix of the real train_masks.csv for 00087a6bd4dc_01.jpg."""
    mask = read_mask(Layout(real_root).mask_path("00087a6bd4dc_01.jpg"))
    assert mask.shape == FULL_SHAPE
    assert rle.encode(mask).startswith("879386 40 881253 141 883140 205 885009 17")


@pytest.mark.real_data
def test_every_real_train_mask_row(real_root):
    """Every row of the real train_masks.csv encodes from and decodes to its GIF."""
    layout = Layout(real_root)
    table = pd.read_csv(layout.train_masks_csv)
    assert len(table) == 1552
    for img, text in table.itertuples(index=False):
        mask = read_mask(layout.mask_dir / mask_name(img))
        assert rle.encode(mask) == text, img
        np.testing.assert_array_equal(rle.decode(text), mask, err_msg=img)


@pytest.mark.real_data
def test_real_masks_on_torch_match(real_root):
    layout = Layout(real_root)
    table = pd.read_csv(layout.train_masks_csv).head(8)
    masks = np.stack([read_mask(layout.mask_dir / mask_name(i)) for i in table["img"]])
    assert rle.encode_torch(torch.from_numpy(masks.copy())) == table["rle_mask"].tolist()
    runs = row_runs(torch.from_numpy(masks)).numpy()  # (a pixel loop would take a minute)
    assert rle.from_row_runs(runs, len(masks), FULL_SHAPE[1]) == table["rle_mask"].tolist()


@pytest.mark.real_data
def test_sample_submission_names_are_carvana_names(real_root):
    names = submission_names(real_root)
    assert len(names) == 100064
    cars = {parse_name(n)[0] for n in names}
    assert len(cars) * 16 == len(names)
