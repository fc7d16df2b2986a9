"""The submission stage CLI (``python -m pipeline.submit``): --limit, --validate, no
checkpoints, every fold of a label by default, --upload without the kaggle package; and a
two-process torchrun run equal to one process."""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_overrides
from typer.testing import CliRunner

from pipeline.data.layout import Layout
from pipeline.runs import Roots
from pipeline.submit.__main__ import app
from pipeline.submit.format import read_submission

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = ["predict.num_workers=0", "predict.batch_size=4", "predict.precision=fp32"]


@pytest.fixture(scope="module")
def ckpts(tiny_trained, tmp_path_factory) -> dict:
    """``a``: the tiny trained model; ``root``: a checkpoints folder holding it as fold 0 and
    fold 1 of the label ``tiny``."""
    roots = Roots(checkpoints=tmp_path_factory.mktemp("submit_cli") / "ck")
    for fold in (0, 1):
        roots.run("tiny", fold).checkpoint_dir.mkdir(parents=True)
        shutil.copy(tiny_trained.best, roots.run("tiny", fold).best)
    return {"a": tiny_trained.best, "root": roots.checkpoints}


@pytest.fixture
def data(tmp_path, tiny_data) -> Path:
    """A private copy of the test side of tiny_data."""
    root = tmp_path / "data"
    shutil.copytree(Layout(tiny_data).test_dir, root / "test")
    shutil.copy(Layout(tiny_data).sample_submission_csv, root / "sample_submission.csv")
    return root


def unzip(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def run_cli(args, cwd: Path):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path, data, ckpts, tiny_data, tiny_cache):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    folds = [str(p) for p in Roots(checkpoints=ckpts["root"]).model("tiny")
             .fold_checkpoints().values()]
    args = ["-m", "pipeline.submit", "--checkpoint", folds[0], "--checkpoint", folds[1],
            "--data-root", str(data), "--out-dir", str(tmp_path / "out"),
            *tiny_overrides(tiny_data, tiny_cache), "predict.num_workers=1",
            "submit.shard_every=4"]
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
