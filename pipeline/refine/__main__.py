"""Edge-refiner stage: ``python -m pipeline.refine --fold K``.

Trains the full-resolution edge refiner (:mod:`pipeline.refine.fit`) of one trained run
on fold K's training images of ``--folds`` (never its validation images), with the coarse input
of a model at that run's training size (``train.height`` x ``train.width`` stored in its
best.pt), and writes, under the roots given (:mod:`pipeline.runs`):

    checkpoints/<model>/fold<K>/refiner.pt   the refiner; ``predict.refiner=true`` applies it

Not a DVC stage: with ``refine.train: true`` the train stage trains the refiner itself
(:mod:`pipeline.train.recipe`); otherwise run this after ``python -m pipeline.train`` for
each fold whose model should be refined, with the same -c/-m files and ``data.root``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli import StageOptions, stage
from pipeline.device import pick_device
from pipeline.refine.fit import train_refiner

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@stage(app, "config", "model", "data_root", "folds", "checkpoints", "device", "progress",
       "overrides")
def main(
    opts: StageOptions,
    fold: Annotated[int, typer.Option(help="The fold whose model is refined; -1: the model "
                                           "trained on every image.")] = 0,
) -> None:
    """Train the edge refiner of one fold's model and save it beside its best.pt."""
    cfg = opts.cfg()
    run = opts.roots.run(cfg.model.label, fold)
    dev = pick_device(opts.device)
    rc = cfg.refine
    typer.echo(f"refiner for {run.best}: {rc.steps} steps of {rc.images_per_batch} images x "
               f"{rc.patches_per_image} windows of {rc.patch} px on {dev}")
    result = train_refiner(cfg, fold, opts.folds, run, dev, opts.progress)
    loss = result.history[-1]["loss"] if result.history else float("nan")
    typer.echo(f"wrote {result.path}: {rc.steps} steps on {result.images} training images of "
               f"fold {fold} (coarse {result.coarse[0]}x{result.coarse[1]}), final loss "
               f"{loss:.4f}, wall {result.seconds:.0f} s")


if __name__ == "__main__":
    app()
