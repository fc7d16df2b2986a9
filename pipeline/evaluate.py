"""Evaluation stage: ``python -m pipeline.evaluate``.

Out-of-fold (default): every fold K with a checkpoint ``<checkpoints>/<label>/fold<K>/best.pt``
scores the fold's validation images at their full size with flip TTA
(:mod:`pipeline.evaluation`). ``--all-images``: the given checkpoints (``--checkpoint``,
repeatable: one ensemble) or every fold's model, on every labelled image of a Kaggle-layout
folder, e.g. held-out cars.

Outputs: the report in ``<out-dir>/<label>/`` (``<out-dir>/<label>/<folder name>/`` for
``--all-images``): ``oof_dice.csv`` (``dice.csv``, one row per image), ``dice_hist.png``,
``dice_by_angle.png``, ``worst_NN_<img>.png``; and the summary
(:class:`pipeline.records.CVSummary`) at ``--metrics-out`` (default ``metrics/<label>/cv.json``;
``metrics/<label>/eval_<folder>.json`` for ``--all-images``).
``torchrun --nproc_per_node N -m pipeline.evaluate`` splits each fold's images over ranks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from pipeline import distributed
from pipeline.cli import ConfigOption, DeviceOption, ModelOption, OverridesArgument
from pipeline.config import cli_config
from pipeline.errors import one_line_errors
from pipeline.evaluation.oof import evaluate_all_images, evaluate_oof
from pipeline.evaluation.report import write_report
from pipeline.models.checkpoint import checkpoint_label
from pipeline.records import write_record
from pipeline.runs import Roots, ensemble_checkpoints

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@app.command()
@one_line_errors
def main(
    checkpoints: Annotated[Path, typer.Option(help="Folder holding <label>/fold<K>/best.pt.")]
    = Roots.checkpoints,
    checkpoint: Annotated[list[Path] | None, typer.Option(
        help="Checkpoint(s) to score (repeatable). Out-of-fold: each in a fold<K> folder; "
             "--all-images: one ensemble.")] = None,
    folds: Annotated[Path, typer.Option(help="Folds CSV.")] = Path("folds/folds.csv"),
    data_root: Annotated[Path | None, typer.Option(
        help="Kaggle-layout folder with train/ and train_masks/ (default: data.root).")] = None,
    all_images: Annotated[bool, typer.Option(
        "--all-images", help="Score every labelled image of --data-root (no folds).")] = False,
    out_dir: Annotated[Path, typer.Option(help="Report folder root.")] = Roots.reports,
    metrics_out: Annotated[Path | None, typer.Option(
        help="Summary JSON for DVC (default: metrics/<label>/cv.json; with --all-images "
             "metrics/<label>/eval_<folder>.json).")] = None,
    worst: Annotated[int, typer.Option(help="Worst images drawn as overlays.")] = 6,
    device: DeviceOption = None,
    config: ConfigOption = None,
    model: ModelOption = None,
    overrides: OverridesArgument = None,
) -> None:
    """Score fold models out of fold (or an ensemble on a labelled folder); write the report."""
    cfg = cli_config(config, model, overrides)
    root = data_root or Path(cfg.data.root)
    # Reports are filed under the model's label: the one stored in a given checkpoint unless
    # --model names it.
    if checkpoint and not model:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(
            cfg.model, name=checkpoint_label(checkpoint[0])))
    paths = Roots(checkpoints=checkpoints, reports=out_dir).model(cfg.model.label)
    dist = distributed.setup(device)
    try:
        if all_images:
            ckpts = ensemble_checkpoints(checkpoint, paths)
            report_dir = paths.report_dir / Path(root).resolve().name
            metrics_path = metrics_out or paths.cv_summary.with_name(
                f"eval_{report_dir.name}.json")
            result = evaluate_all_images(cfg, root, ckpts, worst_k=worst, dist=dist)
        else:
            report_dir = paths.report_dir
            metrics_path = metrics_out or paths.cv_summary
            result = evaluate_oof(cfg, root, folds, report_dir, model=paths,
                                  checkpoints=checkpoint, worst_k=worst, dist=dist)
        if dist.is_main:
            write_report(result, report_dir, "all" if all_images else "oof")
            write_record(metrics_path, result.summary)
    finally:
        distributed.cleanup(dist)
    if dist.is_main:
        s = result.summary
        per_fold = ", ".join(f"{k}: {v.dice:.4f}" for k, v in s.folds.items())
        typer.echo(f"{s.images} images: Dice {s.dice:.4f} +- {s.dice_std:.4f} "
                   f"(min {s.dice_min:.4f}; folds {per_fold})")
        typer.echo(f"wrote {report_dir}/ and {metrics_path}")


if __name__ == "__main__":
    app()
