"""Predicting the test set into a submission: a valid file in sample_submission order equal to
the engine's masks, an interrupted run resumes to the very same bytes, a stale part of other
checkpoints is never mixed in, a missing image fails before writing, and a bad image mid-run
keeps the finished rows."""

from __future__ import annotations

import dataclasses
import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from pipeline import rle
from pipeline.config import Config, load_config
from pipeline.data.io import write_image
from pipeline.data.layout import Layout
from pipeline.data.layout import submission_names as sample_names
from pipeline.errors import PipelineError
from pipeline.inference.encode import masks_to_rle
from pipeline.inference.engine import iter_predictions, load_ensemble, prepare_engine
from pipeline.models import build_model
from pipeline.models.checkpoint import save_checkpoint
from pipeline.submit.format import read_submission, validate_submission
from pipeline.submit.make import make_submission
from pipeline.submit.shards import shard_path


@pytest.fixture(scope="module")
def cfg(tiny_data, tiny_cache) -> Config:
    """The tiny config writing a resume chunk every 8 rows (2 batches)."""
    return load_config([], [*tiny_overrides(tiny_data, tiny_cache), "submit.shard_every=8"])


@pytest.fixture(scope="module")
def ckpts(tiny_trained, cfg, tmp_path_factory) -> dict:
    """``a``: the tiny trained model; ``b``: another model (untrained, seed 1)."""
    torch.manual_seed(1)
    other = tmp_path_factory.mktemp("ckpts") / "tiny" / "fold1" / "best.pt"
    return {"a": tiny_trained.best, "b": save_checkpoint(other, build_model(cfg.model), cfg)}


@pytest.fixture
def data(tmp_path, tiny_data) -> Path:
    """A private copy of the test side of tiny_data (tests break images in it)."""
    root = tmp_path / "data"
    shutil.copytree(Layout(tiny_data).test_dir, root / "test")
    shutil.copy(Layout(tiny_data).sample_submission_csv, root / "sample_submission.csv")
    return root


def unzip(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


class Interrupt(Exception):
    pass


def test_submission_is_a_valid_file_equal_to_the_engine(tmp_path, data, ckpts, cfg):
    cfg = dataclasses.replace(cfg, predict=dataclasses.replace(cfg.predict, tta=["hflip"]))
    out = tmp_path / "sub" / "demo.csv.gz"
    result = make_submission(cfg.predict, cfg.submit, [ckpts["a"], ckpts["b"]], data, out, progress=False)
    names = sample_names(data)
    assert result.rows == len(names) == 32 and result.shape == (64, 96)
    rows = read_submission(out)
    assert [r[0] for r in rows] == names
    assert validate_submission(out, data / "sample_submission.csv", (64, 96)) == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["demo.csv.gz"]  # no part files left
    # the rows are the engine's masks for the two-model ensemble
    ens = load_ensemble([ckpts["a"], ckpts["b"]], prepare_engine(cfg.predict))
    expected = [r for p in iter_predictions(ens, [data / "test" / n for n in names[:8]], (64, 96))
                for r in masks_to_rle(p.probs, 0.5, cfg.predict.largest_component)]
    assert [r[1] for r in rows[:8]] == expected
    areas = [rle.decode(r[1], (64, 96)).mean() for r in rows]
    assert 0 < np.mean(areas) < 1


def test_interrupted_run_resumes_to_the_same_file(tmp_path, data, ckpts, cfg):
    whole = tmp_path / "whole" / "s.csv.gz"
    make_submission(cfg.predict, cfg.submit, [ckpts["a"]], data, whole, progress=False)

    out = tmp_path / "resumed" / "s.csv.gz"

    def stop_after_two_chunks(rows_done):
        if rows_done >= 16:
            raise Interrupt

    with pytest.raises(Interrupt):
        make_submission(cfg.predict, cfg.submit, [ckpts["a"]], data, out, progress=False,
                        on_chunk=stop_after_two_chunks)
    part = shard_path(out, 0, 1)
    assert not out.exists() and part.is_file()
    assert unzip(part).decode().count("\n") == 1 + 16
    with open(part, "ab") as fh:  # a chunk half-written when the machine died
        fh.write(b"\x1f\x8b\x08\x00garbage")
    stale = shard_path(out, 1, 2)  # left by an earlier two-process attempt
    stale.write_bytes(b"old")
    result = make_submission(cfg.predict, cfg.submit, [ckpts["a"]], data, out, progress=False)
    assert result.resumed_rows == 16 and result.predicted == 16
    assert unzip(out) == unzip(whole)
    assert out.read_bytes() == whole.read_bytes()  # same chunks: even the gzip bytes match
    assert sorted(p.name for p in out.parent.iterdir()) == ["s.csv.gz"]  # parts and stamps gone


def test_other_checkpoints_do_not_mix_with_a_stale_part(tmp_path, data, ckpts, cfg):
    out = tmp_path / "s.csv.gz"

    def stop(rows_done):
        raise Interrupt

    with pytest.raises(Interrupt):
        make_submission(cfg.predict, cfg.submit, [ckpts["a"]], data, out, progress=False, on_chunk=stop)
    result = make_submission(cfg.predict, cfg.submit, [ckpts["b"]], data, out, progress=False)
    assert result.resumed_rows == 0
    reference = tmp_path / "ref.csv.gz"
    make_submission(cfg.predict, cfg.submit, [ckpts["b"]], data, reference, progress=False)
    assert unzip(out) == unzip(reference)


def test_missing_test_image_fails_before_writing(tmp_path, data, ckpts, cfg):
    name = sample_names(data)[20]
    (data / "test" / name).unlink()
    out = tmp_path / "s.csv.gz"
    with pytest.raises(PipelineError, match=f"{name}: test image not found"):
        make_submission(cfg.predict, cfg.submit, [ckpts["a"]], data, out, progress=False)
    assert not out.parent.exists() or not any(out.parent.glob("*.part"))


def test_bad_image_mid_run_keeps_the_finished_rows(tmp_path, data, ckpts, cfg):
    name = sample_names(data)[13]
    original = (data / "test" / name).read_bytes()
    write_image(data / "test" / name, np.zeros((60, 96, 3), np.uint8))
    out = tmp_path / "s.csv.gz"
    with pytest.raises(PipelineError, match=f"{name}: is 96x60 pixels, expected 96x64"):
        make_submission(cfg.predict, cfg.submit, [ckpts["a"]], data, out, progress=False)
    assert not out.exists()
    assert unzip(shard_path(out, 0, 1)).decode().count("\n") == 1 + 12  # 3 whole batches kept
    (data / "test" / name).write_bytes(original)
    result = make_submission(cfg.predict, cfg.submit, [ckpts["a"]], data, out, progress=False)
    assert result.resumed_rows == 12
    reference = tmp_path / "ref.csv.gz"
    make_submission(cfg.predict, cfg.submit, [ckpts["a"]], data, reference, progress=False)
    assert unzip(out) == unzip(reference)
