"""Fingerprints, the keys of every resume: equal for equal contents and settings, different as
soon as one byte, one setting or the order changes."""

from __future__ import annotations

import hashlib
import re

import pytest

from pipeline.fingerprint import fingerprint


def test_same_contents_and_extras_give_the_same_key(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "copy" / "b.pt"
    b.parent.mkdir()
    a.write_bytes(b"weights" * 1000)
    b.write_bytes(b"weights" * 1000)
    key = fingerprint([a], "fp32", [0.5])
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    assert fingerprint([b], "fp32", [0.5]) == key  # the contents count, not the path
    expected = hashlib.sha256(b"weights" * 1000 + repr(("fp32", [0.5])).encode()).hexdigest()
    assert key == expected[:16]


def test_any_change_gives_another_key(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"model a")
    b.write_bytes(b"model b")
    key = fingerprint([a, b], "hflip")
    assert fingerprint([b, a], "hflip") != key  # order of the ensemble
    assert fingerprint([a, b], "vflip") != key  # a setting
    assert fingerprint([a, b]) != key  # no setting
    assert fingerprint([a], "hflip") != key  # one model fewer
    a.write_bytes(b"model A")
    assert fingerprint([a, b], "hflip") != key  # one byte


def test_large_files_are_read_in_chunks(tmp_path):
    big = tmp_path / "big.bin"
    data = bytes(range(256)) * (1 << 15)  # 8 MiB: two chunks
    big.write_bytes(data)
    assert fingerprint([big]) == hashlib.sha256(data + b"()").hexdigest()[:16]


def test_a_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        fingerprint([tmp_path / "none.pt"])
