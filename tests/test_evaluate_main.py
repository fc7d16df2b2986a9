"""The evaluation stage CLI (``python -m pipeline.evaluate``): out of fold with the report and
the summary file, --checkpoint outside a fold folder, --all-images, no checkpoints; and a
two-process torchrun run equal to one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import tiny_overrides
from typer.testing import CliRunner

from pipeline.evaluate.__main__ import app
from pipeline.folds.splits import load_folds, split
from pipeline.records import CVSummary, read_record
from pipeline.runs import Roots

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_folds(tiny_trained, tiny_folds, tmp_path_factory) -> Path:
    """A checkpoints root holding the tiny trained model as both fold 0's and fold 1's (each
    copy records the training images of its fold, or evaluate would refuse it as leakage)."""
    roots = Roots(checkpoints=tmp_path_factory.mktemp("eval_cli") / "ck")
    for fold in (0, 1):
        roots.run("tiny", fold).checkpoint_dir.mkdir(parents=True)
        ckpt = torch.load(tiny_trained.best, weights_only=False)
        ckpt["trained_on"] = split(load_folds(tiny_folds), fold)[0]
        torch.save(ckpt, roots.run("tiny", fold).best)
    return roots.checkpoints


def run_cli(args, cwd):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)


def test_cli_out_of_fold_and_errors(tiny_data, tiny_folds, tiny_cache, two_folds, tmp_path):
    overrides = tiny_overrides(tiny_data, tiny_cache)
    common = ["--folds", tiny_folds, "--data-root", tiny_data, "--out-dir", tmp_path / "reports"]
    res = run_cli(["--checkpoints", two_folds, *common,
                   "--metrics-out", tmp_path / "m" / "cv.json", *overrides], tmp_path)
    assert res.exit_code == 0, res.output
    report = tmp_path / "reports" / "tiny"
    assert (report / "oof_dice.csv").is_file() and len(list(report.glob("worst_*.png"))) == 6
    # the summary is written once, at --metrics-out
    summary = read_record(tmp_path / "m" / "cv.json", CVSummary)
    assert summary.images == 64 and sorted(summary.folds) == ["0", "1"]
    assert not (report / "cv.json").exists()
    assert "64 images" in res.output
    # --checkpoint outside a fold<K> folder cannot be scored out of fold
    stray = tmp_path / "model.pt"
    stray.write_bytes((two_folds / "tiny" / "fold1" / "best.pt").read_bytes())
    bad = run_cli(["--checkpoint", stray, *common, *overrides], tmp_path)
    assert bad.exit_code == 1 and "cannot tell which fold" in bad.output
    # ... nor a folder whose images it learnt from (half of them: fold 0's training cars)
    seen = run_cli(["--checkpoint", stray, "--all-images", *common, *overrides], tmp_path)
    assert seen.exit_code == 1 and "learnt from 32 of the 64 images" in seen.output
    # ... but a model that never saw them scores the whole labelled folder
    ckpt = torch.load(stray, weights_only=False)
    ckpt["trained_on"] = []
    torch.save(ckpt, stray)
    ok = run_cli(["--checkpoint", stray, "--all-images", *common, *overrides], tmp_path)
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "reports" / "tiny" / Path(tiny_data).name / "dice.csv").is_file()
    none = run_cli(["--checkpoints", tmp_path / "none", *common, *overrides], tmp_path)
    assert none.exit_code == 1 and "no fold checkpoints" in none.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tiny_data, tiny_folds, tiny_cache, tiny_trained,
                                          tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = ["-m", "pipeline.evaluate", "--checkpoints", str(tiny_trained.roots.checkpoints),
            "--folds", str(tiny_folds), "--data-root", str(tiny_data),
            *tiny_overrides(tiny_data, tiny_cache)]
    for name, launcher in [("one", [sys.executable]),
                           ("two", [sys.executable, "-m", "torch.distributed.run",
                                    "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                                    "--master_port", str(free_port())])]:
        proc = subprocess.run([*launcher, *args, "--out-dir", str(tmp_path / name),
                               "--metrics-out", str(tmp_path / name / "cv.json")],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one = pd.read_csv(tmp_path / "one" / "tiny" / "oof_dice.csv")
    two = pd.read_csv(tmp_path / "two" / "tiny" / "oof_dice.csv")
    pd.testing.assert_frame_equal(one, two)
    assert len(one) == 32
