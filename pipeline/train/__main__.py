"""Training stage: ``python -m pipeline.train --fold K`` (or ``torchrun ... -m pipeline.train``).

Trains one model on one fold of ``folds/folds.csv``: every phase of ``train.progressive``, each
from the previous phase's best.pt, then the edge refiner when ``refine.train`` is set
(:mod:`pipeline.train.recipe`), and writes, under the roots given (:mod:`pipeline.runs`):

    checkpoints/<model>/fold<K>/best.pt   best validation Dice (fold -1: the last epoch)
    checkpoints/<model>/fold<K>/last.pt   last epoch + optimiser/schedule/scaler/RNG state
    checkpoints/<model>/fold<K>/phase<I>/ the earlier phases' checkpoints and records
    checkpoints/<model>/fold<K>/refiner.pt  the edge refiner (refine.train)
    metrics/<model>/fold<K>.json          the training record (pipeline.records.TrainRecord)
    dvclive/<model>/fold<K>/              per-epoch metrics (DVCLive) and curves.png

``--resume`` skips phases finished with the same settings, images and starting weights,
continues the interrupted one from its ``last.pt`` and ends in the same state as an
uninterrupted run; a refiner of the same best.pt is kept. Weights that learnt from the fold's
validation images (a remade folds file, ``train.init_from``) are refused.
"""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from pipeline.cli import StageOptions, stage
from pipeline.train.recipe import train_recipe

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@stage(app, "config", "model", "data_root", "folds", "checkpoints", "metrics", "live", "device",
       "progress", "overrides")
def main(
    opts: StageOptions,
    fold: Annotated[int, typer.Option(help="Fold to validate on; -1 trains on every image.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from last.pt (and skip finished "
                                               "phases).")] = False,
) -> None:
    """Train one model on one fold."""
    cfg = opts.cfg()
    run = opts.roots.run(cfg.model.label, fold)
    record = train_recipe(cfg, fold, folds_path=opts.folds, run=run, resume=resume,
                          progress=opts.progress, device=opts.device)
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {"model": record.model, "fold": record.fold, "best_epoch": record.best_epoch,
                   "val_dice": record.val_dice, "epochs": record.epochs}
        typer.echo(f"wrote {run.record}: {json.dumps(summary)}")


if __name__ == "__main__":
    app()
