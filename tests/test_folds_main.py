"""The folds stage CLI (`python -m pipeline.folds`): writes the folds file, one-line errors."""

from __future__ import annotations

from typer.testing import CliRunner

from pipeline.folds.__main__ import app
from pipeline.folds.splits import load_folds


def test_cli_on_tiny_data(tiny_data, tmp_path):
    out = tmp_path / "folds.csv"
    result = CliRunner().invoke(app, ["--out", str(out), "--data-root", str(tiny_data),
                                      "folds.n_folds=2"])
    assert result.exit_code == 0, result.output
    folds = load_folds(out)
    assert len(folds) == 4 * 16 and folds["fold"].nunique() == 2
    bad = CliRunner().invoke(app, ["--out", str(out), "--data-root", str(tiny_data),
                                   "folds.n_folds=9"])
    assert bad.exit_code == 1 and "larger than the number of cars" in bad.output


def test_cli_unstratified_prints_the_folds(tiny_data, tmp_path):
    out = tmp_path / "folds.csv"
    result = CliRunner().invoke(app, ["--folds", str(out), "--data-root", str(tiny_data),
                                      "folds.n_folds=2", "folds.stratify=none"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: 64 images, 2 folds (0: 2 cars/32 imgs, 1: 2 cars/32 imgs)" \
        in result.output
    assert (load_folds(out).groupby("car_id")["fold"].nunique() == 1).all()
