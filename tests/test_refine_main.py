"""The edge-refiner stage CLI (``python -m pipeline.refine``): refiner.pt beside the fold's
best.pt with the wall time printed, and one-line errors (the core is tested in
test_training_refiner.py)."""

from __future__ import annotations

import shutil

import pytest
from conftest import tiny_overrides
from typer.testing import CliRunner

from pipeline.refine.__main__ import app
from pipeline.refine.store import load_refiner
from pipeline.runs import Roots

REFINE = ["refine.steps=3", "refine.patch=24", "refine.context=4", "refine.tile=8",
          "refine.width=4", "refine.images_per_batch=2", "refine.patches_per_image=2",
          "refine.num_workers=0", "refine.log_every=1"]


@pytest.fixture
def roots(tiny_trained, tmp_path):
    roots = Roots(checkpoints=tmp_path / "ck")
    roots.run("tiny", 0).checkpoint_dir.mkdir(parents=True)
    shutil.copy(tiny_trained.best, roots.run("tiny", 0).best)
    return roots


def run_cli(tiny_data, tiny_folds, tiny_cache, roots, *args):
    return CliRunner().invoke(app, [
        "--folds", str(tiny_folds), "--checkpoints", str(roots.checkpoints), "--no-progress",
        "--device", "cpu", *tiny_overrides(tiny_data, tiny_cache), *REFINE, *map(str, args)])


def test_the_stage_writes_refiner_pt_beside_best_pt(tiny_data, tiny_folds, tiny_cache, roots):
    res = run_cli(tiny_data, tiny_folds, tiny_cache, roots, "--fold", 0)
    assert res.exit_code == 0, res.output
    path = roots.run("tiny", 0).refiner
    assert f"wrote {path}: 3 steps on 32 training images of fold 0 (coarse 64x96)" in res.output
    assert "wall" in res.output
    _, cfg, _ = load_refiner(path)
    assert (cfg.steps, cfg.patch, cfg.width) == (3, 24, 4)  # the overrides reached it


@pytest.mark.parametrize("args, message", [
    (["--fold", 1], "no checkpoint for fold 1"),
    (["--fold", 0, "refine.patch=7"], "refine.patch must be even"),
    (["--fold", 0, "refine.stps=3"], "unknown config key 'refine.stps'"),
])
def test_errors_are_one_line(tiny_data, tiny_folds, tiny_cache, roots, args, message):
    res = run_cli(tiny_data, tiny_folds, tiny_cache, roots, *args)
    assert res.exit_code == 1 and message in res.output, res.output
    assert message in res.output.strip().splitlines()[-1]  # the error: one line, last
    assert not roots.run("tiny", 0).refiner.exists()
