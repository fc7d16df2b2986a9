"""The submission file format and its streaming validator.

Format (Kaggle's): a CSV with header ``img,rle_mask`` and one row per name of
``sample_submission.csv``, in its order; the RLE is row-major with 1-based starts
(:mod:`pipeline.rle`). Files may be gzip-compressed (Kaggle accepts ``.csv.gz``).
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from pipeline.config import FULL_HEIGHT, FULL_WIDTH
from pipeline.data.io import image_shape
from pipeline.data.layout import Layout
from pipeline.errors import PipelineError

HEADER = "img,rle_mask"
GZIP_MAGIC = b"\x1f\x8b"
INTEGER = re.compile(r"^[+-]?\d+$")
MAX_DIGITS = 15  # larger values cannot be pixel numbers; sums of two stay far inside int64
READ_ERRORS = (csv.Error, UnicodeDecodeError, OSError, EOFError, zlib.error)


# --------------------------------------------------------------------------- reading


def open_text(path: str | Path) -> TextIO:
    """A CSV file, gzip or plain (told apart by the gzip magic bytes), as text."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: file not found")
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == GZIP_MAGIC:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _rows(fh: TextIO) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for every line of a CSV, header included (line 1)."""
    yield from enumerate(csv.reader(fh), start=1)


def _expected_names(sample: str | Path | Iterable[str]) -> Iterator[str]:
    """Image names in order: from a ``sample_submission.csv`` path or an iterable of names."""
    if isinstance(sample, (str, Path)):
        with open_text(sample) as fh:
            rows = _rows(fh)
            first = next(rows, (1, []))[1]
            if first[:1] != ["img"]:
                raise PipelineError(f"{sample}: expected a header 'img,rle_mask'")
            for _, fields in rows:
                if fields:
                    yield fields[0]
    else:
        yield from sample


# --------------------------------------------------------------------------- validation


def rle_problem(text: str, n_pixels: int) -> str | None:
    """What is wrong with one RLE string for an image of ``n_pixels`` (None: nothing).

    Checks, in order: integer tokens, values small enough to be pixel numbers (so nothing below
    can overflow int64), an even count, starts >= 1, lengths >= 1, strictly ascending starts,
    no overlap with the previous run, the last pixel inside the image. Adjacent runs (one
    starting right where the previous ends) are valid.
    """
    tokens = text.split()
    if not tokens:
        return None
    bad = next((t for t in tokens if not INTEGER.match(t)), None)
    if bad is not None:
        return f"'{bad}' is not an integer"
    huge = next((t for t in tokens if len(t.lstrip("+-")) > MAX_DIGITS), None)
    if huge is not None:
        return f"'{huge}' is out of range: an image has only {n_pixels} pixels"
    numbers = np.array(tokens, dtype=np.int64)  # every value has at most MAX_DIGITS digits
    if numbers.size % 2:
        return f"odd number of values ({numbers.size}): RLE needs start length pairs"
    starts, lengths = numbers[0::2], numbers[1::2]
    if (starts < 1).any():
        i = int(np.argmax(starts < 1))
        return f"run {i + 1} starts at {starts[i]}; starts are 1-based pixel numbers"
    if (lengths < 1).any():
        i = int(np.argmax(lengths < 1))
        return f"run {i + 1} has length {lengths[i]}; lengths must be at least 1"
    if starts.size > 1:
        step = np.diff(starts)
        if (step <= 0).any():
            i = int(np.argmax(step <= 0)) + 1
            return (f"run {i + 1} starts at {starts[i]}, not after run {i}'s start "
                    f"{starts[i - 1]}; starts must ascend")
        ends = starts + lengths  # one past the last pixel of each run
        if (starts[1:] < ends[:-1]).any():
            i = int(np.argmax(starts[1:] < ends[:-1])) + 1
            return (f"run {i + 1} starts at {starts[i]} inside run {i} "
                    f"({starts[i - 1]}..{ends[i - 1] - 1}); runs overlap")
    last = starts + lengths - 1
    if (last > n_pixels).any():
        i = int(np.argmax(last > n_pixels))
        return (f"run {i + 1} ({starts[i]} + {lengths[i]}) ends at pixel {last[i]}, "
                f"outside the image ({n_pixels} pixels)")
    return None


def validate_submission(
    path: str | Path,
    sample: str | Path | Iterable[str],
    shape: tuple[int, int] = (FULL_HEIGHT, FULL_WIDTH),
    limit: int | None = None,
    max_problems: int = 20,
) -> list[str]:
    """Problems of a submission file (empty list: valid), each naming its line and image.

    ``sample``: ``sample_submission.csv`` (or the list of names) giving the names and order;
    ``limit``: only its first ``limit`` names are expected (smoke runs). Reads both files as
    streams, so memory stays constant on 100,064 rows. Stops after ``max_problems``.
    """
    path = Path(path)
    n_pixels = shape[0] * shape[1]
    problems: list[str] = []
    expected = _expected_names(sample)
    if limit is not None:
        expected = (name for _, name in zip(range(limit), expected))
    try:
        fh = open_text(path)
    except PipelineError as exc:
        return [str(exc)]
    if path.suffix == ".gz" and not _is_gzip(path):
        problems.append(f"{path}: named .gz but not gzip-compressed; Kaggle would not read it "
                        "(compress it, or name it .csv)")
    with fh:
        rows = _rows(fh)
        try:
            _, header = next(rows, (1, None))
        except READ_ERRORS as exc:
            return [f"{path}: cannot be read as CSV ({_reason(exc)})"]
        if header is None:
            return [f"{path}: empty file; expected the header '{HEADER}' and one row per image"]
        if ",".join(header) != HEADER:
            problems.append(f"{path}: line 1: header is '{','.join(header)}', expected '{HEADER}'")
        n_rows = 0
        while len(problems) < max_problems:
            try:
                line_no, fields = next(rows)
            except StopIteration:
                break
            except READ_ERRORS as exc:
                problems.append(f"{path}: after data row {n_rows}: unreadable ({_reason(exc)})")
                return problems
            if not fields:  # a blank line (pandas, and Kaggle, skip those)
                continue
            n_rows += 1
            want = next(expected, None)
            where = f"{path}: line {line_no}"
            if len(fields) != 2:
                problems.append(f"{where}: {len(fields)} fields, expected 2 (img,rle_mask)")
                continue
            img, text = fields
            if want is None:
                problems.append(f"{where} ({img}): extra row; sample_submission.csv has only "
                                f"{n_rows - 1} images")
                break
            if img != want:
                problems.append(f"{where}: image '{img}', expected '{want}' (names and order "
                                "must follow sample_submission.csv)")
                continue
            issue = rle_problem(text, n_pixels)
            if issue:
                problems.append(f"{where} ({img}): {issue}")
        missing = sum(1 for _ in expected) if len(problems) < max_problems else 0
        if missing:
            problems.append(f"{path}: ends after {n_rows} rows; {missing} more image(s) of "
                            "sample_submission.csv have no row")
    return problems


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def _reason(exc: BaseException) -> str:
    """One line for a read error (a corrupt gzip, bad bytes)."""
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_submission(
    path: str | Path,
    sample: str | Path | Iterable[str],
    shape: tuple[int, int] = (FULL_HEIGHT, FULL_WIDTH),
    limit: int | None = None,
) -> None:
    """Raise :class:`PipelineError` with the first problems when the file is not valid."""
    problems = validate_submission(path, sample, shape, limit)
    if problems:
        shown = "; ".join(problems[:3])
        more = f" (and {len(problems) - 3} more problem(s))" if len(problems) > 3 else ""
        raise PipelineError(f"invalid submission: {shown}{more}")


# --------------------------------------------------------------------------- writing


def csv_lines(names: Iterable[str], rles: Iterable[str]) -> str:
    """``img,rle`` lines (LF-terminated) for matching names and RLE strings."""
    return "".join(f"{n},{r}\n" for n, r in zip(names, rles, strict=True))


def read_submission(path: str | Path) -> list[tuple[str, str]]:
    """All (img, rle) rows of a submission (small files and tests; not streaming)."""
    with open_text(path) as fh:
        rows = list(csv.reader(fh))
    if not rows or ",".join(rows[0]) != HEADER:
        raise PipelineError(f"{path}: expected the header '{HEADER}'")
    return [(r[0], r[1] if len(r) > 1 else "") for r in rows[1:]]


def validate_for_data_root(path: str | Path, data_root: str | Path,
                           limit: int | None = None) -> tuple[list[str], tuple[int, int]]:
    """Problems of a submission file against ``<data_root>/sample_submission.csv`` and the size
    of the images in ``<data_root>/test`` (Kaggle's 1918x1280 when there are none)."""
    layout = Layout(data_root)
    sample = layout.sample_submission_csv
    if not sample.is_file():
        raise PipelineError(f"{sample}: not found; --data-root must hold sample_submission.csv")
    first = min(layout.test_dir.glob("*.jpg"), default=None) if layout.test_dir.is_dir() else None
    shape = image_shape(first) if first else (FULL_HEIGHT, FULL_WIDTH)
    return validate_submission(path, sample, shape, limit), shape
