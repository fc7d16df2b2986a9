"""The training stage CLI (``python -m pipeline.train``): options, defaults, one-line errors,
and a run killed with SIGKILL that resumes (the core is tested in test_training_trainer.py)."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.config import FoldsConfig, default, load_config
from pipeline.data.layout import train_index
from pipeline.folds.splits import make_folds, write_folds
from pipeline.models.checkpoint import load_checkpoint
from pipeline.train.__main__ import app

REPO = Path(__file__).resolve().parents[1]


def _write_config(path: Path, root: Path, cache: Path) -> Path:
    # fp32 as before the refactor: "auto" is bf16 on CPUs with native bf16 now
    lines = ["data:", f"  root: {root}", f"  cache_dir: {cache}", "model:", "  arch: unet",
             "  name: tiny", "  base_width: 8", "  depth: 2", "train:", "  height: 64",
             "  width: 96", "  epochs: 1", "  batch_size: 4", "  num_workers: 0",
             "  max_steps: 2", "  threads: 1", "  precision: fp32"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_trains_and_reports(tiny_data, tiny_folds, tiny_cache, tmp_path):
    config = _write_config(tmp_path / "tiny.yaml", tiny_data, tiny_cache)
    args = ["--fold", "1", "-c", str(config), "--folds", str(tiny_folds),
            "--checkpoints", str(tmp_path / "ck"), "--metrics", str(tmp_path / "me"),
            "--live", str(tmp_path / "dl"), "--no-progress", "train.lr=0.001"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" in result.output and "wrote" in result.output
    metrics = json.loads((tmp_path / "me" / "tiny" / "fold1.json").read_text())
    assert metrics["fold"] == 1
    ckpt = load_checkpoint(tmp_path / "ck" / "tiny" / "fold1" / "last.pt")
    assert ckpt["config"]["train"]["lr"] == 0.001  # the override reached the run


def test_cli_trains_every_phase_of_the_recipe(tiny_data, tiny_folds, tiny_cache, tmp_path):
    config = _write_config(tmp_path / "tiny.yaml", tiny_data, tiny_cache)
    args = ["--fold", "0", "-c", str(config), "--folds", str(tiny_folds),
            "--checkpoints", str(tmp_path / "ck"), "--metrics", str(tmp_path / "me"),
            "--live", str(tmp_path / "dl"), "--no-progress", "train.max_steps=1",
            "train.progressive=[{height: 32, width: 48, lr: 0.001}]"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    phase0 = tmp_path / "ck" / "tiny" / "fold0" / "phase0" / "best.pt"
    assert "phase 0/1: 64x96, 1 epoch" in result.output
    assert f"phase 1/1: 32x48, 1 epoch from {phase0}" in result.output
    final = load_checkpoint(tmp_path / "ck" / "tiny" / "fold0" / "best.pt")
    assert final["config"]["train"]["init_from"] == str(phase0)
    assert json.loads((tmp_path / "me" / "tiny" / "fold0.json").read_text())["height"] == 32


def test_cli_defaults_need_only_the_fold(tiny_data, tmp_path, monkeypatch):
    """configs/base.yaml, folds/folds.csv, checkpoints/, metrics/ and dvclive/ by default."""
    (tmp_path / "configs").mkdir()
    shutil.copy(REPO / "configs" / "base.yaml", tmp_path / "configs" / "base.yaml")
    monkeypatch.chdir(tmp_path)
    root = Path(load_config(["configs/base.yaml"]).data.root)
    root.parent.mkdir(parents=True, exist_ok=True)
    root.symlink_to(tiny_data, target_is_directory=True)
    folds = make_folds(train_index(root), default(FoldsConfig, n_folds=2, seed=0, stratify="none"))
    write_folds(folds, "folds/folds.csv")
    shrink = ["train.epochs=1", "train.max_steps=1", "train.height=32", "train.width=48",
              "train.num_workers=0", "train.threads=1", "model.base_width=4", "model.depth=2"]
    result = CliRunner().invoke(app, ["--fold", "0", "--no-progress", *shrink])
    assert result.exit_code == 0, result.output
    base = load_config(["configs/base.yaml"])
    label = base.model.label
    assert (tmp_path / "checkpoints" / label / "fold0" / "best.pt").is_file()
    assert (tmp_path / "metrics" / label / "fold0.json").is_file()
    assert (tmp_path / "dvclive" / label / "fold0" / "curves.png").is_file()
    assert [p.name for p in (tmp_path / base.data.cache_dir).glob("32x48-*/images")] == ["images"]


@pytest.mark.parametrize("extra, message", [
    (["--fold", "9"], "fold 9 does not exist"),
    (["--fold", "0", "train.lr_max=1"], "unknown config key 'train.lr_max'"),
    (["--fold", "0", "train.loss=focal"], "train.loss must be one of"),
    (["--fold", "0", "train.progressive=[{seed: 1}]"], "train.seed cannot change per phase"),
    (["--fold", "0", "train.progressive=[{loss: focal}]"], "progressive[0]: train.loss must be"),
])
def test_cli_bad_input_is_one_error_line(tiny_data, tiny_folds, tiny_cache, tmp_path, extra,
                                         message):
    config = _write_config(tmp_path / "tiny.yaml", tiny_data, tiny_cache)
    args = ["-c", str(config), "--folds", str(tiny_folds), "--checkpoints", str(tmp_path / "ck"),
            "--metrics", str(tmp_path / "me"), "--live", str(tmp_path / "dl"), "--no-progress"]
    result = CliRunner().invoke(app, args + extra)
    assert result.exit_code == 1
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "ck").exists()


@pytest.mark.slow
def test_kill_minus_nine_then_resume(tiny_data, tiny_folds, tiny_cache, tmp_path):
    config = _write_config(tmp_path / "tiny.yaml", tiny_data, tiny_cache)
    args = [sys.executable, "-m", "pipeline.train", "--fold", "-1", "-c", str(config),
            "--folds", str(tiny_folds), "--checkpoints", str(tmp_path / "ck"),
            "--metrics", str(tmp_path / "me"), "--live", str(tmp_path / "dl"), "--no-progress",
            "train.epochs=6", "train.max_steps=2", "train.live=false"]
    last = tmp_path / "ck" / "tiny" / "fold-1" / "last.pt"
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    killed_at = load_checkpoint(last)["epoch"]
    assert killed_at < 5
    done = subprocess.run(args + ["--resume"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert f"resuming {last} at epoch {killed_at + 2}/6" in done.stdout
    state = load_checkpoint(last)["train_state"]
    assert state["epoch"] == 5
    assert [r["epoch"] for r in state["progress"]["history"]] == list(range(6))
    assert math.isfinite(json.loads((tmp_path / "me" / "tiny" / "fold-1.json").read_text())
                         ["train_loss"])
