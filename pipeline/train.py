"""Training stage: ``python -m pipeline.train --fold K`` (or ``torchrun ... -m pipeline.train``).

Trains one model on one fold of ``folds/folds.csv`` (:mod:`pipeline.training.trainer`) and
writes, under the roots given (:mod:`pipeline.runs`):

    checkpoints/<model>/fold<K>/best.pt   best validation Dice (fold -1: the last epoch)
    checkpoints/<model>/fold<K>/last.pt   last epoch + optimiser/scheduler/scaler/RNG state
    metrics/<model>/fold<K>.json          the training record (pipeline.records.TrainRecord)
    dvclive/<model>/fold<K>/              per-epoch metrics (DVCLive) and curves.png

``--resume`` continues from ``last.pt`` and ends in the same state as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli import ConfigOption, ModelOption, OverridesArgument, ProgressOption
from pipeline.config import cli_config
from pipeline.errors import one_line_errors
from pipeline.runs import Roots
from pipeline.training.trainer import train

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@app.command()
@one_line_errors
def main(
    fold: Annotated[int, typer.Option(help="Fold to validate on; -1 trains on every image.")] = 0,
    config: ConfigOption = None,
    model: ModelOption = None,
    folds: Annotated[Path, typer.Option(help="Folds CSV.")] = Path("folds/folds.csv"),
    checkpoints: Annotated[Path, typer.Option(help="Checkpoint root.")] = Roots.checkpoints,
    metrics: Annotated[Path, typer.Option(help="Metrics root.")] = Roots.metrics,
    live: Annotated[Path, typer.Option(help="DVCLive root.")] = Roots.live,
    resume: Annotated[bool, typer.Option(help="Continue from last.pt.")] = False,
    progress: ProgressOption = True,
    overrides: OverridesArgument = None,
) -> None:
    """Train one model on one fold."""
    cfg = cli_config(config, model, overrides)
    run = Roots(checkpoints=checkpoints, metrics=metrics, live=live).run(cfg.model.label, fold)
    record = train(cfg, fold, folds_path=folds, run=run, resume=resume, progress=progress)
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {"model": record.model, "fold": record.fold, "best_epoch": record.best_epoch,
                   "val_dice": record.val_dice, "epochs": record.epochs}
        typer.echo(f"wrote {run.record}: {json.dumps(summary)}")


if __name__ == "__main__":
    app()
