"""Submission: the validator rejects each defect naming the row, the stage streams a valid file
in sample_submission order, resumes to the same bytes, fails clearly on bad input, and a
two-process torchrun run equals a single process."""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline import rle
from pipeline.config import Config, ModelConfig
from pipeline.data.layout import Layout
from pipeline.data.layout import submission_names as sample_names
from pipeline.errors import PipelineError
from pipeline.models import build_model
from pipeline.models.checkpoint import save_checkpoint
from pipeline.predict import iter_predictions, load_ensemble, masks_to_rle
from pipeline.submission import (
    ShardWriter,
    check_submission,
    read_submission,
    rle_problem,
    validate_submission,
)
from pipeline.submit import app, block_range, shard_path, submit

REPO = Path(__file__).resolve().parents[1]
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


def test_shard_writer_resumes_and_drops_a_half_written_chunk(tmp_path):
    part = tmp_path / ".x.part"
    w = ShardWriter(part, "k1", header="img,rle_mask")
    w.add("a,1 1\n", 1)
    w.flush()
    w.add("b,\n", 1)
    w.flush()
    size = part.stat().st_size
    with open(part, "ab") as fh:  # a crash in the middle of the next chunk
        fh.write(gzip.compress(b"c,1 1\n")[:7])
    again = ShardWriter(part, "k1", header="img,rle_mask")
    assert again.resumed and again.rows_done == 2 and part.stat().st_size == size
    assert gzip.decompress(part.read_bytes()) == b"img,rle_mask\na,1 1\nb,\n"
    other = ShardWriter(part, "k2", header="img,rle_mask")
    assert other.discarded and other.rows_done == 0
    assert gzip.decompress(part.read_bytes()) == b"img,rle_mask\n"


def test_block_range_covers_everything_in_whole_batches():
    for n, world, align in [(10, 2, 4), (100064, 3, 8), (5, 4, 4), (7, 1, 3)]:
        blocks = [block_range(n, r, world, align) for r in range(world)]
        assert blocks[0][0] == 0 and blocks[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))
        assert all((stop - start) % align == 0 for start, stop in blocks if stop < n)


# --------------------------------------------------------------------------- the stage


def make_cfg(**predict) -> Config:
    cfg = Config()
    return dataclasses.replace(
        cfg,
        model=ModelConfig(arch="unet", base_width=4, depth=2, name="tiny"),
        train=dataclasses.replace(cfg.train, height=32, width=48),
        predict=dataclasses.replace(cfg.predict, num_workers=0, batch_size=4, precision="fp32",
                                    **predict),
        submit=dataclasses.replace(cfg.submit, shard_every=8),
    )


def make_ckpt(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = make_cfg()
    return save_checkpoint(path, build_model(cfg.model), cfg)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ckpts")
    return {"a": make_ckpt(root / "tiny" / "fold0" / "best.pt", 0),
            "b": make_ckpt(root / "tiny" / "fold1" / "best.pt", 1), "root": root}


@pytest.fixture
def data(tmp_path, tiny_data) -> Path:
    """A private copy of the test side of tiny_data (tests break images in it)."""
    root = tmp_path / "data"
    shutil.copytree(Layout(tiny_data).test_dir, root / "test")
    shutil.copy(Layout(tiny_data).sample_submission_csv, root / "sample_submission.csv")
    return root


def unzip(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def test_submit_writes_a_valid_file_equal_to_the_engine(tmp_path, data, ckpts):
    cfg = make_cfg(tta=["hflip", "vflip"])
    out = tmp_path / "sub" / "demo.csv.gz"
    result = submit(cfg, [ckpts["a"], ckpts["b"]], data, out, progress=False)
    names = sample_names(data)
    assert result.rows == len(names) == 32 and result.shape == (64, 96)
    rows = read_submission(out)
    assert [r[0] for r in rows] == names
    assert validate_submission(out, data / "sample_submission.csv", (64, 96)) == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["demo.csv.gz"]  # no part files left
    # the rows are the engine's masks for the two-model ensemble
    ens = load_ensemble([ckpts["a"], ckpts["b"]], "cpu", cfg.predict)
    expected = [r for p in iter_predictions(ens, [data / "test" / n for n in names[:8]],
                                            cfg.predict, "cpu", (64, 96))
                for r in masks_to_rle(p.probs)]
    assert [r[1] for r in rows[:8]] == expected
    areas = [rle.decode(r[1], (64, 96)).mean() for r in rows]
    assert 0 < np.mean(areas) < 1


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_file(tmp_path, data, ckpts):
    cfg = make_cfg()
    whole = tmp_path / "whole" / "s.csv.gz"
    submit(cfg, [ckpts["a"]], data, whole, progress=False)

    out = tmp_path / "resumed" / "s.csv.gz"

    def stop_after_two_chunks(rows_done):
        if rows_done >= 16:
            raise Interrupt

    with pytest.raises(Interrupt):
        submit(cfg, [ckpts["a"]], data, out, progress=False, on_chunk=stop_after_two_chunks)
    part = shard_path(out, 0, 1)
    assert not out.exists() and part.is_file()
    assert unzip(part).decode().count("\n") == 1 + 16
    with open(part, "ab") as fh:  # a chunk half-written when the machine died
        fh.write(b"\x1f\x8b\x08\x00garbage")
    stale = shard_path(out, 1, 2)  # left by an earlier two-process attempt
    stale.write_bytes(b"old")
    result = submit(cfg, [ckpts["a"]], data, out, progress=False)
    assert result.resumed_rows == 16 and result.predicted == 16
    assert unzip(out) == unzip(whole)
    assert out.read_bytes() == whole.read_bytes()  # same chunks: even the gzip bytes match
    assert sorted(p.name for p in out.parent.iterdir()) == ["s.csv.gz"]  # parts and stamps gone


def test_other_checkpoints_do_not_mix_with_a_stale_part(tmp_path, data, ckpts):
    cfg = make_cfg()
    out = tmp_path / "s.csv.gz"

    def stop(rows_done):
        raise Interrupt

    with pytest.raises(Interrupt):
        submit(cfg, [ckpts["a"]], data, out, progress=False, on_chunk=stop)
    result = submit(cfg, [ckpts["b"]], data, out, progress=False)
    assert result.resumed_rows == 0
    reference = tmp_path / "ref.csv.gz"
    submit(cfg, [ckpts["b"]], data, reference, progress=False)
    assert unzip(out) == unzip(reference)


def test_missing_test_image_fails_before_writing(tmp_path, data, ckpts):
    name = sample_names(data)[20]
    (data / "test" / name).unlink()
    out = tmp_path / "s.csv.gz"
    with pytest.raises(PipelineError, match=f"{name}: test image not found"):
        submit(make_cfg(), [ckpts["a"]], data, out, progress=False)
    assert not out.parent.exists() or not any(out.parent.glob("*.part"))


def test_bad_image_mid_run_keeps_the_finished_rows(tmp_path, data, ckpts):
    from pipeline.data.io import write_image

    cfg = make_cfg()
    name = sample_names(data)[13]
    original = (data / "test" / name).read_bytes()
    write_image(data / "test" / name, np.zeros((60, 96, 3), np.uint8))
    out = tmp_path / "s.csv.gz"
    with pytest.raises(PipelineError, match=f"{name}: is 96x60 pixels, expected 96x64"):
        submit(cfg, [ckpts["a"]], data, out, progress=False)
    assert not out.exists()
    assert unzip(shard_path(out, 0, 1)).decode().count("\n") == 1 + 12  # 3 whole batches kept
    (data / "test" / name).write_bytes(original)
    result = submit(cfg, [ckpts["a"]], data, out, progress=False)
    assert result.resumed_rows == 12
    reference = tmp_path / "ref.csv.gz"
    submit(cfg, [ckpts["a"]], data, reference, progress=False)
    assert unzip(out) == unzip(reference)


# --------------------------------------------------------------------------- CLI


def run_cli(args, cwd: Path):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)


OVERRIDES = ["predict.num_workers=0", "predict.batch_size=4", "predict.precision=fp32"]


def test_cli_limit_validate_and_errors(tmp_path, data, ckpts):
    res = run_cli(["--checkpoint", ckpts["a"], "--data-root", data, "--out-dir", tmp_path / "s",
                   "--name", "smoke", "--limit", 8, *OVERRIDES], tmp_path)
    assert res.exit_code == 0, res.output
    out = tmp_path / "s" / "smoke.csv.gz"
    assert len(read_submission(out)) == 8 and "8 rows" in res.output
    # --validate: the 8-row file is valid for --limit 8, not for the whole test set
    ok = run_cli(["--validate", out, "--data-root", data, "--limit", 8], tmp_path)
    assert ok.exit_code == 0 and "valid" in ok.output
    bad = run_cli(["--validate", out, "--data-root", data], tmp_path)
    assert bad.exit_code == 1 and "ends after 8 rows; 24 more" in bad.output
    # no checkpoints for the model
    none = run_cli(["--checkpoints", tmp_path / "empty", "--data-root", data, *OVERRIDES],
                   tmp_path)
    assert none.exit_code == 1 and "no checkpoints found" in none.output
    # default checkpoints: every fold of the label
    both = run_cli(["--checkpoints", ckpts["root"], "--data-root", data, "--limit", 4,
                    "--out-dir", tmp_path / "s", "model.name=tiny", *OVERRIDES], tmp_path)
    assert both.exit_code == 0 and "2 model(s)" in both.output, both.output


def test_cli_upload_without_kaggle_is_a_clear_error(tmp_path, data, ckpts, monkeypatch):
    monkeypatch.setitem(sys.modules, "kaggle", None)  # import kaggle -> ImportError
    res = run_cli(["--checkpoint", ckpts["a"], "--data-root", data, "--out-dir", tmp_path,
                   "--limit", 4, "--upload", *OVERRIDES], tmp_path)
    assert res.exit_code == 1
    assert "kaggle package" in res.output and len(list(tmp_path.glob("*.csv.gz"))) == 1


# --------------------------------------------------------------------------- torchrun


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path, data, ckpts):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = ["-m", "pipeline.submit", "--checkpoint", str(ckpts["a"]), "--checkpoint",
            str(ckpts["b"]), "--data-root", str(data), "--out-dir", str(tmp_path / "out"),
            *OVERRIDES, "predict.num_workers=1", "submit.shard_every=4"]
    single = subprocess.run([sys.executable, *args, "--name", "one"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, check=False)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args,
         "--name", "two"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert multi.returncode == 0, multi.stderr[-3000:]
    one, two = tmp_path / "out" / "one.csv.gz", tmp_path / "out" / "two.csv.gz"
    assert unzip(two) == unzip(one)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one.csv.gz", "two.csv.gz"]


def test_upload_without_credentials_is_a_clear_error(tmp_path, monkeypatch):
    import types

    from pipeline.submit import upload

    calls = []

    class FakeApi:
        def authenticate(self):
            raise OSError("Could not find kaggle.json. Make sure it's located in ~/.kaggle.\nMore")

        def competition_submit(self, *args):
            calls.append(args)

    module = types.ModuleType("kaggle.api.kaggle_api_extended")
    module.KaggleApi = FakeApi
    for name in ("kaggle", "kaggle.api"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", module)
    with pytest.raises(PipelineError) as err:
        upload(tmp_path / "s.csv.gz", "msg")
    assert "Could not find kaggle.json" in str(err.value) and "\n" not in str(err.value)
    assert "KAGGLE_USERNAME" in str(err.value) and not calls
    FakeApi.authenticate = lambda self: None
    upload(tmp_path / "s.csv.gz", "msg")
    assert calls == [(str(tmp_path / "s.csv.gz"), "msg", "carvana-image-masking-challenge")]
