"""The demo generator: Kaggle layout, determinism, and images a model has to learn from."""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import DemoConfig, default
from pipeline.data import demo
from pipeline.data.io import image_size, read_image, read_mask
from pipeline.data.layout import Layout, mask_name, train_index
from pipeline.data.validate import validate
from pipeline.errors import PipelineError
from pipeline.rle import decode

TINY = (64, 96)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def best_threshold_dice(score: np.ndarray, mask: np.ndarray) -> float:
    """Best Dice of ``score > t`` or ``score <= t`` against ``mask`` over every threshold t."""
    order = np.argsort(score.reshape(-1), kind="stable")
    s = score.reshape(-1)[order]
    m = mask.reshape(-1)[order].astype(np.int64)
    n, total = m.size, m.sum()
    below = np.concatenate([[0], np.cumsum(m)])  # foreground among the k lowest scores
    k = np.arange(n + 1)
    # cuts only between distinct scores (a threshold cannot split equal values)
    valid = np.concatenate([[True], s[1:] != s[:-1], [True]])
    dice_low = 2 * below / np.maximum(k + total, 1)  # predict the k lowest
    dice_high = 2 * (total - below) / np.maximum(n - k + total, 1)  # predict the rest
    return float(max(dice_low[valid].max(), dice_high[valid].max()))


def test_best_threshold_dice_reference():
    score = np.array([0.1, 0.2, 0.8, 0.9])
    assert best_threshold_dice(score, np.array([0, 0, 1, 1])) == 1.0
    assert best_threshold_dice(-score, np.array([0, 0, 1, 1])) == 1.0  # polarity either way
    # ties cannot be split: the best is predicting all three 0.5s (2*1/(3+1))
    assert best_threshold_dice(np.array([0.5, 0.5, 0.5, 0.0]), np.array([1, 0, 0, 0])) == 0.5


def test_layout_is_complete_and_valid(tiny_data):
    layout = Layout(tiny_data)
    train = sorted(p.name for p in layout.train_dir.iterdir())
    masks = sorted(p.name for p in layout.mask_dir.iterdir())
    tests = sorted(p.name for p in layout.test_dir.iterdir())
    assert len(train) == 4 * 16 and len(tests) == 2 * 16
    assert masks == sorted(mask_name(n) for n in train)
    assert all(re.fullmatch(r"[0-9a-f]{12}_(0[1-9]|1[0-6])\.jpg", n) for n in train + tests)
    assert not {n[:12] for n in train} & {n[:12] for n in tests}
    assert image_size(layout.train_dir / train[0]) == (96, 64)  # (width, height)
    assert validate(tiny_data, expected=TINY) == []  # no errors and no warnings

    with open(layout.metadata_csv) as f:
        assert f.readline() == '"id","year","make","model","trim1","trim2"\n'  # Kaggle quoting
    with open(layout.metadata_csv, newline="") as f:
        meta = list(csv.DictReader(f))
    assert sorted(r["id"] for r in meta) == sorted({n[:12] for n in train + tests})
    assert all(r["make"] and r["model"] and 2000 < int(r["year"]) < 2030 for r in meta)

    lines = layout.sample_submission_csv.read_text().splitlines()
    assert lines[0] == "img,rle_mask"
    assert lines[1:] == [f"{n},1 1" for n in tests]  # sorted names, Kaggle's placeholder RLE
    assert layout.train_masks_csv.read_text().splitlines()[0] == "img,rle_mask"
    assert demo.is_current(
        tiny_data, default(DemoConfig, train_cars=4, test_cars=2, seed=0, height=64, width=96)
    )


def test_train_masks_csv_decodes_to_the_gifs(tiny_data):
    layout = Layout(tiny_data)
    with open(layout.train_masks_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 64
    for row in rows:
        gif = read_mask(layout.mask_path(row["img"]))
        assert gif.dtype == np.uint8 and set(np.unique(gif)) <= {0, 1}
        np.testing.assert_array_equal(decode(row["rle_mask"], TINY), gif)


def test_masks_are_plausible_and_change_with_the_angle(tiny_data):
    index = train_index(tiny_data)
    assert (index["make"] != "unknown").all()
    for car, rows in index.groupby("car_id"):
        masks = {r.angle: read_mask(r.mask_path).astype(bool) for r in rows.itertuples()}
        assert sorted(masks) == list(range(1, 17))
        for m in masks.values():
            assert 0.05 < m.mean() < 0.5  # real Carvana cars fill 9%-41% of the frame
            frame = np.concatenate([m[0], m[-1], m[:, 0], m[:, -1]])
            assert not frame.any(), f"car {car} leaves the frame"
        # Front (01) and side (05) silhouettes differ in shape and size...
        assert _iou(masks[1], masks[5]) < 0.6
        assert masks[5].sum() > 1.2 * masks[1].sum()
        assert masks[13].sum() > 1.2 * masks[9].sum()
        # ...and the two sides (05, 13) are near mirror images of each other.
        assert _iou(masks[5], masks[13][:, ::-1]) > 0.65


def test_masks_are_not_a_colour_threshold(tiny_data):
    """No single channel, and no distance from the studio colour, separates car from studio."""
    index = train_index(tiny_data)
    best = []
    for r in index.itertuples():
        img = read_image(r.image_path).astype(np.float32)
        mask = read_mask(r.mask_path)
        border = np.concatenate(
            [
                img[:2].reshape(-1, 3),
                img[-2:].reshape(-1, 3),
                img[:, :2].reshape(-1, 3),
                img[:, -2:].reshape(-1, 3),
            ]
        )
        studio = np.median(border, axis=0)
        scores = [img[..., c] for c in range(3)]
        scores += [np.linalg.norm(img - studio, axis=2), img.mean(axis=2)]
        best.append(max(best_threshold_dice(s, mask) for s in scores))
    best = np.array(best)
    assert best.mean() < 0.9, best.mean()
    assert np.median(best) < 0.95
    assert (best >= 0.95).mean() < 0.3  # dark cars are the easy ones, and a minority


def test_images_vary_between_cars(tiny_data):
    index = train_index(tiny_data)
    mean_colour = []
    for _car, rows in index.groupby("car_id"):
        r = rows[rows.angle == 5].iloc[0]
        img, mask = read_image(r.image_path), read_mask(r.mask_path).astype(bool)
        mean_colour.append(img[mask].mean(axis=0))
    spread = np.ptp(np.array(mean_colour), axis=0).max()
    assert spread > 30  # body colours differ between cars


def test_shadow_is_background():
    """The soft shadow darkens the floor under the car and leaves the mask unchanged."""
    for index in range(4):
        spec = demo.car_spec("0123456789ab", index, seed=0)
        faces = demo.build_car(spec)
        img, mask = demo.render_image(spec, faces, 5, 160, 240, seed=0)
        bare, bare_mask = demo.render_image(spec, faces, 5, 160, 240, seed=0, shadow=False)
        np.testing.assert_array_equal(mask, bare_mask)
        car = mask.astype(bool)
        grey, bare_grey = img.astype(float).mean(axis=2), bare.astype(float).mean(axis=2)
        rows, cols = np.flatnonzero(car.any(axis=1)), np.flatnonzero(car.any(axis=0))
        under = (slice(rows.max() + 1, rows.max() + 8), slice(cols.min(), cols.max() + 1))
        assert not car[under].any()
        assert grey[under].mean() < bare_grey[under].mean() - 15
        assert np.abs(grey[:20] - bare_grey[:20]).max() <= 1  # the wall above is unshaded


def test_full_resolution_image():
    spec = demo.car_spec("0123456789ab", 0, seed=0)
    img, mask = demo.render_image(spec, demo.build_car(spec), 3, 1280, 1918, seed=0)
    assert img.shape == (1280, 1918, 3) and img.dtype == np.uint8
    assert mask.shape == (1280, 1918) and set(np.unique(mask)) == {0, 1}
    assert 0.05 < mask.mean() < 0.5


def test_deterministic_for_a_seed(tmp_path):
    cfg = default(DemoConfig, train_cars=1, test_cars=1, seed=7, height=32, width=48)
    a = _files(demo.generate_demo(tmp_path / "a", cfg))
    b = _files(demo.generate_demo(tmp_path / "b", cfg))
    assert a == b  # byte-identical JPEGs, GIFs and CSVs
    c = _files(demo.generate_demo(tmp_path / "c", dataclasses.replace(cfg, seed=8)))
    assert c["metadata.csv"] != a["metadata.csv"]
    a_gifs = [v for k, v in sorted(a.items()) if k.endswith(".gif")]
    c_gifs = [v for k, v in sorted(c.items()) if k.endswith(".gif")]
    assert a_gifs != c_gifs
    assert demo.car_ids(cfg) == demo.car_ids(cfg)
    assert demo.expected_names(cfg)[0] == sorted(
        k.split("/")[1] for k in a if k.startswith("train/")
    )


def test_parallel_workers_give_the_same_bytes(tmp_path):
    cfg = default(DemoConfig, train_cars=1, test_cars=0, seed=3, height=32, width=48)
    serial = _files(demo.generate_demo(tmp_path / "serial", cfg, workers=0))
    parallel = _files(demo.generate_demo(tmp_path / "parallel", cfg, workers=2))
    assert serial == parallel


def test_regenerating_removes_stale_files_and_refuses_foreign_data(tmp_path):
    root = tmp_path / "d"
    demo.generate_demo(root, default(DemoConfig, train_cars=2, test_cars=1, seed=0, height=32, width=48))
    demo.generate_demo(root, default(DemoConfig, train_cars=1, test_cars=0, seed=1, height=32, width=48))
    assert len(list((root / "train").iterdir())) == 16
    assert not list((root / "test").iterdir())
    assert validate(root, expected=(32, 48)) == []

    foreign = tmp_path / "real"
    (foreign / "train").mkdir(parents=True)
    (foreign / "train" / "0123456789ab_01.jpg").write_bytes(b"not ours")
    with pytest.raises(PipelineError, match="did not write"):
        demo.generate_demo(foreign, default(DemoConfig, train_cars=1, test_cars=0, height=32, width=48))
    assert (foreign / "train" / "0123456789ab_01.jpg").read_bytes() == b"not ours"


def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(PipelineError, match="train_cars"):
        demo.generate_demo(tmp_path, default(DemoConfig, train_cars=0, test_cars=0))
    with pytest.raises(PipelineError, match="at least 16"):
        demo.generate_demo(tmp_path, default(DemoConfig, train_cars=1, height=8, width=8))


@pytest.mark.slow
def test_full_size_car_validates(tmp_path):
    """One car at Kaggle's 1918x1280 passes the default (full-size) validation."""
    cfg = default(DemoConfig, train_cars=1, test_cars=0, seed=0)
    root = demo.generate_demo(tmp_path / "full", cfg)
    problems = validate(root)
    assert [p for p in problems if p.severity == "error"] == []
