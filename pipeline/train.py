"""Training stage: ``python -m pipeline.train --fold K`` (or ``torchrun ... -m pipeline.train``).

Trains one model on one fold of ``folds/folds.csv``: every phase of ``train.progressive``, each
from the previous phase's best.pt, then the edge refiner when ``refine.train`` is set
(:mod:`pipeline.training.recipe`), and writes, under the roots given (:mod:`pipeline.runs`):

    checkpoints/<model>/fold<K>/best.pt   best validation Dice (fold -1: the last epoch)
    checkpoints/<model>/fold<K>/last.pt   last epoch + optimiser/scheduler/scaler/RNG state
    checkpoints/<model>/fold<K>/phase<I>/ the earlier phases' checkpoints and records
    checkpoints/<model>/fold<K>/refiner.pt  the edge refiner (refine.train)
    metrics/<model>/fold<K>.json          the training record (pipeline.records.TrainRecord)
    dvclive/<model>/fold<K>/              per-epoch metrics (DVCLive) and curves.png

``--resume`` skips finished phases, continues the interrupted one from its ``last.pt`` and ends
in the same state as an uninterrupted run; a refiner of the same best.pt is kept.
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
from pipeline.training.recipe import train_recipe

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
    resume: Annotated[bool, typer.Option(help="Continue from last.pt (and skip finished "
                                               "phases).")] = False,
    progress: ProgressOption = True,
    overrides: OverridesArgument = None,
) -> None:
    """Train one model on one fold."""
    cfg = cli_config(config, model, overrides)
    run = Roots(checkpoints=checkpoints, metrics=metrics, live=live).run(cfg.model.label, fold)
    record = train_recipe(cfg, fold, folds_path=folds, run=run, resume=resume,
                          progress=progress)
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {"model": record.model, "fold": record.fold, "best_epoch": record.best_epoch,
                   "val_dice": record.val_dice, "epochs": record.epochs}
        typer.echo(f"wrote {run.record}: {json.dumps(summary)}")


if __name__ == "__main__":
    app()
