"""The submission validator: a good file (plain or gzip) passes; each defect is rejected with
the line and image it is on; header, missing, extra and swapped rows; the RLE checks agree with
the encoder; the real sample_submission.csv gives names and order."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from pipeline import rle
from pipeline.data.layout import submission_names as sample_names
from pipeline.errors import PipelineError
from pipeline.submit.format import (
    check_submission,
    read_submission,
    rle_problem,
    validate_submission,
)

SHAPE = (4, 5)  # 20 pixels: small enough to write defects by hand
NAMES = [f"{i:012x}_{a:02d}.jpg" for i in range(2) for a in (1, 2)]


def write_csv(path: Path, rows: list[str], header: str = "img,rle_mask") -> Path:
    text = "\n".join([header, *rows]) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


GOOD = [f"{NAMES[0]},1 3 6 2", f"{NAMES[1]},", f"{NAMES[2]},1 20", f"{NAMES[3]},4 2 6 1 19 2"]


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_validator_accepts_a_good_file(tmp_path, suffix):
    path = write_csv(tmp_path / f"s{suffix}", GOOD)
    assert validate_submission(path, NAMES, SHAPE) == []
    check_submission(path, NAMES, SHAPE)
    assert read_submission(path)[2] == (NAMES[2], "1 20")


@pytest.mark.parametrize(
    "row, text, words",
    [
        (0, f"{NAMES[0]},1 x", ["'x' is not an integer"]),
        (0, f"{NAMES[0]},1 2 3", ["odd number of values (3)"]),
        (0, f"{NAMES[0]},0 2", ["starts at 0", "1-based"]),
        (0, f"{NAMES[0]},-3 2", ["starts at -3"]),
        (0, f"{NAMES[0]},3 0", ["length 0"]),
        (0, f"{NAMES[0]},3 -1", ["length -1"]),
        (0, f"{NAMES[0]},8 2 3 1", ["run 2 starts at 3", "must ascend"]),
        (0, f"{NAMES[0]},3 2 3 1", ["run 2 starts at 3", "must ascend"]),
        (0, f"{NAMES[0]},3 4 5 1", ["run 2 starts at 5 inside run 1", "overlap"]),
        (0, f"{NAMES[0]},18 4", ["ends at pixel 21", "outside the image (20 pixels)"]),
        (0, f"{NAMES[0]},21 1", ["outside the image"]),
        (1, f"{NAMES[2]},", ["image '000000000001_01.jpg'", "expected '000000000000_02.jpg'"]),
        (1, f"{NAMES[1]},1 1,extra", ["3 fields, expected 2"]),
        # review defects: an int64-overflowing token, a start+length that overflows int64
        (0, f"{NAMES[0]},1 99999999999999999999", ["out of range"]),
        (0, f"{NAMES[0]},2 9223372036854775807", ["out of range"]),
        (0, f"{NAMES[0]},1 1e3", ["'1e3' is not an integer"]),
    ],
)
def test_validator_names_the_row_of_each_defect(tmp_path, row, text, words):
    rows = list(GOOD)
    rows[row] = text
    problems = validate_submission(write_csv(tmp_path / "s.csv", rows), NAMES, SHAPE)
    assert len(problems) == 1, problems
    assert f"line {row + 2}" in problems[0]
    for w in words:
        assert w in problems[0], problems[0]
    with pytest.raises(PipelineError, match=f"line {row + 2}"):
        check_submission(tmp_path / "s.csv", NAMES, SHAPE)


def test_validator_header_missing_extra_and_swapped_rows(tmp_path):
    header = validate_submission(write_csv(tmp_path / "a.csv", GOOD, "img,mask"), NAMES, SHAPE)
    assert len(header) == 1 and "line 1" in header[0] and "img,rle_mask" in header[0]
    short = validate_submission(write_csv(tmp_path / "b.csv", GOOD[:2]), NAMES, SHAPE)
    assert short == [(f"{tmp_path / 'b.csv'}: ends after 2 rows; 2 more image(s) of "
                      "sample_submission.csv have no row")]
    extra = validate_submission(write_csv(tmp_path / "c.csv", GOOD + [f"{NAMES[0]},"]), NAMES,
                                SHAPE)
    assert len(extra) == 1 and "line 6" in extra[0] and "extra row" in extra[0]
    swapped = [GOOD[1], GOOD[0], *GOOD[2:]]
    problems = validate_submission(write_csv(tmp_path / "d.csv", swapped), NAMES, SHAPE)
    assert [p.split(": ")[1] for p in problems] == ["line 2", "line 3"]
    empty = tmp_path / "e.csv"
    empty.write_text("")
    assert "empty file" in validate_submission(empty, NAMES, SHAPE)[0]
    assert "file not found" in validate_submission(tmp_path / "none.csv", NAMES, SHAPE)[0]
    # limit: only the first names are expected
    assert validate_submission(write_csv(tmp_path / "f.csv", GOOD[:2]), NAMES, SHAPE, limit=2) == []


def test_blank_lines_are_not_rows(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("img,rle_mask\n" + "\n".join(GOOD) + "\n\n")
    assert validate_submission(path, NAMES, SHAPE) == []
    path.write_text("img,rle_mask\n" + "\n\n".join(GOOD) + "\n")
    assert validate_submission(path, NAMES, SHAPE) == []


def test_a_gz_that_is_not_gzip_and_a_corrupt_gzip_are_one_line_each(tmp_path):
    plain = write_csv(tmp_path / "s.csv", GOOD)
    named = tmp_path / "s.csv.gz"
    named.write_bytes(plain.read_bytes())
    problems = validate_submission(named, NAMES, SHAPE)
    assert len(problems) == 1 and "not gzip-compressed" in problems[0]
    good = write_csv(tmp_path / "t.csv.gz", GOOD).read_bytes()
    broken = tmp_path / "u.csv.gz"
    broken.write_bytes(good[:12] + bytes(b ^ 0x55 for b in good[12:30]) + good[30:])
    problems = validate_submission(broken, NAMES, SHAPE)
    assert len(problems) >= 1 and all("\n" not in p for p in problems)
    assert "u.csv.gz" in problems[-1]
    with pytest.raises(PipelineError):
        check_submission(broken, NAMES, SHAPE)


def test_rle_problem_agrees_with_the_encoder():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((30, 40)) > rng.random()
        assert rle_problem(rle.encode(mask), mask.size) is None


def test_validator_reads_the_real_sample_submission_order(real_root, tmp_path):
    names = sample_names(real_root)[:3]
    path = write_csv(tmp_path / "s.csv.gz", [f"{n},1 1" for n in names])
    assert validate_submission(path, real_root / "sample_submission.csv", limit=3) == []
    problems = validate_submission(path, real_root / "sample_submission.csv", limit=4)
    assert "ends after 3 rows; 1 more" in problems[0]
