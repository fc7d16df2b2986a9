"""Resume keys (pipeline.keys): equal for equal contents and settings, different as soon as one
byte, one setting or the order changes; and every result setting of a section counts."""

from __future__ import annotations

import hashlib
import re

import pytest

from pipeline.config import PredictConfig, TrainConfig, default, result_keys
from pipeline.keys import output_key, result_settings


def test_same_contents_and_extras_give_the_same_key(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "copy" / "b.pt"
    b.parent.mkdir()
    a.write_bytes(b"weights" * 1000)
    b.write_bytes(b"weights" * 1000)
    key = output_key([a], "fp32", [0.5])
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    assert output_key([b], "fp32", [0.5]) == key  # the contents count, not the path
    expected = hashlib.sha256(b"weights" * 1000 + repr(("fp32", [0.5])).encode()).hexdigest()
    assert key == expected[:16]


def test_any_change_gives_another_key(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"model a")
    b.write_bytes(b"model b")
    key = output_key([a, b], "hflip")
    assert output_key([b, a], "hflip") != key  # order of the ensemble
    assert output_key([a, b], "vflip") != key  # a setting
    assert output_key([a, b]) != key  # no setting
    assert output_key([a], "hflip") != key  # one model fewer
    a.write_bytes(b"model A")
    assert output_key([a, b], "hflip") != key  # one byte


def test_large_files_are_read_in_chunks(tmp_path):
    big = tmp_path / "big.bin"
    data = bytes(range(256)) * (1 << 15)  # 8 MiB: two chunks
    big.write_bytes(data)
    assert output_key([big]) == hashlib.sha256(data + b"()").hexdigest()[:16]


def test_a_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        output_key([tmp_path / "none.pt"])


@pytest.mark.parametrize("cls", [PredictConfig, TrainConfig])
def test_result_settings_are_every_result_key_and_no_runtime_one(cls):
    section = default(cls)
    settings = result_settings(section)
    assert list(settings) == result_keys(cls)
    assert "num_workers" not in settings
    assert result_settings(section, precision="bf16")["precision"] == "bf16"
