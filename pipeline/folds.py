"""Folds stage: ``python -m pipeline.folds`` writes ``folds/folds.csv``.

All 16 angles of a car share one fold; folds are balanced and stratified by make (or mask area)
(:mod:`pipeline.data.splits`). Columns: ``img, car_id, angle, make, fold``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli import ConfigOption, OverridesArgument
from pipeline.config import cli_config
from pipeline.data.layout import train_index
from pipeline.data.splits import fold_summary, make_folds, mask_areas, write_folds
from pipeline.errors import one_line_errors

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@app.command()
@one_line_errors
def main(
    out: Annotated[Path, typer.Option(help="Where to write the folds CSV.")] = Path(
        "folds/folds.csv"
    ),
    data_root: Annotated[
        Path | None, typer.Option(help="Kaggle-layout folder (default: data.root).")
    ] = None,
    config: ConfigOption = None,
    overrides: OverridesArgument = None,
) -> None:
    """Split the training cars into grouped, stratified folds."""
    cfg = cli_config(config, None, overrides)
    index = train_index(data_root or cfg.data.root)
    if cfg.folds.stratify == "area":
        index["area"] = mask_areas(index)
    folds = make_folds(index, cfg.folds)
    write_folds(folds, out)
    typer.echo(f"wrote {out}: {len(folds)} images, {cfg.folds.n_folds} folds "
               f"({fold_summary(folds)})")


if __name__ == "__main__":
    app()
