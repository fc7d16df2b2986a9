"""Fingerprints: short hashes of what a result was computed from, the keys of every resume.

Evaluation keeps each finished fold and submission keeps each finished chunk of rows under
such a key; a re-run whose key differs (other checkpoints, settings or images) starts that
part afresh instead of mixing old and new results.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def fingerprint(paths: Sequence[str | Path], *extras) -> str:
    """A 16-hex-digit hash of the files' contents and ``extras`` (settings, names): two runs
    with equal fingerprints produce equal results."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    h.update(repr(extras).encode())
    return h.hexdigest()[:16]


def file_stats(paths: Iterable[str | Path]) -> list[tuple[int, int]]:
    """(size, modification time in ns) of each file: a cheap identity for large inputs."""
    return [(st.st_size, st.st_mtime_ns) for st in (Path(p).stat() for p in paths)]


@functools.cache
def code_version() -> str:
    """A hash of the pipeline's source files: results computed by other code are not resumed."""
    return fingerprint(sorted(PACKAGE.rglob("*.py")))
