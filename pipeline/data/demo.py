"""A synthetic Carvana dataset in Kaggle's layout, for tests, demos and smoke runs.

Each car is a small 3-D model (a convex body prism, a cabin with windows and pillars, four
wheels with rims, lights, grille, plate, door lines) in car coordinates (metres; x forward,
y left, z up). Image ``<car>_<NN>.jpg`` shows it turned by yaw = (NN - 1) * 22.5 degrees in
front of a fixed perspective camera, as on Carvana's turntable: 01 is the front, 05 a side,
09 the rear, 13 the other side. Faces are rasterised with a z-buffer, so the mask is exactly
the set of pixels the car's own faces cover; the studio (gradient wall, floor, horizon line,
soft blurred shadow under the car) is background and never in the mask. Body colours include
whites and greys close to the wall, and tyres and windows are as dark as the shadow, so no
colour threshold recovers the mask.

Everything is drawn from ``numpy.random.default_rng`` seeded by (seed, car, angle): the same
``DemoConfig`` gives byte-identical masks and JPEGs, whatever the number of workers.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import multiprocessing
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from pipeline.atomic import atomic_path, write_json, write_text
from pipeline.config import DemoConfig, default
from pipeline.data.demo_car import build_car, car_ids, car_spec
from pipeline.data.demo_render import render_image
from pipeline.data.io import write_mask_gif
from pipeline.data.layout import ANGLES, Layout
from pipeline.errors import PipelineError
from pipeline.rle import encode

# Bump when the renderer changes, so a stamped demo folder made by older code is regenerated.
DEMO_VERSION = 1
STAMP = "demo.json"


# --------------------------------------------------------------------------- writing


def _jpeg_bytes(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise PipelineError("could not encode a demo JPEG")
    return buf.tobytes()


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _render_task(task) -> tuple[str, str | None]:
    """Worker: render and write one image (and its mask for train). -> (img name, rle)."""
    spec, split, angle, root, height, width, seed = task
    faces = build_car(spec)
    rgb, mask = render_image(spec, faces, angle, height, width, seed)
    layout = Layout(root)
    img = f"{spec.car_id}_{angle:02d}.jpg"
    quality = int(np.random.default_rng([seed, spec.index, angle, 0x0A]).integers(86, 94))
    _write_bytes(layout.image_path(img, split), _jpeg_bytes(rgb, quality))
    if split != "train":
        return img, None
    with atomic_path(layout.mask_path(img)) as tmp:
        write_mask_gif(tmp, mask)
    return img, encode(mask)


def _csv_text(header: list[str], rows: list[list], quote_all: bool = False) -> str:
    buf = io.StringIO()
    writer = csv.writer(
        buf, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL, lineterminator="\n"
    )
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def read_stamp(root: str | Path) -> dict | None:
    """The ``demo.json`` stamp of a generated folder, or None."""
    path = Path(root) / STAMP
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stamp_for(cfg: DemoConfig) -> dict:
    return {"version": DEMO_VERSION, "demo": dataclasses.asdict(cfg)}


def is_current(root: str | Path, cfg: DemoConfig) -> bool:
    """True when ``root`` holds a complete demo dataset generated with exactly ``cfg``."""
    return read_stamp(root) == stamp_for(cfg)


def _prepare_root(root: Path) -> None:
    """Refuse to write into a folder holding other data; clear an earlier demo's files."""
    layout = Layout(root)
    ours = (root / STAMP).is_file() or (root / f".{STAMP}.partial").is_file()
    has_data = any(d.is_dir() and any(d.iterdir()) for d in (layout.train_dir, layout.test_dir))
    if has_data and not ours:
        raise PipelineError(
            f"{root}: already holds images that the demo generator did not write; "
            "choose an empty folder for the demo (--out) or remove this one"
        )
    for d in (layout.train_dir, layout.mask_dir, layout.test_dir):
        if d.is_dir():
            shutil.rmtree(d)
    (root / STAMP).unlink(missing_ok=True)


def generate_demo(
    root: str | Path,
    cfg: DemoConfig | None = None,
    progress: bool = False,
    workers: int | None = None,
) -> Path:
    """Write a synthetic dataset in Kaggle layout under ``root`` and return ``root``.

    ``cfg.train_cars`` cars get 16 images with GIF masks and ``train_masks.csv`` rows;
    ``cfg.test_cars`` cars get 16 test images listed in ``sample_submission.csv``;
    ``metadata.csv`` lists all of them. ``workers`` processes render in parallel (default:
    up to 2 for large images, none for tiny ones); the output does not depend on it.
    The stamp ``demo.json`` is written last, so its presence means the folder is complete.
    """
    cfg = cfg or default(DemoConfig)
    if cfg.train_cars < 0 or cfg.test_cars < 0 or cfg.train_cars + cfg.test_cars == 0:
        raise PipelineError("data.demo: train_cars and test_cars must be >= 0, not both 0")
    if cfg.height < 16 or cfg.width < 16:
        raise PipelineError("data.demo: height and width must be at least 16 pixels")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _prepare_root(root)
    (root / f".{STAMP}.partial").touch()  # marks the folder as ours while it is incomplete
    layout = Layout(root)
    for d in (layout.train_dir, layout.mask_dir, layout.test_dir):
        d.mkdir(parents=True, exist_ok=True)

    train_ids, test_ids = car_ids(cfg)
    specs = [car_spec(cid, i, cfg.seed) for i, cid in enumerate(train_ids + test_ids)]
    split = {**dict.fromkeys(train_ids, "train"), **dict.fromkeys(test_ids, "test")}
    tasks = [
        (spec, split[spec.car_id], angle, str(root), cfg.height, cfg.width, cfg.seed)
        for spec in specs
        for angle in range(1, ANGLES + 1)
    ]

    if workers is None:
        big = len(tasks) * cfg.height * cfg.width > 20_000_000
        workers = min(2, os.cpu_count() or 1) if big else 0
    results = _run(tasks, workers, progress)

    rles = {img: rle for img, rle in results if rle is not None}
    write_text(
        layout.train_masks_csv,
        _csv_text(["img", "rle_mask"], [[img, rles[img]] for img in sorted(rles)]),
    )
    tests = sorted(img for img, rle in results if rle is None)
    write_text(
        layout.sample_submission_csv,
        _csv_text(["img", "rle_mask"], [[img, "1 1"] for img in tests]),
    )
    meta = sorted([[s.car_id, str(s.year), s.make, s.model, s.model, s.trim] for s in specs])
    write_text(
        layout.metadata_csv,
        _csv_text(["id", "year", "make", "model", "trim1", "trim2"], meta, True),
    )
    write_json(root / STAMP, stamp_for(cfg))
    (root / f".{STAMP}.partial").unlink(missing_ok=True)
    return root


def _run(tasks: list, workers: int, progress: bool) -> list[tuple[str, str | None]]:
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="demo images", unit="img", disable=not progress)
    results = []
    if workers > 1:
        # spawn: safe even when the parent process has started threads (torch, BLAS).
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for res in pool.imap(_render_task, tasks, chunksize=4):
                results.append(res)
                bar.update()
    else:
        for task in tasks:
            results.append(_render_task(task))
            bar.update()
    bar.close()
    return results


def expected_names(cfg: DemoConfig) -> tuple[list[str], list[str]]:
    """The train and test image names ``generate_demo(cfg)`` writes (sorted)."""
    train_ids, test_ids = car_ids(cfg)
    angles = range(1, ANGLES + 1)
    return (
        [f"{c}_{a:02d}.jpg" for c in train_ids for a in angles],
        [f"{c}_{a:02d}.jpg" for c in test_ids for a in angles],
    )
