"""Atomic writes: a file appears whole under its final name or not at all; a failure leaves
the old file untouched and no temporary file behind."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline import atomic
from pipeline.atomic import atomic_path, write_bytes, write_json, write_png, write_text


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_text_json_and_bytes(tmp_path):
    path = write_text(tmp_path / "deep" / "a.txt", "hello\n")
    assert path == tmp_path / "deep" / "a.txt" and path.read_text() == "hello\n"
    js = write_json(tmp_path / "b.json", {"b": 1, "a": [1.5, None]})
    assert json.loads(js.read_text()) == {"b": 1, "a": [1.5, None]}
    assert js.read_text().endswith("}\n") and list(json.loads(js.read_text())) == ["b", "a"]
    raw = write_bytes(tmp_path / "c.bin", b"\x00\x01")
    assert raw.read_bytes() == b"\x00\x01"
    write_text(path, "replaced")
    assert path.read_text() == "replaced"
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "deep") == []


def test_files_get_the_permissions_of_a_plain_open(tmp_path):
    umask = os.umask(0o022)
    try:
        path = write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600


def test_write_png_rgb_and_grey(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 200  # red
    path = write_png(tmp_path / "rgb.png", rgb)
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert back.shape == (4, 6, 3) and (back[..., 2] == 200).all() and (back[..., 0] == 0).all()
    grey = np.arange(24, dtype=np.uint8).reshape(4, 6)
    assert np.array_equal(cv2.imread(str(write_png(tmp_path / "g.png", grey)),
                                     cv2.IMREAD_UNCHANGED), grey)
    assert _leftovers(tmp_path) == []


def test_failure_inside_atomic_path_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".a.txt.")
        tmp.write_text("half of the new")
        raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []


WRITERS = [
    (write_text, "new"),
    (write_json, {"new": 1}),
    (write_bytes, b"new"),
    (write_png, np.zeros((2, 2), np.uint8)),
]


@pytest.mark.parametrize("writer, value", WRITERS)
def test_a_write_failing_halfway_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch,
                                                                      writer, value):
    path = tmp_path / "out.dat"
    path.write_bytes(b"old")
    real_write_bytes = Path.write_bytes

    def half_then_fail(self, data, *args, **kwargs):
        data = data.encode() if isinstance(data, str) else data
        real_write_bytes(self, data[: len(data) // 2])  # the temporary file holds half
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        writer(path, value)
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("writer, value", WRITERS)
def test_a_failed_rename_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch, writer,
                                                             value):
    path = tmp_path / "out.dat"
    path.write_bytes(b"old")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)  # the write fails at the end
    with pytest.raises(OSError, match="disk full"):
        writer(path, value)
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_the_next_write_removes_what_a_killed_write_left(tmp_path):
    """A kill -9 between writing and renaming leaves a hidden temporary; the next write of the
    same file removes it, and never a temporary of another file."""
    stale = tmp_path / ".a.json.k3j9x_2q.tmp"
    other = tmp_path / ".a.json.part.ab12cd34.tmp"  # belongs to 'a.json.part'
    for p in (stale, other):
        p.write_text("half")
    write_json(tmp_path / "a.json", {"x": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "a.json"]
