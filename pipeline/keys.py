"""Resume keys: one short hash of everything a resumable output was computed from.

Every resumable output is stamped with :func:`output_key`: a training run's ``last.pt`` and each
phase's ``best.pt`` (the settings, the training images and the starting weights), an edge
refiner (its model and settings), each evaluated fold (the ensemble, the images and masks) and
each chunk of a submission (the ensemble and the names). A re-run whose key differs starts that
part afresh (or, for ``--resume``, refuses) instead of mixing old and new results.
:func:`result_settings` names what a config section contributes: every setting that can change
a result (:func:`pipeline.config.result_keys`), never a runtime one.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pipeline.config import result_keys

PACKAGE = Path(__file__).resolve().parent


def output_key(files: Sequence[str | Path], *parts: Any) -> str:
    """A 16-hex-digit hash of the files' contents and ``parts`` (settings, names, other keys):
    two runs with equal keys produce equal results."""
    h = hashlib.sha256()
    for path in files:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    h.update(repr(parts).encode())
    return h.hexdigest()[:16]


def result_settings(section: Any, **resolved: Any) -> dict:
    """``{name: value}`` of every result setting of a config section, with ``resolved`` values
    replacing the written ones (e.g. ``precision="bf16"`` for ``auto`` on this device)."""
    return {**{k: getattr(section, k) for k in result_keys(type(section))}, **resolved}


def file_stats(paths: Iterable[str | Path]) -> list[tuple[int, int]]:
    """(size, modification time in ns) of each file: a cheap identity for large inputs."""
    return [(st.st_size, st.st_mtime_ns) for st in (Path(p).stat() for p in paths)]


@functools.cache
def code_version() -> str:
    """A hash of the pipeline's source files: results computed by other code are not resumed."""
    return output_key(sorted(PACKAGE.rglob("*.py")))
