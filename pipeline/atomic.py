"""Atomic writes: a file appears whole under its final name or not at all (text, JSON, bytes,
PNG images)."""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from pipeline import faults
from pipeline.errors import PipelineError

# Write failures that are the environment's, not a bug: one line for the user.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG}


def _remove_stale_temporaries(path: Path) -> None:
    """Delete what a killed earlier write of ``path`` left: ``.<name>.<8 mkstemp chars>.tmp``
    (exactly: ``.a.json.x1y2z3w4.tmp`` is not a temporary of ``a``)."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp$")
    for sibling in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if pattern.match(sibling.name):
            sibling.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A crash (even ``kill -9``) leaves the previous ``path`` or the new one, never a mix, and
    at most a hidden temporary, which the next write of ``path`` removes (a path has one writer
    at a time); a failed write (a full disk, a read-only folder) is one :class:`PipelineError`
    line and the previous file is kept.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise PipelineError(f"{path}: cannot be written ({exc.strerror})") from None
    os.close(fd)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        faults.reached("atomic.rename")
        os.replace(tmp_path, path)
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise PipelineError(f"{path}: could not be written ({exc.strerror}); the previous "
                            "version is kept, free space (or fix the folder) and re-run") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_png(path: str | Path, image: np.ndarray, compression: int = 1) -> Path:
    """An RGB (H, W, 3) or greyscale (H, W) uint8 array as a PNG file."""
    array = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise PipelineError(f"{path}: could not encode the PNG")
    return write_bytes(path, buf.tobytes())

