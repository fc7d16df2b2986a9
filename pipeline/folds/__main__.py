"""Folds stage: ``python -m pipeline.folds`` writes ``folds/folds.csv``.

All 16 angles of a car share one fold; folds are balanced and stratified by make
(:mod:`pipeline.folds.splits`, which also gives every other stage its fold's rows). Columns:
``img, car_id, angle, make, fold``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli import StageOptions, stage
from pipeline.data.layout import train_index
from pipeline.folds.splits import fold_summary, make_folds, write_folds
from pipeline.runs import FOLDS_FILE

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@stage(app, "config", "data_root", "overrides")
def main(
    opts: StageOptions,
    out: Annotated[Path, typer.Option("--folds", "--out", help="The folds CSV to write.")]
    = FOLDS_FILE,
) -> None:
    """Split the training cars into grouped, stratified folds."""
    cfg = opts.cfg()
    folds = make_folds(train_index(cfg.data.root), cfg.folds)
    write_folds(folds, out)
    typer.echo(f"wrote {out}: {len(folds)} images, {cfg.folds.n_folds} folds "
               f"({fold_summary(folds)})")


if __name__ == "__main__":
    app()
