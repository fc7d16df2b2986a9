"""The resized-image disk cache. Decoding a 1918x1280 JPEG costs far more than a training step
needs at 320x480, so every image and mask is resized once and stored as a lossless PNG under

    <cache_dir>/<H>x<W>-<key>/images/<car>_<NN>.png   RGB uint8, cv2.INTER_AREA (area average)
    <cache_dir>/<H>x<W>-<key>/masks/<car>_<NN>.png    uint8 {0, 1}: INTER_AREA on the float
                                                      mask, then >= 0.5 (a pixel is car when at
                                                      least half of the source area it covers
                                                      is car)

``key`` (:func:`cache_key`) names what made the files: the resolved folders of the sources and
the version of the code that reads and resizes them (the source text of those functions, the
OpenCV and Pillow versions). Another data root (even a ``cp -a`` copy with the same names and
times) or a changed resize gets a folder of its own; :func:`build_cache` removes the stale
folders of the same size once the new one is complete.

Within a folder, each file is written atomically and stamped with its source's modification
time; a cached file whose stamp differs from its source's is rebuilt, all others are reused. A
cached file that cannot be read (truncated by a full disk or a killed copy) is rebuilt from its
source when read (:func:`read_cached`).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import re
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import PIL
from tqdm import tqdm

from pipeline.atomic import write_png
from pipeline.data.io import read_image, read_mask
from pipeline.data.transforms import resize_image, resize_mask
from pipeline.errors import PipelineError

CACHE_FORMAT = 2  # bump when the folder layout or the PNG encoding changes


@functools.cache
def resize_version() -> str:
    """A hash of what decides a cached file's pixels besides its source: the readers and
    resizers (their source text) and the OpenCV and Pillow versions."""
    parts = [f"format {CACHE_FORMAT}", cv2.__version__, PIL.__version__]
    for fn in (read_image, read_mask, resize_image, resize_mask):
        try:
            parts.append(inspect.getsource(fn))
        except (OSError, TypeError):  # no source files (a frozen install): the bytecode
            parts.append(fn.__code__.co_code.hex())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@functools.cache
def _folders_key(image_dir: str, mask_dir: str) -> str:
    folders = [str(Path(d).resolve()) for d in (image_dir, mask_dir)]
    text = "\n".join([resize_version(), *folders])
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def cache_key(image_path: str | Path, mask_path: str | Path) -> str:
    """10 hex digits naming the cache folder of an (image, mask) pair: a hash of their resolved
    folders and :func:`resize_version` (memoised per pair of folders, so cheap per image)."""
    return _folders_key(str(Path(image_path).parent), str(Path(mask_path).parent))


def cache_paths(
    img: str, height: int, width: int, cache_dir: str | Path, key: str
) -> tuple[Path, Path]:
    """(cached image, cached mask) for image name ``img`` at size ``height`` x ``width`` in the
    folder of ``key`` (:func:`cache_key` of the image's source paths)."""
    root = Path(cache_dir) / f"{height}x{width}-{key}"
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


def _pair(image_path, mask_path, height, width, cache_dir) -> list[tuple[Path, Path, Callable]]:
    """(cached file, its source, how to make it) for the image and the mask."""
    image_path, mask_path = Path(image_path), Path(mask_path)
    image_png, mask_png = cache_paths(image_path.name, height, width, cache_dir,
                                      cache_key(image_path, mask_path))
    return [
        (image_png, image_path, lambda: resize_image(read_image(image_path), height, width)),
        (mask_png, mask_path, lambda: resize_mask(read_mask(mask_path), height, width)),
    ]


def cache_item(
    image_path: str | Path, mask_path: str | Path, height: int, width: int, cache_dir: str | Path
) -> bool:
    """Make sure one image (and its mask) is cached at ``height`` x ``width``; True if written."""
    wrote = False
    for cached, source, make in _pair(image_path, mask_path, height, width, cache_dir):
        if not _is_fresh(cached, source):
            _write_png(cached, make(), source)
            wrote = True
    return wrote


def read_cached(
    image_path: str | Path, mask_path: str | Path, height: int, width: int, cache_dir: str | Path
) -> tuple[np.ndarray, np.ndarray]:
    """The resized (image uint8 HxWx3, mask uint8 HxW) of one pair from the cache. A cached file
    that is missing, stale or unreadable (truncated, corrupt) is rebuilt from its source, so a
    damaged cache costs a decode, never a run; an unreadable source is one line naming it."""
    out = []
    for (cached, source, make), read in zip(
        _pair(image_path, mask_path, height, width, cache_dir), (read_image, read_mask)
    ):
        if _is_fresh(cached, source):
            try:
                out.append(read(cached))
                continue
            except PipelineError:
                pass  # damaged: fall through and rebuild it
        array = make()
        _write_png(cached, array, source)
        out.append(array)
    return out[0], out[1]


def records_of(items: Iterable[Any] | pd.DataFrame) -> list[dict]:
    records = items.to_dict("records") if isinstance(items, pd.DataFrame) else list(items)
    for rec in records:
        if not rec.get("mask_path"):
            raise PipelineError(
                f"{rec.get('image_path')}: no mask in train_masks/; training needs one mask per "
                "image (run `python -m pipeline.data` to validate the data)"
            )
    return records


def remove_stale(cache_dir: str | Path, height: int, width: int, keep: Iterable[str]) -> list[Path]:
    """Delete the cache folders of size ``height`` x ``width`` whose key is not in ``keep``
    (made from another data root or by older code, and the unkeyed folder of older versions);
    returns them."""
    pattern = re.compile(rf"{height}x{width}(-[0-9a-f]+)?")
    keep = {f"{height}x{width}-{k}" for k in keep}
    stale = [p for p in Path(cache_dir).glob(f"{height}x{width}*")
             if p.is_dir() and pattern.fullmatch(p.name) and p.name not in keep]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)  # another rank may be removing it too
    return stale


def build_cache(
    index_rows: Iterable[Any] | pd.DataFrame,
    height: int,
    width: int,
    cache_dir: str | Path,
    workers: int = 2,
    progress: bool = True,
) -> int:
    """Resize every (image_path, mask_path) row into the cache; returns how many were written.
    Once every row is cached, the stale folders of this size are removed (:func:`remove_stale`).

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
    if records:
        remove_stale(cache_dir, height, width,
                     {cache_key(r["image_path"], r["mask_path"]) for r in records})
    return written
