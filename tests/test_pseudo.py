"""The pseudo-label stage CLI (``python -m pipeline.pseudo``): a valid Kaggle-layout folder from
--images; fold K's held-out photos with fold K's model alone (--folds --fold); one-line errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.data.layout import Layout
from pipeline.data.splits import load_folds
from pipeline.data.validate import validate
from pipeline.pseudo import app
from pipeline.runs import Roots

OVERRIDES = ["predict.num_workers=0", "predict.batch_size=4", "predict.precision=fp32",
             "pseudo.max_uncertain=1000", "model.name=tiny"]  # keep every non-empty mask


@pytest.fixture(scope="module")
def roots(tiny_trained, tmp_path_factory) -> Path:
    """A checkpoints folder holding the tiny model as fold 0 and fold 1 of the label tiny."""
    roots = Roots(checkpoints=tmp_path_factory.mktemp("pseudo_cli") / "ck")
    for fold in (0, 1):
        roots.run("tiny", fold).checkpoint_dir.mkdir(parents=True)
        shutil.copy(tiny_trained.best, roots.run("tiny", fold).best)
    return roots.checkpoints


def run_cli(args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_images_folder_to_a_valid_kaggle_layout(tmp_path, tiny_data, roots):
    out = tmp_path / "pseudo"
    res = run_cli(["--images", Layout(tiny_data).test_dir, "--out", out, "--checkpoints", roots,
                   "--limit", 8, *OVERRIDES])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "pseudo.json").read_text())
    assert report["images_seen"] == 8 and len(report["checkpoints"]) == 2  # every fold's model
    assert f"kept {report['kept']} of 8 photos" in res.output and report["kept"] > 0
    errors = [p for p in validate(out, expected=None) if p.severity == "error"]
    assert errors == []
    again = run_cli(["--images", Layout(tiny_data).test_dir, "--out", out, "--checkpoints",
                     roots, "--limit", 8, *OVERRIDES])
    assert again.exit_code == 0 and "up to date" in again.output


def test_a_folds_held_out_photos_with_that_folds_model(tmp_path, tiny_data, tiny_folds, roots):
    out = tmp_path / "pseudo"
    res = run_cli(["--folds", tiny_folds, "--fold", 1, "--out", out, "--checkpoints", roots,
                   f"data.root={tiny_data}", *OVERRIDES])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "pseudo.json").read_text())
    held_out = load_folds(tiny_folds).query("fold == 1")["img"].tolist()
    assert list(report["images"]) == held_out
    assert report["checkpoints"] == [str(roots / "tiny" / "fold1" / "best.pt")]
    name = next(n for n, e in report["images"].items() if e["kept"])
    target = Path(os.path.realpath(Layout(out).image_path(name)))
    assert target == (Layout(tiny_data).train_dir / name).resolve()


@pytest.mark.parametrize("args, message", [
    (["--fold", 0], "--folds and --fold go together"),
    (["--images", "nowhere"], "image folder not found"),
    (["pseudo.low=0.7"], "pseudo.low=0.7"),
])
def test_errors_are_one_line(tmp_path, tiny_data, roots, args, message):
    res = run_cli(["--out", tmp_path / "p", "--checkpoints", roots, f"data.root={tiny_data}",
                   *OVERRIDES, *args])
    assert res.exit_code == 1 and message in res.output, res.output
    assert res.output.count("\n") == 1
