"""Data stage: make ``data.root`` a valid Carvana folder in Kaggle layout.

    python -m pipeline.data                                  # the demo, into data.root
    python -m pipeline.data data.demo.train_cars=12          # a bigger demo
    python -m pipeline.data --source ../shared/carvana --data-root data/carvana   # real files
    python -m pipeline.data --source kaggle --data-root data/carvana --test       # download

Every source ends with a validation of ``--out`` and a one-line summary
(:mod:`pipeline.data.prepare`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli import StageOptions, stage
from pipeline.data.prepare import prepare

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@stage(app, "config", "progress", "overrides")
def main(
    opts: StageOptions,
    source: Annotated[str | None, typer.Option(
        help="demo | kaggle | a folder in Kaggle layout (default: data.source).")] = None,
    data_root: Annotated[Path | None, typer.Option(
        "--data-root", "--out", help="The data root to prepare (default: data.root).")] = None,
    test: Annotated[bool, typer.Option(
        "--test/--no-test", help="kaggle: also download test.zip (100064 images).")] = False,
    force: Annotated[bool, typer.Option(help="demo: regenerate even if up to date.")] = False,
) -> None:
    """Prepare the data root: generate the demo, download from Kaggle, or link a folder."""
    cfg = opts.cfg(data_root)
    summary = prepare(cfg.data, source, include_test=test, force=force, progress=opts.progress,
                      echo=typer.echo)
    typer.echo(str(summary))


if __name__ == "__main__":
    app()
