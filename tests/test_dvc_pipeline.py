"""The whole DVC pipeline end to end (``dvc repro``) on a micro config, in a scratch copy; and
the data stage re-run over a linked folder of the user's, which must stay as it was."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

MICRO = {
    "data": {"root": "data/demo", "demo": {"train_cars": 4, "test_cars": 1, "height": 96,
                                           "width": 144}},
    "folds": {"n_folds": 2},
    "model": {"base_width": 4, "depth": 2},
    "train": {"height": 32, "width": 48, "epochs": 1, "batch_size": 8, "num_workers": 0,
              "threads": 1},
    "predict": {"batch_size": 8, "num_workers": 0},
    "repro": {"folds": [0, 1]},
}


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    dvc_bin = Path(sys.executable).with_name("dvc")
    cmd = [str(dvc_bin), *args] if dvc_bin.exists() else [sys.executable, "-m", "dvc", *args]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:"
           + os.environ.get("PATH", "")}
    return subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


def project(tmp_path: Path, settings: dict) -> Path:
    """A scratch git + DVC copy of the project with ``settings`` merged into base.yaml."""
    work = tmp_path / "project"
    work.mkdir()
    for name in ("dvc.yaml", "configs", "pipeline", ".dvc", ".dvcignore"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns(
                "__pycache__", "tmp", "cache"))
        else:
            shutil.copy2(src, work / name)
    base = yaml.safe_load((work / "configs/base.yaml").read_text())
    (work / "configs/base.yaml").write_text(yaml.safe_dump(merge(base, settings)))
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    return work


@pytest.mark.slow
def test_dvc_repro_runs_every_stage_on_a_micro_config(tmp_path):
    work = project(tmp_path, MICRO)
    base = yaml.safe_load((work / "configs/base.yaml").read_text())
    result = dvc("repro", cwd=work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    model = base["repro"]["models"][0]
    # every stage left its outputs
    for fold in (0, 1):
        assert (work / f"checkpoints/{model}/fold{fold}/best.pt").is_file()
        assert json.loads((work / f"metrics/{model}/fold{fold}.json").read_text())["fold"] == fold
    cv = json.loads((work / f"metrics/{model}/cv.json").read_text())
    assert 0.0 <= cv["dice"] <= 1.0 and cv["images"] == 4 * 16
    submission = work / f"submissions/{base['submit']['name']}.csv.gz"
    with gzip.open(submission, "rt") as f:
        lines = f.read().splitlines()
    assert lines[0] == "img,rle_mask" and len(lines) == 1 + 16
    assert "| " in (work / "reports/benchmark.md").read_text()
    assert (work / "reports/benchmark.png").stat().st_size > 0
    assert "rank" in (work / "reports/leaderboard.md").read_text().lower()
    assert (work / "dvc.lock").is_file()

    # DVC sees the declared metrics, and a second repro has nothing to do.
    shown = dvc("metrics", "show", "--json", cwd=work)
    assert shown.returncode == 0 and "cv.json" in shown.stdout
    again = dvc("repro", cwd=work)
    assert again.returncode == 0
    assert "didn't change" in again.stdout or "up to date" in again.stdout.lower()
    assert stale_stages(work) == set()

    # An edit to the clean-up code makes exactly the stages that predict masks stale ...
    post = work / "pipeline" / "postprocess.py"
    original = post.read_text()
    post.write_text(original + "# an edit\n")
    assert stale_stages(work) == {f"evaluate@{model}", "submit"}
    post.write_text(original)
    # ... and a runtime-only setting (workers, batch size of prediction) reruns nothing.
    tuned = yaml.safe_load((work / "configs/base.yaml").read_text())
    tuned["train"]["num_workers"] = 3
    tuned["predict"]["batch_size"] = 2
    (work / "configs/base.yaml").write_text(yaml.safe_dump(tuned))
    assert stale_stages(work) == set()


def test_rerunning_the_data_stage_leaves_the_linked_folder_alone(tiny_data, tmp_path):
    """``dvc repro -f data`` removes the stage's output before running it again. A data root
    that is a symlink to the user's folder made DVC's removal chmod that folder to 777; the
    data root is now a folder of links, whose removal touches nothing in the source."""
    source = tmp_path / "mine"
    shutil.copytree(tiny_data, source)
    source.chmod(0o755)
    before = {str(p): (p.lstat().st_mode, p.lstat().st_size)
              for p in [source, *sorted(source.rglob("*"))]}
    work = project(tmp_path, {"data": {"source": str(source), "root": "data/real"}})
    for args in (["repro", "data"], ["repro", "-f", "data"]):
        result = dvc(*args, cwd=work)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    after = {str(p): (p.lstat().st_mode, p.lstat().st_size)
             for p in [source, *sorted(source.rglob("*"))]}
    assert after == before
    root = work / "data" / "real"
    assert not root.is_symlink() and (root / "train").resolve() == source / "train"


def stale_stages(work: Path) -> set[str]:
    """The stages ``dvc status`` reports changed."""
    status = dvc("status", "--json", cwd=work)
    assert status.returncode == 0, status.stderr
    return set(json.loads(status.stdout or "{}"))
