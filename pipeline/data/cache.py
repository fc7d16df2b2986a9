"""The resized-image disk cache. Decoding a 1918x1280 JPEG costs far more than a training step
needs at 320x480, so every image and mask is resized once and stored as a lossless PNG under

    <cache_dir>/<H>x<W>/images/<car>_<NN>.png   RGB uint8, cv2.INTER_AREA (area average)
    <cache_dir>/<H>x<W>/masks/<car>_<NN>.png    uint8 {0, 1}: INTER_AREA on the float mask, then
                                                >= 0.5 (a pixel is car when at least half of
                                                the source area it covers is car)

Each file is written atomically and stamped with its source's modification time; a cached file
whose stamp differs from its source's (a newer source, or a different data root with the same
names) is rebuilt, all others are reused.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.atomic import write_png
from pipeline.data.io import read_image, read_mask
from pipeline.data.transforms import resize_image, resize_mask
from pipeline.errors import PipelineError


def cache_paths(img: str, height: int, width: int, cache_dir: str | Path) -> tuple[Path, Path]:
    """(cached image, cached mask) for image name ``img`` at size ``height`` x ``width``."""
    root = Path(cache_dir) / f"{height}x{width}"
    stem = Path(img).stem
    return root / "images" / f"{stem}.png", root / "masks" / f"{stem}.png"


def _is_fresh(cached: Path, source: Path) -> bool:
    try:
        return cached.stat().st_mtime_ns == source.stat().st_mtime_ns
    except FileNotFoundError:
        return False


def _write_png(path: Path, array: np.ndarray, source: Path) -> None:
    """Atomic PNG write, stamped with the source's mtime (the freshness key)."""
    stat = source.stat()
    write_png(path, array, compression=1)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def cache_item(
    image_path: str | Path, mask_path: str | Path, height: int, width: int, cache_dir: str | Path
) -> bool:
    """Make sure one image (and its mask) is cached at ``height`` x ``width``; True if written."""
    image_path, mask_path = Path(image_path), Path(mask_path)
    image_png, mask_png = cache_paths(image_path.name, height, width, cache_dir)
    wrote = False
    if not _is_fresh(image_png, image_path):
        _write_png(image_png, resize_image(read_image(image_path), height, width), image_path)
        wrote = True
    if not _is_fresh(mask_png, mask_path):
        _write_png(mask_png, resize_mask(read_mask(mask_path), height, width), mask_path)
        wrote = True
    return wrote


def records_of(items: Iterable[Any] | pd.DataFrame) -> list[dict]:
    records = items.to_dict("records") if isinstance(items, pd.DataFrame) else list(items)
    for rec in records:
        if not rec.get("mask_path"):
            raise PipelineError(
                f"{rec.get('image_path')}: no mask in train_masks/; training needs one mask per "
                "image (run `python -m pipeline.data` to validate the data)"
            )
    return records


def build_cache(
    index_rows: Iterable[Any] | pd.DataFrame,
    height: int,
    width: int,
    cache_dir: str | Path,
    workers: int = 2,
    progress: bool = True,
) -> int:
    """Resize every (image_path, mask_path) row into the cache; returns how many were written.

    Runs in the calling process with threads (OpenCV releases the GIL while decoding), so an
    unreadable image stops the build with one line naming the file.
    """
    records = records_of(index_rows)

    def one(rec: dict) -> bool:
        return cache_item(rec["image_path"], rec["mask_path"], height, width, cache_dir)

    written = 0
    bar = tqdm(total=len(records), desc=f"cache {height}x{width}", disable=not progress,
               unit="img", leave=False)
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        for wrote in pool.map(one, records):
            written += int(wrote)
            bar.update()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return written
