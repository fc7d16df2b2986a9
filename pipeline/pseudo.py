"""Pseudo-label stage: ``python -m pipeline.pseudo``.

Predicts unlabelled photos with the fold ensemble and flip TTA and keeps those the ensemble is
confident about (``pseudo.*``: :mod:`pipeline.pseudo_labels.rule`), as a Kaggle-layout folder
``--out`` (:mod:`pipeline.data.pseudo`) that ``train.pseudo_root`` adds to every fold's
training rows. The photos: every ``*.jpg`` of ``--images`` (default ``<data.root>/test``), or,
to measure the gain transductively, fold K's held-out photos (``--folds CSV --fold K``, from
``<data.root>/train``) predicted by fold K's model alone, which never saw them. Resumable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli import ConfigOption, DeviceOption, ModelOption, OverridesArgument
from pipeline.config import cli_config
from pipeline.data.pseudo import PSEUDO_REPORT
from pipeline.data.splits import load_folds, split
from pipeline.device import pick_device
from pipeline.errors import PipelineError, one_line_errors
from pipeline.pseudo_labels.make import make_pseudo_labels, unlabelled_images
from pipeline.runs import ModelPaths, Roots, ensemble_checkpoints

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


def _checkpoints(given: list[Path] | None, model: ModelPaths, fold: int | None) -> list[Path]:
    """--checkpoint, else fold K's model alone (--fold), else every fold's."""
    if given or fold is None:
        return ensemble_checkpoints(given, model)
    found = model.fold_checkpoints().get(fold)
    if found is None:
        where = model.roots.checkpoints / model.label / f"fold{fold}" / "best.pt"
        raise PipelineError(f"{where}: no checkpoint for fold {fold}; train that fold or pass "
                            "--checkpoint")
    return [found]


@app.command()
@one_line_errors
def main(
    out: Annotated[Path, typer.Option(help="Pseudo-label folder to write (Kaggle layout).")]
    = Path("data/pseudo"),
    images: Annotated[Path | None, typer.Option(
        help="Folder of unlabelled .jpg photos (default: <data.root>/test; with --folds: "
             "<data.root>/train).")] = None,
    folds: Annotated[Path | None, typer.Option(
        help="Folds CSV: pseudo-label fold --fold's held-out photos (transductive check).")]
    = None,
    fold: Annotated[int | None, typer.Option(help="The fold of --folds.")] = None,
    checkpoints: Annotated[Path, typer.Option(help="Folder holding <label>/fold<K>/best.pt.")]
    = Roots.checkpoints,
    checkpoint: Annotated[list[Path] | None, typer.Option(
        help="A checkpoint of the ensemble (repeatable); default: every fold's model, or "
             "fold --fold's alone.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N photos (smoke runs).")]
    = None,
    device: DeviceOption = None,
    config: ConfigOption = None,
    model: ModelOption = None,
    overrides: OverridesArgument = None,
) -> None:
    """Predict unlabelled photos and write the confident ones as a pseudo-label folder."""
    cfg = cli_config(config, model, overrides)
    if (folds is None) != (fold is None):
        raise PipelineError("--folds and --fold go together (fold K's held-out photos)")
    names = None if folds is None else split(load_folds(folds), fold)[1]
    folder = images or Path(cfg.data.root) / ("test" if folds is None else "train")
    photos = unlabelled_images(folder, names)[:limit]
    ckpts = _checkpoints(checkpoint, Roots(checkpoints=checkpoints).model(cfg.model.label), fold)
    result = make_pseudo_labels(cfg, ckpts, photos, out, device=pick_device(device))
    state = "up to date" if not result.predicted else f"{result.predicted} predicted" + (
        f", {result.resumed} resumed" if result.resumed else "")
    typer.echo(f"wrote {out}: kept {result.kept} of {result.seen} photos "
               f"(pseudo.max_uncertain={cfg.pseudo.max_uncertain}, {len(ckpts)} model(s)); "
               f"{state}; report {out / PSEUDO_REPORT}")


if __name__ == "__main__":
    app()
